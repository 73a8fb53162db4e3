"""The run's ledger ``outputs/<run_id>/state/ledger.sqlite``: for every record the run last wrote or synchronised,
its fingerprint (:mod:`runbook_lib.core.fingerprint`), so a sync can tell what changed on each side since then
without trusting counts or keeping a copy of the data.

SQLite (the standard library's) keeps it compact, queried by id chunk (memory follows the batch size), and each
batch's rows are committed in one transaction after the batch is written, so a killed run's ledger never claims
a write that did not happen.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from runbook_lib.core.fingerprint import Fingerprint

LEDGER = "ledger.sqlite"
_CHUNK = 500


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records (collection TEXT NOT NULL, chroma_id TEXT NOT NULL, "
            "source BLOB NOT NULL, payload BLOB NOT NULL, sketch BLOB NOT NULL, PRIMARY KEY (collection, chroma_id))"
        )

    @classmethod
    def for_run(cls, state_dir: Path) -> Ledger:
        return cls(state_dir / LEDGER)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing --------------------------------------------------------------------------------
    def put(self, collection: str, rows: Iterable[tuple[str, Fingerprint]]) -> None:
        data = [(collection, cid, fp.source, fp.payload, fp.sketch) for cid, fp in rows]
        if not data:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)", data)
            self._db.execute("COMMIT")

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "DELETE FROM records WHERE collection = ? AND chroma_id = ?", [(collection, i) for i in ids]
            )
            self._db.execute("COMMIT")

    def drop_collection(self, collection: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM records WHERE collection = ?", (collection,))

    # --- reading --------------------------------------------------------------------------------
    def get(self, collection: str, ids: Sequence[str]) -> dict[str, Fingerprint]:
        out: dict[str, Fingerprint] = {}
        with self._lock:
            for start in range(0, len(ids), _CHUNK):
                chunk = list(ids[start : start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT chroma_id, source, payload, sketch FROM records WHERE collection = ? "
                    f"AND chroma_id IN ({marks})",
                    [collection, *chunk],
                ).fetchall()
                out.update({cid: Fingerprint(bytes(s), bytes(p), bytes(k)) for cid, s, p, k in rows})
        return out

    def ids(self, collection: str) -> Iterator[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT chroma_id FROM records WHERE collection = ? ORDER BY chroma_id", (collection,)
            ).fetchall()
        for (cid,) in rows:
            yield cid

    def count(self, collection: str) -> int:
        with self._lock:
            return int(
                self._db.execute("SELECT COUNT(*) FROM records WHERE collection = ?", (collection,)).fetchone()[0]
            )
