"""TEMPORARY stub (replaced by the unknown-groups branch)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Assignment:
    group: str
    new: bool
    merged: tuple[str, ...] = ()


def assign(vector: np.ndarray, vectors: np.ndarray, groups: Sequence[str], threshold: float,
           new_id: Callable[[], str]) -> Assignment:
    if len(groups) == 0:
        return Assignment(new_id(), True)
    ids = sorted(set(groups))
    g = np.asarray(groups)
    cents = np.stack([vectors[g == i].mean(0) for i in ids])
    cents /= np.linalg.norm(cents, axis=1, keepdims=True)
    d = np.linalg.norm(cents - vector, axis=1)
    near = [ids[i] for i in np.argsort(d) if d[i] <= threshold * 0.9]
    if not near:
        return Assignment(new_id(), True)
    return Assignment(near[0], False, tuple(near[1:]))
