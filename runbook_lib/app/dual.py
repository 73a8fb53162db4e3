"""``VECTOR_DB=dual``: every write goes to both stores; reads come from one; what the other misses is journaled.

The **primary** is the store reads come from, named by ``VECTOR_DB_READ`` (``chroma``, the default before
cutover, or ``qdrant`` after it); the other is the **secondary**. A write goes to the primary first: if it fails
the call raises and the secondary is not touched. Then the secondary: if it still fails after a retry, the write
is appended to the :class:`~runbook_lib.app.journal.Journal` (fsync'd) before the call returns, and a warning is
logged; the app carries on. A secondary write has a deadline (``VECTOR_DB_SECONDARY_TIMEOUT`` seconds, default
30): one that has not returned by then (a store that hangs, e.g. Chroma on a full disk) is journaled as missed and
the call returns; until it finishes, later secondary writes are journaled at once rather than queued behind it.
If even the journal cannot be written, the call raises (the write is in the primary
only and nothing records it: never silent). ``runbook sync`` replays the journal; :meth:`DualWriter.replay` does
the same from the app.

A delete by ``where`` first resolves the matching ids in the primary, then deletes those ids from both stores
(on the primary with the ``where`` too), so the two stores delete the same records and the journal names them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from runbook_lib.app.errors import UnknownCollectionError, short_error
from runbook_lib.app.journal import JOURNAL_FILE_NAME, Journal, JournalEntry
from runbook_lib.app.records import INCLUDABLE, Field, GetResult, Records, WriteKind
from runbook_lib.config.paths import resolve
from runbook_lib.config.settings import Settings
from runbook_lib.errors import ConfigError, DimensionMismatchError, RunbookError

log = logging.getLogger(__name__)

Store = Literal["chroma", "qdrant"]
VECTOR_DB_READ_VARIABLE = "VECTOR_DB_READ"
VECTOR_DB_JOURNAL_VARIABLE = "VECTOR_DB_JOURNAL"
DEFAULT_READ_STORE: Store = "chroma"
#: Attempts at a secondary write before it is journaled (the Qdrant side also retries transient errors itself).
SECONDARY_ATTEMPTS = 2
SECONDARY_RETRY_PAUSE_S = 0.25
SECONDARY_DEADLINE_VARIABLE = "VECTOR_DB_SECONDARY_TIMEOUT"
DEFAULT_SECONDARY_DEADLINE_S = 30.0


class SecondaryDeadline(Exception):
    """A secondary write did not return within its deadline (it may still be running)."""


def secondary_deadline_from_env(env: Mapping[str, str]) -> float:
    """``VECTOR_DB_SECONDARY_TIMEOUT``: seconds a secondary write may take before it is journaled (default 30)."""
    raw = (env.get(SECONDARY_DEADLINE_VARIABLE) or "").strip()
    if not raw:
        return DEFAULT_SECONDARY_DEADLINE_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{SECONDARY_DEADLINE_VARIABLE}={raw!r} is not a number of seconds greater than zero: set it to how long a "
            "write to the secondary store may take before it is journaled as missed (e.g. 30)."
        )
    return value


class WriteStore(Protocol):
    """What :class:`DualWriter` needs of a backend (both :class:`ChromaBackend` and :class:`QdrantBackend`)."""

    def write(self, collection: str, kind: WriteKind, recs: Records) -> None: ...

    def delete(self, collection: str, ids: list[str] | None, where: Mapping[str, Any] | None) -> None: ...

    def get(
        self,
        collection: str,
        ids: list[str] | None,
        where: Mapping[str, Any] | None,
        limit: int | None,
        offset: int,
        include: tuple[Field, ...],
    ) -> GetResult: ...


def read_store_from_env(env: Mapping[str, str]) -> Store:
    """``VECTOR_DB_READ``: ``chroma`` (default) or ``qdrant``."""
    raw = env.get(VECTOR_DB_READ_VARIABLE)
    value = (raw or "").strip().lower()
    if value == "":
        return DEFAULT_READ_STORE
    if value in ("chroma", "qdrant"):
        return value  # type: ignore[return-value]
    raise ConfigError(
        f"{VECTOR_DB_READ_VARIABLE}={raw!r} is not a store to read from: set it to chroma (before cutover) or "
        "qdrant (after cutover)."
    )


def journal_path_from_env(env: Mapping[str, str], settings: Settings) -> Path:
    """``VECTOR_DB_JOURNAL``, else ``<RUNBOOK_OUTPUTS>/dual_write_journal.jsonl`` (relative paths: project root)."""
    raw = (env.get(VECTOR_DB_JOURNAL_VARIABLE) or "").strip()
    path = resolve(raw) if raw else settings.outputs / JOURNAL_FILE_NAME
    if path.is_dir():
        raise ConfigError(
            f"{VECTOR_DB_JOURNAL_VARIABLE} points to {path}, which is a directory: point it at a file such as "
            f"{path / JOURNAL_FILE_NAME}."
        )
    return path


class DualWriter:
    """Writes to ``primary`` (raises on failure) and ``secondary`` (journals a failure)."""

    def __init__(
        self,
        primary: WriteStore,
        secondary: WriteStore,
        *,
        primary_name: Store,
        secondary_name: Store,
        journal: Journal,
        secrets: list[str] | None = None,
        attempts: int = SECONDARY_ATTEMPTS,
        pause_s: float = SECONDARY_RETRY_PAUSE_S,
        deadline_s: float = DEFAULT_SECONDARY_DEADLINE_S,
    ) -> None:
        self.primary, self.secondary = primary, secondary
        self.primary_name, self.secondary_name = primary_name, secondary_name
        self.journal = journal
        self._secrets = [s for s in (secrets or []) if s]
        self.attempts = max(1, attempts)
        self.pause_s = pause_s
        self.deadline_s = deadline_s
        self._lock = threading.Lock()
        self._overdue: threading.Thread | None = None  # a secondary write still running past its deadline

    def write(self, collection: str, kind: WriteKind, recs: Records) -> JournalEntry | None:
        """Write to both stores; the journal entry when the secondary missed it, else None."""
        self.primary.write(collection, kind, recs)
        return self._secondary(collection, kind, recs.ids, None, lambda: self.secondary.write(collection, kind, recs))

    def delete(self, collection: str, ids: list[str] | None, where: Mapping[str, Any] | None) -> JournalEntry | None:
        if where:
            matched = self.primary.get(collection, ids, where, None, 0, ()).ids
            if not matched:
                return None
            self.primary.delete(collection, matched, where)
            targets = matched
        else:
            self.primary.delete(collection, ids, None)
            targets = list(ids or [])
        return self._secondary(
            collection, "delete", targets, where, lambda: self.secondary.delete(collection, targets, None)
        )

    def _secondary(
        self, collection: str, operation: str, ids: list[str], where: Mapping[str, Any] | None, fn: Any
    ) -> JournalEntry | None:
        error: BaseException | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self._within_deadline(fn)
                return None
            except (UnknownCollectionError, DimensionMismatchError, ValueError, SecondaryDeadline) as exc:
                error = exc  # will not get better by retrying
                break
            except Exception as exc:
                error = exc
                if attempt < self.attempts:
                    time.sleep(self.pause_s * attempt)
        assert error is not None
        reason = self._scrub(short_error(error))
        try:
            entry = self.journal.append(
                collection=collection,
                operation=operation,
                ids=ids,
                where=where,
                missed=self.secondary_name,
                primary=self.primary_name,
                error=reason,
            )
        except Exception as exc:
            raise RunbookError(
                f"The {operation} of {len(ids)} record(s) in collection {collection!r} reached {self.primary_name} "
                f"but not {self.secondary_name} ({reason}), and the dual-write journal {self.journal.path} could "
                f"not record it ({short_error(exc)}): run `runbook sync` before relying on {self.secondary_name}."
            ) from exc
        log.warning(
            "dual write: %s missed %s of %d record(s) in %r (%s); journaled as entry %d in %s",
            self.secondary_name,
            operation,
            len(ids),
            collection,
            reason,
            entry.seq,
            self.journal.path,
        )
        return entry

    def _within_deadline(self, fn: Any) -> None:
        """Run ``fn`` in a daemon thread and wait at most :attr:`deadline_s` for it; :class:`SecondaryDeadline`
        when it is still running then (or an earlier one still is: nothing is queued behind a hung store)."""
        with self._lock:
            if self._overdue is not None and self._overdue.is_alive():
                raise SecondaryDeadline(
                    f"{self.secondary_name} is still busy with an earlier write that passed its "
                    f"{self.deadline_s:g} s deadline ({SECONDARY_DEADLINE_VARIABLE})"
                )
            outcome: list[BaseException] = []

            def run() -> None:
                try:
                    fn()
                except BaseException as exc:  # handed to the caller's thread
                    outcome.append(exc)

            thread = threading.Thread(target=run, name=f"dual-write-{self.secondary_name}", daemon=True)
            thread.start()
        thread.join(self.deadline_s)
        if thread.is_alive():
            with self._lock:
                self._overdue = thread
            raise SecondaryDeadline(
                f"{self.secondary_name} did not answer within {self.deadline_s:g} s ({SECONDARY_DEADLINE_VARIABLE})"
            )
        if outcome:
            raise outcome[0]

    def close_secondary(self, close: Any) -> None:
        """Call ``close`` (the secondary store's), without waiting when a write past its deadline still holds it:
        then it is closed in the background once that write lets go (the app's shutdown does not hang either)."""
        with self._lock:
            overdue = self._overdue is not None and self._overdue.is_alive()
        if not overdue:
            close()
            return
        log.warning(
            "dual write: %s is still busy with a write past its deadline; closed in the background", self.secondary_name
        )
        threading.Thread(target=close, name=f"dual-close-{self.secondary_name}", daemon=True).start()

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # --- replay --------------------------------------------------------------------------------
    def replay(self) -> int:
        """Copy each pending entry's ids from the store that has the write to the one that missed it, oldest
        first, marking each entry replayed once copied; return how many entries were replayed.

        A copy replaces the records (delete, then add what the source store holds now). Stops at the first
        entry that fails, with that error; the entries before it stay replayed.
        """
        stores: dict[str, WriteStore] = {self.primary_name: self.primary, self.secondary_name: self.secondary}
        done = 0
        for entry in self.journal.pending():
            source, target = stores[entry.primary], stores[entry.missed]
            copy_records(source, target, entry.collection, entry.ids)
            self.journal.mark_replayed(entry.seq)
            done += 1
        return done


def copy_records(source: WriteStore, target: WriteStore, collection: str, ids: list[str]) -> int:
    """Make ``ids`` in ``target`` what they are in ``source`` now (absent there: deleted); return how many were
    written. From a Qdrant Cosine collection the vectors copied are the unit-length ones Qdrant holds."""
    if not ids:
        return 0
    current = source.get(collection, ids, None, None, 0, INCLUDABLE)
    target.delete(collection, ids, None)
    if not current.ids:
        return 0
    assert current.embeddings is not None and current.metadatas is not None
    recs = Records(
        ids=list(current.ids),
        embeddings=current.embeddings,
        documents=current.documents,
        metadatas=[m or None for m in current.metadatas],
        uris=current.uris,
        stored_floats=True,  # as the source store keeps them: the target keeps them bit for bit
    )
    target.write(collection, "add", recs)
    return len(recs)
