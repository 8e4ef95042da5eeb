"""Model names: the one rule that turns what a user typed into one of MODELS."""

from __future__ import annotations

from facenet.config import BACKBONE_ALIASES, MODELS


def model_name(name: str) -> str:
    """The canonical model name (old `--backbone` names accepted); ValueError for an unknown one."""
    name = BACKBONE_ALIASES.get(name, name)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return name
