"""The PostgreSQL gallery's store of unknown faces: two tables beside the gallery's, so that every site that shares
the gallery shares its strangers (a stranger seen at two sites is one group). Every change runs in one transaction
under an advisory lock, so two sites collecting at once group against each other's faces."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from facenet.gallery.pg.schema import register_vector, vector_text
from facenet.gallery.pg.urls import GalleryError, reason
from facenet.unknowns.sighting import Quality, Sighting
from facenet.unknowns.store import FaceInfo, Retention, UnknownStore

LOCK_UNKNOWNS = 0x756E6B6E  # advisory lock key of the unknown faces ("unkn")

SCHEMA = """
CREATE TABLE IF NOT EXISTS facenet_unknown_faces (
    face_id text PRIMARY KEY, group_id text NOT NULL, seen double precision NOT NULL, source text NOT NULL,
    quality jsonb NOT NULL, model_id text NOT NULL, vector vector NOT NULL, chip bytea NOT NULL, not_of text);
CREATE INDEX IF NOT EXISTS facenet_unknown_faces_group ON facenet_unknown_faces (group_id);
CREATE TABLE IF NOT EXISTS facenet_unknown_groups (group_id text PRIMARY KEY, ignored boolean NOT NULL)
"""


class PgUnknowns(UnknownStore):
    """The unknown faces kept in a PostgreSQL gallery's database (on the gallery's connection)."""

    def __init__(self, conn: Any, where: str, url: str, retention: Retention | None = None) -> None:
        self.conn, self.where, self.url = conn, where, url
        self.retention = retention or Retention()
        self._lock = threading.RLock()
        self._depth = 0
        self._ready = False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import psycopg

        with self._lock:
            self._depth += 1
            try:
                self._ensure()
                with self.conn.transaction():
                    if self._depth == 1:
                        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_UNKNOWNS,))
                    yield
            except (psycopg.OperationalError, psycopg.errors.UndefinedTable) as error:
                raise GalleryError(f"{self.where}: {reason(error, self.url)}") from None
            finally:
                self._depth -= 1

    def negatives(self, model_id: str) -> dict[str, np.ndarray]:
        """As UnknownStore.negatives; nothing (and no table made) when the gallery has no unknown faces yet."""
        if not self._ready and not self._exists():
            return {}
        return super().negatives(model_id)

    def _ensure(self) -> None:
        """The tables, made on first use (a client that only reads them, e.g. a read-only role, creates nothing)."""
        if self._ready:
            return
        if not self._exists():
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_UNKNOWNS,))
                for statement in SCHEMA.split(";"):
                    self.conn.execute(statement)
        register_vector(self.conn)
        self._ready = True

    def _exists(self) -> bool:
        return bool(self.conn.execute("SELECT to_regclass('facenet_unknown_faces') IS NOT NULL AND "
                                      "to_regclass('facenet_unknown_groups') IS NOT NULL").fetchone()[0])

    def _vectors(self, model_id: str) -> tuple[list[str], np.ndarray, list[str]]:
        rows = self.conn.execute("SELECT face_id, group_id, vector FROM facenet_unknown_faces WHERE model_id = %s "
                                 "ORDER BY seen, face_id", (model_id,)).fetchall()
        if not rows:
            return [], np.zeros((0, 0), np.float32), []
        return [r[0] for r in rows], np.stack([np.asarray(r[2], np.float32) for r in rows]), [r[1] for r in rows]

    def _marked(self, model_id: str) -> list[tuple[str, np.ndarray]]:
        return self.conn.execute("SELECT not_of, vector FROM facenet_unknown_faces WHERE model_id = %s AND not_of IS "
                                 "NOT NULL", (model_id,)).fetchall()

    def _put(self, sighting: Sighting, model_id: str, group: str, new: bool, merged: tuple[str, ...]) -> None:
        for other in merged:
            self._regroup(other, group)
        self.conn.execute(
            "INSERT INTO facenet_unknown_faces (face_id, group_id, seen, source, quality, model_id, vector, chip, "
            "not_of) VALUES (%s, %s, %s, %s, %s, %s, %s::vector, %s, %s)",
            (sighting.face_id, group, sighting.time, sighting.source, json.dumps(sighting.quality.record()),
             model_id, vector_text(sighting.vector), sighting.chip, sighting.not_of))

    def _faces(self) -> list[FaceInfo]:
        rows = self.conn.execute("SELECT face_id, seen, source, quality, group_id, not_of FROM "
                                 "facenet_unknown_faces").fetchall()
        return [FaceInfo(r[0], float(r[1]), r[2], Quality.from_record(_json(r[3])), r[4], r[5]) for r in rows]

    def _flags(self) -> dict[str, bool]:
        return dict(self.conn.execute("SELECT group_id, ignored FROM facenet_unknown_groups").fetchall())

    def _chip(self, face_id: str) -> bytes | None:
        row = self.conn.execute("SELECT chip FROM facenet_unknown_faces WHERE face_id = %s", (face_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def _set_ignored(self, group_id: str, ignored: bool) -> None:
        self.conn.execute("INSERT INTO facenet_unknown_groups (group_id, ignored) VALUES (%s, %s) "
                          "ON CONFLICT (group_id) DO UPDATE SET ignored = EXCLUDED.ignored", (group_id, ignored))

    def _regroup(self, old: str, new: str) -> None:
        self.conn.execute("UPDATE facenet_unknown_faces SET group_id = %s WHERE group_id = %s", (new, old))
        row = self.conn.execute("DELETE FROM facenet_unknown_groups WHERE group_id = %s RETURNING ignored",
                                (old,)).fetchone()
        if row and row[0]:
            self._set_ignored(new, True)

    def _delete(self, face_ids: list[str]) -> None:
        self.conn.execute("DELETE FROM facenet_unknown_faces WHERE face_id = ANY(%s)", (face_ids,))
        self.conn.execute("DELETE FROM facenet_unknown_groups g WHERE NOT EXISTS (SELECT 1 FROM "
                          "facenet_unknown_faces f WHERE f.group_id = g.group_id)")


def _json(value: Any) -> dict:
    return value if isinstance(value, dict) else json.loads(value)
