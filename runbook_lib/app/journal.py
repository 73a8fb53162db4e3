"""The dual-write journal: every write the second store missed under ``VECTOR_DB=dual``, kept until it is replayed.

An append-only JSON-lines file (``VECTOR_DB_JOURNAL``, default ``<RUNBOOK_OUTPUTS>/dual_write_journal.jsonl``).
Each missed write is one line, written and fsync'd before the app's call returns::

    {"seq": 3, "time": "2025-06-11T09:30:12.123456Z", "collection": "docs", "operation": "upsert",
     "ids": ["doc-1", "doc-2"], "where": null, "missed": "qdrant", "primary": "chroma", "error": "..."}

``seq`` increases by one per entry and is never reused; ``operation`` is ``add``, ``upsert``, ``update`` or
``delete``; ``ids`` are the Chroma ids the write touched (for a delete by ``where``, the ids that matched in the
primary store, with the ``where`` kept too); ``missed`` names the store that does not have the write and
``primary`` the one that does. Replaying an entry means: copy those ids' current state from ``primary`` to
``missed`` (a record the primary no longer has is deleted from the other store).

:meth:`Journal.mark_replayed` compacts the file atomically (a temporary file, fsync'd, renamed over the journal):
the entries up to a sequence number go, and a first line ``{"replayed_upto": N}`` keeps the numbering going.
Appends and compactions take a lock on ``<journal>.lock`` (filelock), so several
processes of one app may share a journal. A line cut short by a crash while it was written (its call never
returned) is ignored.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook_lib.errors import RunbookError

JOURNAL_FILE_NAME = "dual_write_journal.jsonl"
OPERATIONS = ("add", "upsert", "update", "delete")
_CHECKPOINT_KEY = "replayed_upto"


@dataclass(frozen=True)
class JournalEntry:
    """One write that the store ``missed`` did not get; ``primary`` has it."""

    seq: int
    time: str  # ISO 8601, UTC
    collection: str
    operation: str  # add | upsert | update | delete
    ids: list[str]
    where: dict[str, Any] | None
    missed: str  # "qdrant" | "chroma"
    primary: str  # "chroma" | "qdrant"
    error: str  # why the write failed, one sentence

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JournalEntry:
        return cls(
            seq=int(data["seq"]),
            time=str(data["time"]),
            collection=str(data["collection"]),
            operation=str(data["operation"]),
            ids=[str(i) for i in data["ids"]],
            where=dict(data["where"]) if data.get("where") else None,
            missed=str(data["missed"]),
            primary=str(data["primary"]),
            error=str(data.get("error", "")),
        )


class JournalError(RunbookError):
    """The journal cannot be read or written."""


class Journal:
    """The journal file at ``path`` (created on the first missed write). Thread- and process-safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._thread_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    # --- reading -------------------------------------------------------------------------------
    def pending(self) -> list[JournalEntry]:
        """The entries not yet replayed, oldest first."""
        with self._locked():
            _, entries, _ = self._read()
        return entries

    def backlog(self) -> int:
        """How many entries wait to be replayed."""
        return len(self.pending())

    # --- writing -------------------------------------------------------------------------------
    def append(
        self,
        *,
        collection: str,
        operation: str,
        ids: Sequence[str],
        where: Mapping[str, Any] | None,
        missed: str,
        primary: str,
        error: str,
    ) -> JournalEntry:
        """Add one entry and fsync it; return it (with its sequence number) only once it is on disk."""
        if operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {operation!r}")
        with self._locked():
            upto, entries, valid_size = self._read()
            seq = max([upto, *(e.seq for e in entries)]) + 1
            entry = JournalEntry(
                seq=seq,
                time=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                collection=collection,
                operation=operation,
                ids=list(ids),
                where=dict(where) if where else None,
                missed=missed,
                primary=primary,
                error=error,
            )
            created = not self.path.exists()
            try:
                with open(self.path, "ab") as f:
                    if f.tell() > valid_size:
                        f.truncate(valid_size)  # a line cut short by a crash: its call never returned
                    f.write(entry.to_json().encode("utf-8") + b"\n")
                    f.flush()
                    os.fsync(f.fileno())
                if created:
                    _fsync_dir(self.path.parent)
            except OSError as exc:
                raise JournalError(f"Cannot write the dual-write journal {self.path}: {exc}") from exc
        return entry

    def mark_replayed(self, upto_seq: int) -> int:
        """Drop the entries with ``seq <= upto_seq`` (an atomic rewrite); return how many were dropped."""
        if isinstance(upto_seq, bool) or not isinstance(upto_seq, int) or upto_seq < 0:
            raise ValueError(f"upto_seq must be a non-negative integer, got {upto_seq!r}")
        with self._locked():
            upto, entries, _ = self._read()
            if not self.path.exists():
                return 0
            keep = [e for e in entries if e.seq > upto_seq]
            last = max([upto, *(e.seq for e in entries)])
            lines = [json.dumps({_CHECKPOINT_KEY: min(max(upto, upto_seq), last)})] + [e.to_json() for e in keep]
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(("\n".join(lines) + "\n").encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
                _fsync_dir(self.path.parent)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise JournalError(f"Cannot rewrite the dual-write journal {self.path}: {exc}") from exc
            return len(entries) - len(keep)

    # --- helpers -------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        from filelock import FileLock, Timeout

        with self._thread_lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                lock = FileLock(self.lock_path, timeout=60)
                lock.acquire()
            except (OSError, Timeout) as exc:
                raise JournalError(f"Cannot lock the dual-write journal {self.path}: {exc}") from exc
            try:
                yield
            finally:
                lock.release()

    def _read(self) -> tuple[int, list[JournalEntry], int]:
        """(replayed up to, the entries after it, bytes up to the last complete line); no file: an empty journal.

        An unterminated last line was cut short by a crash while it was written (its call never returned):
        it is ignored, and the next append cuts it off.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0, [], 0
        except OSError as exc:
            raise JournalError(f"Cannot read the dual-write journal {self.path}: {exc}") from exc
        valid_size = data.rfind(b"\n") + 1
        upto = 0
        entries: list[JournalEntry] = []
        for number, raw in enumerate(data[:valid_size].split(b"\n")[:-1], start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                if _CHECKPOINT_KEY in record:
                    upto = max(upto, int(record[_CHECKPOINT_KEY]))
                else:
                    entries.append(JournalEntry.from_dict(record))
            except (ValueError, KeyError, TypeError) as exc:
                raise JournalError(
                    f"Line {number} of the dual-write journal {self.path} is not a journal entry ({exc}): fix or "
                    "remove that line; no entry is dropped silently."
                ) from exc
        return upto, sorted((e for e in entries if e.seq > upto), key=lambda e: e.seq), valid_size


def _fsync_dir(directory: Path) -> None:
    """Make a created or renamed file's directory entry durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
