"""The run's ledger ``outputs/<run_id>/state/ledger.sqlite``: for every record the run last wrote or synchronised,
its fingerprint (:mod:`runbook_lib.core.fingerprint`), so a sync can tell what changed on each side since then
without trusting counts or keeping a copy of the data.

SQLite (the standard library's) keeps it compact, queried by id chunk (memory follows the batch size), and each
batch's rows are committed in one transaction after the batch is written, so a killed run's ledger never claims
a write that did not happen.

For a persistent source, a record's row also keeps ChromaDB's write sequence number (``seq``) of the state its
``source`` digest describes, and each collection a *marker*: the metadata segment and the last sequence number the
ledger has seen. A record whose number has not moved since then was not written, so a sync need not read it
(:mod:`runbook_lib.steps.sync.diff`). A row written from anything else (a sync's write, a reverse sync) has no
number and is read again by the next sync, which stamps it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
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
            "source BLOB NOT NULL, payload BLOB NOT NULL, sketch BLOB NOT NULL, seq INTEGER, "
            "PRIMARY KEY (collection, chroma_id))"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
        if "seq" not in columns:  # a ledger written before write sequences were kept: every record is read once
            self._db.execute("ALTER TABLE records ADD COLUMN seq INTEGER")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS markers (collection TEXT PRIMARY KEY, segment TEXT NOT NULL, "
            "seq INTEGER NOT NULL)"
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
            self._db.executemany(
                "INSERT OR REPLACE INTO records (collection, chroma_id, source, payload, sketch, seq) "
                "VALUES (?, ?, ?, ?, ?, NULL)",
                data,
            )
            self._db.execute("COMMIT")

    def stamp(self, collection: str, rows: Iterable[tuple[str, bytes, int]]) -> None:
        """Record ChromaDB's write sequence number for records read from the source: ``(id, source digest read,
        seq)``. The number is kept only where the ledger's digest is the one read (the ledger describes that very
        state); elsewhere it is cleared, so the record is read again next time."""
        data = [(digest, seq, collection, cid) for cid, digest, seq in rows]
        if not data:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE records SET seq = CASE WHEN source = ? THEN ? ELSE NULL END "
                "WHERE collection = ? AND chroma_id = ?",
                data,
            )
            self._db.execute("COMMIT")

    def stamp_all(self, collection: str, sequences: dict[str, int]) -> None:
        """Record the write sequence numbers of every record just copied from the state ``sequences`` describes
        (the migration's backup: its digests were taken from exactly that state)."""
        data = [(seq, collection, cid) for cid, seq in sequences.items()]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE records SET seq = ? WHERE collection = ? AND chroma_id = ?", data)
            self._db.execute("COMMIT")

    def set_marker(self, collection: str, segment: str, seq: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO markers (collection, segment, seq) VALUES (?, ?, ?)", (collection, segment, seq)
            )

    def forget_sequences(self, collection: str | None = None) -> None:
        """Trust no write sequence number any more (the directory was replaced by another): the next sync reads
        every record once."""
        with self._lock:
            if collection is None:
                self._db.execute("DELETE FROM markers")
                self._db.execute("UPDATE records SET seq = NULL")
            else:
                self._db.execute("DELETE FROM markers WHERE collection = ?", (collection,))
                self._db.execute("UPDATE records SET seq = NULL WHERE collection = ?", (collection,))

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
            self._db.execute("DELETE FROM markers WHERE collection = ?", (collection,))

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

    def marker(self, collection: str) -> tuple[str, int] | None:
        with self._lock:
            row = self._db.execute("SELECT segment, seq FROM markers WHERE collection = ?", (collection,)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def sequences(self, collection: str) -> dict[str, int | None]:
        """Every recorded id of the collection with its write sequence number (``None``: read it again)."""
        with self._lock:
            rows = self._db.execute("SELECT chroma_id, seq FROM records WHERE collection = ?", (collection,)).fetchall()
        return dict(rows)

    def count(self, collection: str) -> int:
        with self._lock:
            return int(
                self._db.execute("SELECT COUNT(*) FROM records WHERE collection = ?", (collection,)).fetchone()[0]
            )
