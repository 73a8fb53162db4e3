"""A read-only look at a persistent directory's catalog, without copying it and without chromadb.

chromadb rewrites a collection's HNSW files when it loads them, so the runbook only ever opens copies; but the
checks a migration makes before its backup (collection names, id collisions, what exists in Qdrant) need just
names and ids, which SQLite holds. This reads them through SQLite's read-only mode (``mode=ro``: the file is
never written, and no journal is created), so those checks cost no copy of the data. When the database's layout
is not the one this reader knows (a chromadb release that changed it), :class:`CatalogUnavailable` is raised and
the caller falls back to a scratch copy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from runbook_lib.source.chroma_files import SQLITE_NAME

_METADATA_SEGMENT = "urn:chroma:segment/metadata/sqlite"


class CatalogUnavailable(Exception):
    """The directory's SQLite layout is not one this reader knows."""


class Catalog:
    """Collection names, ids and dimensions of one tenant/database of a persistent directory (read-only)."""

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
        """Nothing is held in memory between collections (the ``ChromaSource`` interface)."""

    def ids_of(self, names: Sequence[str]) -> dict[str, list[str]]:
        return {n: self.snapshot_ids(n) for n in names}
