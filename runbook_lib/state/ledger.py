"""The run's ledger ``outputs/<run_id>/state/ledger.sqlite``: for every record the run last wrote or synchronised,
its fingerprint (:mod:`runbook_lib.core.fingerprint`), so a sync can tell what changed on each side since then
without trusting counts or keeping a copy of the data.

SQLite (the standard library's) keeps it compact, queried by id chunk (memory follows the batch size), and each
batch's rows are committed in one transaction after the batch is written, so a killed run's ledger never claims
a write that did not happen.

For a persistent source, a record's row also keeps ChromaDB's write sequence number (``seq``) of the state its
``source`` digest describes, and each collection a *marker* (:class:`Marker`): the metadata segment, the last
sequence number the ledger has seen, which SQLite file it was seen in (device and inode of the live
``chroma.sqlite3``) and the digest of the record numbered so. A record whose number has not moved since then was
not written, so a sync need not read it (:mod:`runbook_lib.steps.sync.diff`). A row written from anything else (a
sync's write, a reverse sync) has no number and is read again by the next sync, which stamps it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from runbook_lib.core.fingerprint import Fingerprint
from runbook_lib.errors import ConfigError

LEDGER = "ledger.sqlite"
_CHUNK = 500


class Marker(NamedTuple):
    """Where a collection's write sequence stood when the ledger last saw it."""

    segment: str
    seq: int
    file_id: str | None = None  # "device:inode" of the live chroma.sqlite3 (None: not known)
    row: str | None = None  # Catalog.row_digest of the record numbered ``seq`` (None: none had that number)


def file_id(persist_dir: Path) -> str | None:
    """``device:inode`` of a persistent directory's ``chroma.sqlite3``: a directory swapped for a copy has another."""
    try:
        st = os.stat(persist_dir / "chroma.sqlite3")
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


class Ledger:
    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not create and not path.is_file():
            raise ConfigError(
                f"The run's ledger {path} is missing: the run folder is damaged (the ledger holds what the run last "
                "synchronised); restore the folder from a copy, or migrate again in a new run."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigError(
                f"The run's ledger {path} cannot be read ({exc}): the run folder is damaged; restore the folder from "
                "a copy, or migrate again in a new run."
            ) from None

    def _open(self) -> None:
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
            "seq INTEGER NOT NULL, file_id TEXT, row TEXT)"
        )
        marker_columns = {row[1] for row in self._db.execute("PRAGMA table_info(markers)")}
        for column in ("file_id", "row"):  # a ledger written before these were kept: unknown, so not compared
            if column not in marker_columns:
                self._db.execute(f"ALTER TABLE markers ADD COLUMN {column} TEXT")
        self._db.execute(  # what a forward sync is writing to Qdrant, recorded before it writes (see put_pending)
            "CREATE TABLE IF NOT EXISTS pending (collection TEXT NOT NULL, chroma_id TEXT NOT NULL, source BLOB, "
            "payload BLOB, sketch BLOB, PRIMARY KEY (collection, chroma_id))"
        )
        problems = [str(r[0]) for r in self._db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:  # a truncated or damaged file is refused here, not by a later query
            raise sqlite3.DatabaseError("; ".join(problems[:3]))

    @classmethod
    def for_run(cls, state_dir: Path, *, create: bool = True) -> Ledger:
        """The run's ledger; ``create=False`` (a migrated run): a missing ledger is refused, never re-created."""
        return cls(state_dir / LEDGER, create=create)

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

    def put_pending(self, collection: str, rows: Iterable[tuple[str, Fingerprint | None]]) -> None:
        """Record what a forward sync is about to write to Qdrant (a fingerprint; None: a delete), before it
        writes: a sync killed before the ledger says it is written then recognises its own writes
        (:meth:`pending`) instead of reading them as changes made in Qdrant."""
        data = [
            (collection, cid, *((fp.source, fp.payload, fp.sketch) if fp else (None, None, None))) for cid, fp in rows
        ]
        if not data:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO pending (collection, chroma_id, source, payload, sketch) "
                "VALUES (?, ?, ?, ?, ?)",
                data,
            )
            self._db.execute("COMMIT")

    def clear_pending(self, collection: str, ids: Sequence[str] | None = None) -> None:
        with self._lock:
            if ids is None:
                self._db.execute("DELETE FROM pending WHERE collection = ?", (collection,))
                return
            self._db.execute("BEGIN")
            self._db.executemany(
                "DELETE FROM pending WHERE collection = ? AND chroma_id = ?", [(collection, i) for i in ids]
            )
            self._db.execute("COMMIT")

    def pending(self, collection: str) -> dict[str, Fingerprint | None]:
        """The writes a forward sync recorded with :meth:`put_pending` and did not see through (killed)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT chroma_id, source, payload, sketch FROM pending WHERE collection = ?", (collection,)
            ).fetchall()
        return {
            str(cid): Fingerprint(bytes(src), bytes(pay), bytes(sk)) if src is not None else None
            for cid, src, pay, sk in rows
        }

    def refresh_sketches(self, collection: str, rows: Iterable[tuple[str, bytes]]) -> None:
        """Replace recorded sketches by equivalent ones (the same vector, as Qdrant now holds its bytes), so the
        next sync compares digests, not full vectors; write sequence numbers are kept."""
        data = [(sketch, collection, cid) for cid, sketch in rows]
        if not data:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE records SET sketch = ? WHERE collection = ? AND chroma_id = ?", data)
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

    def set_marker(self, collection: str, marker: Marker) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO markers (collection, segment, seq, file_id, row) VALUES (?, ?, ?, ?, ?)",
                (collection, *marker),
            )

    def set_file_id(self, file_id: str | None) -> None:
        """Every marker now describes the SQLite file ``file_id`` (a directory replaced by its own staged copy,
        which continues its timeline)."""
        with self._lock:
            self._db.execute("UPDATE markers SET file_id = ?", (file_id,))

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

    def marker(self, collection: str) -> Marker | None:
        with self._lock:
            row = self._db.execute(
                "SELECT segment, seq, file_id, row FROM markers WHERE collection = ?", (collection,)
            ).fetchone()
        return None if row is None else Marker(str(row[0]), int(row[1]), row[2], row[3])

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
