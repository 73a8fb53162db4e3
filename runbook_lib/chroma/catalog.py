"""A read-only look at a persistent directory's catalog, without copying it and without chromadb.

chromadb rewrites a collection's HNSW files when it loads them, so the runbook only ever opens copies; but the
checks a migration makes before its backup (collection names, id collisions, what exists in Qdrant) need just
names and ids, which SQLite holds. This reads them through SQLite's read-only mode (``mode=ro``: the file is
never written, and no journal is created), so those checks cost no copy of the data. When the database's layout
is not the one this reader knows (a chromadb release that changed it), :class:`CatalogUnavailable` is raised and
the caller falls back to a scratch copy.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from runbook_lib.chroma.files import SQLITE_NAME

_METADATA_SEGMENT = "urn:chroma:segment/metadata/sqlite"


class CatalogUnavailable(Exception):
    """The directory's SQLite layout is not one this reader knows."""


class Catalog:
    """Collection names, ids and dimensions of one tenant/database of a persistent directory, read-only (a
    :class:`~runbook_lib.chroma.base.ChromaCatalog`)."""

    def __init__(self, persist_dir: Path, *, tenant: str | None = None, database: str | None = None) -> None:
        path = persist_dir / SQLITE_NAME
        if any(persist_dir.glob(f"{SQLITE_NAME}-wal")) or any(persist_dir.glob(f"{SQLITE_NAME}-journal")):
            # an open or crashed database: a read-only reader might have to recover it; use a copy instead
            raise CatalogUnavailable(f"{path} has a write-ahead or rollback journal")
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            rows = self._db.execute(
                "SELECT c.id, c.name, c.dimension FROM collections c JOIN databases d ON c.database_id = d.id "
                "WHERE d.name = ? AND d.tenant_id = ? ORDER BY c.name",
                (database or "default_database", tenant or "default_tenant"),
            ).fetchall()
        except sqlite3.Error as exc:
            raise CatalogUnavailable(str(exc)) from exc
        self._collections = {name: (cid, dim) for cid, name, dim in rows}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def collection_names(self) -> list[str]:
        return list(self._collections)

    def dimension(self, name: str) -> int | None:
        return self._collections[name][1]

    def collection_id(self, name: str) -> str:
        """The collection's UUID (chromadb's ``Collection.id``): a re-created collection has another."""
        return str(self._collections[name][0])

    def snapshot_ids(self, name: str) -> list[str]:
        """Every id of the collection, sorted (the order the migration counts them in)."""
        cid = self._collections[name][0]
        try:
            rows = self._db.execute(
                "SELECT e.embedding_id FROM embeddings e JOIN segments s ON e.segment_id = s.id "
                "WHERE s.collection = ? AND s.type = ?",
                (cid, _METADATA_SEGMENT),
            ).fetchall()
        except sqlite3.Error as exc:
            raise CatalogUnavailable(str(exc)) from exc
        return sorted(r[0] for r in rows)

    def release(self) -> None:
        """Nothing is held in memory between collections."""

    # --- write sequence (what lets a sync skip records nobody wrote) -----------------------------
    def _metadata_segment(self, name: str) -> str:
        cid = self._collections[name][0]
        try:
            row = self._db.execute(
                "SELECT id FROM segments WHERE collection = ? AND type = ?", (cid, _METADATA_SEGMENT)
            ).fetchone()
        except sqlite3.Error as exc:
            raise CatalogUnavailable(str(exc)) from exc
        if row is None:
            raise CatalogUnavailable(f"collection {name!r} has no metadata segment")
        return str(row[0])

    def sequence_marker(self, name: str) -> tuple[str, int]:
        """(metadata segment id, the last write sequence number it applied) of a collection.

        chromadb numbers every write to a collection (add, update, upsert, delete) from one increasing sequence and
        stamps each record's row with the number of the last write that touched it: a record whose number has not
        moved has not been written since. The segment id changes when a collection is deleted and re-created."""
        segment = self._metadata_segment(name)
        try:
            row = self._db.execute("SELECT seq_id FROM max_seq_id WHERE segment_id = ?", (segment,)).fetchone()
        except sqlite3.Error as exc:
            raise CatalogUnavailable(str(exc)) from exc
        seq = 0 if row is None else row[0]
        if not isinstance(seq, int):  # an older layout stored it as bytes: do not guess
            raise CatalogUnavailable(f"collection {name!r} stores its write sequence as {type(seq).__name__}")
        return segment, seq

    def sequences(self, name: str) -> dict[str, int]:
        """Every id of the collection with the sequence number of the last write that touched it."""
        segment = self._metadata_segment(name)
        try:
            rows = self._db.execute(
                "SELECT embedding_id, seq_id FROM embeddings WHERE segment_id = ?", (segment,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise CatalogUnavailable(str(exc)) from exc
        out = dict(rows)
        if any(not isinstance(s, int) for s in out.values()):
            raise CatalogUnavailable(f"collection {name!r} stores write sequence numbers in another form")
        return out

    def row_digest(self, name: str, seq: int) -> str | None:
        """sha256 of the record whose last write has number ``seq`` (its id, when its row was made, its document
        and metadata), or None when no record has that number now. Within one timeline the record numbered ``seq``
        can only be written again (renumbered) or deleted, never changed under that number: a record with the same
        number and another digest means the directory is another timeline (an older copy written again)."""
        segment = self._metadata_segment(name)
        try:
            row = self._db.execute(
                "SELECT id, embedding_id, created_at FROM embeddings WHERE segment_id = ? AND seq_id = ?",
                (segment, seq),
            ).fetchone()
            if row is None:
                return None
            values = self._db.execute(
                "SELECT key, string_value, int_value, float_value, bool_value FROM embedding_metadata WHERE id = ? "
                "ORDER BY key",
                (row[0],),
            ).fetchall()
        except sqlite3.Error as exc:
            raise CatalogUnavailable(str(exc)) from exc
        text = json.dumps([row[1], str(row[2]), [list(v) for v in values]], default=repr)
        return hashlib.sha256(text.encode()).hexdigest()
