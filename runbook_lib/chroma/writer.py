"""Writing into ChromaDB for a reverse sync (and a rollback that brings Qdrant's writes back).

A Chroma server is written directly. A persistent directory is never written in place: its current state is
copied to a staging folder beside it (SQLite's online backup for the database), the changes are applied to the
staging copy and read back to prove they landed, and only then does the staging copy replace the live directory;
the previous directory is kept as ``<dir>.pre-sync-<time>``. A directory that another process holds open (a
running app) is refused before anything is copied, and again just before the swap, and a live directory that
changed while the staging copy was written is not replaced.

The swap is two renames (:func:`replace_directory`, also the rollback's restore). An intent record
``<dir>.swap.json`` is written before the first; a step that touches the directory calls :func:`recover_swap`
first, which finishes a swap a crash interrupted between the renames (or undoes one interrupted before the first),
so ``CHROMA_PERSIST_DIR`` is never found missing and the staged copy is never deleted once it may be live.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chromadb.api import ClientAPI

from runbook_lib.chroma import files as chroma_files
from runbook_lib.chroma.clients import open_client
from runbook_lib.chroma.server import read_with_retry
from runbook_lib.config.faults import fault_point
from runbook_lib.config.settings import ChromaSettings
from runbook_lib.core.chroma_floats import metadata_chroma_stores_as
from runbook_lib.errors import ConfigError, RunbookError, SyncError

log = logging.getLogger(__name__)

#: Records per request written to (or read back from) a Chroma server: Chroma Cloud takes at most 300 per write.
MAX_RECORDS_PER_WRITE = 300


# --- the directory swap ------------------------------------------------------------------------------
def intent_path(live: Path) -> Path:
    """The intent record of a swap of ``live`` in progress."""
    return live.with_name(f"{live.name}.swap.json")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _process_started(pid: int) -> str | None:
    """When process ``pid`` started (``/proc/<pid>/stat``'s start time: a reused pid has another), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _write_intent(live: Path, staged: Path, previous: Path | None) -> None:
    path = intent_path(live)
    tmp = path.with_name(path.name + ".tmp")
    record = {
        "live": str(live),
        "staged": str(staged),
        "previous": str(previous) if previous else None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_started": _process_started(os.getpid()),
    }
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({**record, "started_at": datetime.now(UTC).isoformat()}, indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_intent(live: Path) -> dict[str, Any] | None:
    path = intent_path(live)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not data.get("staged"):
            raise ValueError("no staged directory recorded")
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"The swap record {path} cannot be read ({exc}): a swap of {live} was interrupted; check which of "
            f"{live} and its .sync-staging-*/.restore-* and .pre-sync-*/.old-* siblings holds the newest data, put "
            "it at that path, delete the record, then run the step again."
        ) from None
    return data


def _swapping_now(data: dict[str, Any]) -> int | None:
    """The pid of the process of this machine still doing the recorded swap (not this one), or None."""
    pid = data.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or data.get("host") != socket.gethostname():
        return None
    started = _process_started(pid)
    return pid if started is not None and started == data.get("process_started") else None


def is_swapping(live: Path, staged: Path) -> bool:
    """Whether an intent record says ``staged`` is to become (or has become) ``live``."""
    data = _read_intent(live)
    return data is not None and Path(data["staged"]) == staged


def replace_directory(live: Path, staged: Path, previous: Path | None) -> None:
    """Make ``staged`` the live directory, the current one (if any: ``previous`` is not None) kept as ``previous``.

    An intent record is on disk before the first rename. A rename that fails is undone (the live directory put
    back as it was) and its ``OSError`` raised; when even that fails, the record stays for :func:`recover_swap`
    and the :class:`RunbookError` says where each directory is."""
    _write_intent(live, staged, previous)
    try:
        fault_point("swap:first-rename")
        if previous is not None:
            os.rename(live, previous)
        fault_point("swap:second-rename")
        os.rename(staged, live)
    except OSError:
        try:
            if previous is not None and previous.exists() and not live.exists():
                os.rename(previous, live)
        except OSError as undo:
            raise RunbookError(
                f"Could not move {staged} into place at {live}, nor put {previous} back ({undo}): move {previous} "
                f"back to {live} by hand (the staged copy {staged} is kept), then run the step again."
            ) from undo
        intent_path(live).unlink(missing_ok=True)
        raise
    _fsync_dir(live.parent)
    fault_point("swap:after-renames")
    intent_path(live).unlink(missing_ok=True)


def recover_swap(live: Path) -> str | None:
    """Finish or undo a swap of ``live`` that a crash interrupted (its intent record is there); what was done, for
    the step's warnings (None: no swap was in progress). Between the renames the staged copy (complete and verified
    before the record was written) is moved into place; before the first rename it never went live and is removed;
    after both only the record is left."""
    data = _read_intent(live)
    if data is None:
        return None
    if (pid := _swapping_now(data)) is not None:
        raise ConfigError(
            f"Process {pid} is swapping {live} right now (its record {intent_path(live)}): wait for that step to "
            "finish, then run this one again."
        )
    staged = Path(data["staged"])
    previous = Path(data["previous"]) if data.get("previous") else None
    if staged.exists() and not live.exists():
        os.rename(staged, live)
        done = f"finished: {staged} was moved into place at {live}"
    elif staged.exists():
        if previous is not None and previous.exists():
            raise ConfigError(
                f"The interrupted swap recorded in {intent_path(live)} left {live}, {staged} and {previous} all in "
                "place: decide which holds the newest data, keep it at the first path, delete the record, then run "
                "the step again."
            )
        shutil.rmtree(staged)
        done = f"undone: {live} was never replaced and its staged copy {staged} was removed"
    elif live.exists():
        done = f"finished: {live} is the staged copy"
    elif previous is not None and previous.exists():
        os.rename(previous, live)
        done = f"undone: {previous} was put back at {live}"
    else:
        raise ConfigError(
            f"The interrupted swap recorded in {intent_path(live)} left neither {live} nor {staged}"
            + (f" nor {previous}" if previous else "")
            + ": restore the directory (e.g. from the run's backup), delete the record, then run the step again."
        )
    _fsync_dir(live.parent)
    intent_path(live).unlink()
    kept = f"; the directory it replaced is kept at {previous}" if previous is not None and previous.exists() else ""
    message = f"An interrupted swap of the ChromaDB directory was {done}{kept}."
    log.warning(message)
    return message


def unused_sibling(live: Path, kind: str) -> Path:
    """``<live>.<kind>-<UTC stamp>`` beside ``live``, with ``-2``, ``-3``... when a copy of the same second is
    already there (a killed step's leftover is never reused or overwritten)."""
    base = f"{live.name}.{kind}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    candidate, n = live.with_name(base), 1
    while candidate.exists():
        n += 1
        candidate = live.with_name(f"{base}-{n}")
    return candidate


def honour_swap(settings: ChromaSettings) -> str | None:
    """:func:`recover_swap` for the settings' persistent directory (a Chroma server has none)."""
    return None if settings.is_server else recover_swap(settings.persist_dir)


UNINSPECTABLE = "cannot be inspected: another user's or a container's process"


def inspect_holders(directory: Path) -> tuple[list[str], list[str]]:
    """``pid (name)`` of every other process with a file under ``directory`` open (Linux ``/proc``), and of every
    process whose open files this user may not read (another user's, a container's): it may hold it too."""
    root = directory.resolve()
    holders: list[str] = []
    unknown: list[str] = []
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux: nothing to check with
        return holders, unknown
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            name = (pid_dir / "comm").read_text().strip()
            if not (pid_dir / "cmdline").read_bytes():  # a kernel thread (or a zombie): it opens no files
                continue
        except OSError:
            continue  # the process ended
        try:
            fds = list((pid_dir / "fd").iterdir())
        except PermissionError:
            unknown.append(f"{pid_dir.name} ({name})")
            continue
        except OSError:
            continue
        for fd in fds:
            try:
                target = Path(os.readlink(fd))
            except OSError:
                continue
            if target == root or root in target.parents:
                holders.append(f"{pid_dir.name} ({name})")
                break
    return holders, unknown


def processes_holding(directory: Path, *, count_uninspectable: bool = True) -> list[str]:
    """``pid (name)`` of every other process that holds a file under ``directory`` open, or may (with
    ``count_uninspectable``, the default: a process this user cannot inspect counts as a holder)."""
    holders, unknown = inspect_holders(directory)
    return holders + ([f"{p}, {UNINSPECTABLE}" for p in unknown] if count_uninspectable else [])


def uninspectable_note(directory: Path, *, count_uninspectable: bool = True) -> str | None:
    """What the plan says about the processes this user cannot inspect (None: there are none)."""
    _, unknown = inspect_holders(directory)
    if not unknown:
        return None
    listed = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
    if count_uninspectable:
        return (
            f"{len(unknown)} process(es) could not be inspected for open files under {directory} ({listed}): they "
            "count as holding it, so it is not replaced; run as a user that can inspect them, or pass "
            "-p uninspectable ignore when none of them uses CHROMA_PERSIST_DIR."
        )
    return (
        f"{len(unknown)} process(es) could not be inspected for open files under {directory} ({listed}) and are "
        "assumed not to hold it (uninspectable=ignore)."
    )


def _refuse_changed(live: Path, before: dict[str, tuple[int, int]], now: dict[str, tuple[int, int]], when: str) -> None:
    changed = sorted(n for n in set(before) | set(now) if tuple(before.get(n) or ()) != tuple(now.get(n) or ()))
    if changed:
        raise ConfigError(
            f"{live} changed {when} ({', '.join(changed[:5])}): an app is writing to it; stop the app, then run "
            "this step again (nothing was replaced)."
        )


def refuse_if_open(directory: Path, *, count_uninspectable: bool = True) -> None:
    holders, unknown = inspect_holders(directory)
    if holders:
        raise ConfigError(
            f"{directory} is open in another process ({', '.join(holders[:5])}): stop the app (or anything "
            "else using CHROMA_PERSIST_DIR) before writing to ChromaDB, then run this step again."
        )
    if unknown and count_uninspectable:
        raise ConfigError(
            f"{directory} may be open in {len(unknown)} process(es) this user cannot inspect ("
            f"{', '.join(unknown[:5])}: another user's or a container's): stop any of them that uses "
            "CHROMA_PERSIST_DIR and pass -p uninspectable ignore (or run as a user that can inspect them), then run "
            "this step again."
        )


def _disk_full(staging: Path, when: str) -> SyncError:
    return SyncError(
        f"The disk holding {staging.parent} filled up {when} (the staged copy {staging.name}): free space in "
        f"{staging.parent}, then run this step again (the live directory was not replaced; the staged copy is "
        "removed)."
    )


def refuse_mount_point(live: Path) -> None:
    """A directory that is a mount point (a Docker volume) cannot be renamed away: refused before any copy."""
    if chroma_files.is_mount_point(live):
        raise ConfigError(
            f"CHROMA_PERSIST_DIR={live} is a mount point (a Docker volume or a separate disk), which cannot be "
            "swapped for a staged copy: mount the volume one level up and point CHROMA_PERSIST_DIR at a folder "
            "inside it (or stop the app and write through a Chroma server), then run this step again."
        )


class ChromaWriter:
    """Upserts and deletes into ChromaDB; :meth:`commit` makes a persistent directory's staged copy live."""

    def __init__(self, settings: ChromaSettings, client: ClientAPI, staging: Path | None, live: Path | None) -> None:
        self.settings = settings
        self.client = client
        self.staging = staging
        self.live = live
        self.previous: Path | None = None
        self._before: dict[str, tuple[int, int]] = {}
        self.count_uninspectable = True

    @classmethod
    def open(
        cls,
        settings: ChromaSettings,
        *,
        planned_from: dict[str, tuple[int, int]] | None = None,
        count_uninspectable: bool = True,
    ) -> ChromaWriter:
        """A writer; for a persistent directory, over a staged copy of it. ``planned_from``: the live files' (size,
        mtime) when the plan's snapshot was taken, so a write made since (before the copy, or during the staging)
        stops the swap; without it the state at copy time is the reference. ``count_uninspectable``: a process
        this user cannot inspect counts as holding the directory (:func:`refuse_if_open`)."""
        if settings.is_server:
            return cls(settings, open_client(settings), None, None)
        live = settings.require_persist_dir()
        refuse_if_open(live, count_uninspectable=count_uninspectable)
        staging = unused_sibling(live, "sync-staging")
        before = chroma_files.stat_tree(live)
        if planned_from is not None:
            _refuse_changed(live, planned_from, before, "since this step's plan read it")
            before = planned_from
        refuse_mount_point(live)
        chroma_files.ensure_free_space(
            live.parent,
            chroma_files.tree_size(live),
            "the staged copy of ChromaDB",
            fix=f"free space on that disk: the staged copy is written beside CHROMA_PERSIST_DIR, in {live.parent} "
            "(nothing was changed), then run this step again.",
        )
        try:
            chroma_files.copy_chroma_dir(live, staging)
            client = open_client(settings, path=staging)
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if chroma_files.is_disk_full(exc):
                raise _disk_full(staging, "while ChromaDB was copied to it") from exc
            raise
        writer = cls(settings, client, staging, live)
        writer._before = before
        writer.count_uninspectable = count_uninspectable
        return writer

    def collection(self, name: str) -> Any:
        return self.client.get_collection(name, embedding_function=None)  # type: ignore[arg-type]

    def upsert(
        self, name: str, ids: list[str], embeddings: Any, documents: list[Any], metadatas: list[Any], uris: list[Any]
    ) -> None:
        if self.staging is None and len(ids) > MAX_RECORDS_PER_WRITE:  # a server (Chroma Cloud's quota): in chunks
            for s in range(0, len(ids), MAX_RECORDS_PER_WRITE):
                e = s + MAX_RECORDS_PER_WRITE
                self.upsert(name, ids[s:e], embeddings[s:e], documents[s:e], metadatas[s:e], uris[s:e])
            return
        # floats as Chroma must be given them to store exactly these values (it moves ~3% of them 1 ulp otherwise)
        metadatas = [metadata_chroma_stores_as(m) for m in metadatas]
        kwargs: dict[str, Any] = {
            "ids": ids,
            "embeddings": embeddings,
            "documents": documents,
            "metadatas": [m or None for m in metadatas],
        }
        if any(u is not None for u in uris):
            kwargs["uris"] = uris
        col = self.collection(name)
        if self.staging is not None:
            # delete, then add: chromadb's upsert merges into the existing record (a metadata key, document or uri
            # removed on the other side would survive); nothing of the staged copy is live until commit
            try:
                col.delete(ids=ids)
                col.add(**kwargs)
            except Exception as exc:
                if chroma_files.is_disk_full(exc):
                    raise _disk_full(self.staging, "while Qdrant's changes were written into it") from exc
                raise
            return
        # a server is written live: one upsert per batch, with None for every metadata key a record loses (the
        # upsert then removes it); a record whose document or uri is cleared, which an upsert cannot do, is deleted
        # first, so the upsert adds it anew
        old = read_with_retry(col.get, ids=ids, include=["metadatas", "documents", "uris"])
        none = [None] * len(old["ids"])
        new_doc, new_uri = dict(zip(ids, documents, strict=True)), dict(zip(ids, uris, strict=True))
        olds = zip(old["ids"], old["documents"] or none, old["uris"] or none, old["metadatas"] or none, strict=True)
        before: dict[str, Any] = {}
        cleared = []
        for cid, doc, uri, meta in olds:
            if (doc is not None and new_doc[cid] is None) or (uri is not None and new_uri[cid] is None):
                cleared.append(cid)
            else:
                before[cid] = meta
        if cleared:
            read_with_retry(col.delete, ids=cleared)
        kwargs["metadatas"] = [
            {**dict.fromkeys(set(before.get(i) or {}) - set(m or {})), **(m or {})} or None
            for i, m in zip(ids, metadatas, strict=True)
        ]
        read_with_retry(col.upsert, **kwargs)  # idempotent: a throttled write is retried

    def delete(self, name: str, ids: list[str]) -> None:
        step = MAX_RECORDS_PER_WRITE if self.staging is None else max(1, len(ids))
        for s in range(0, len(ids), step):
            read_with_retry(self.collection(name).delete, ids=ids[s : s + step])

    def read(self, name: str, ids: list[str]) -> dict[str, Any]:
        include = ["embeddings", "documents", "metadatas", "uris"]
        if self.staging is not None or len(ids) <= MAX_RECORDS_PER_WRITE:
            return read_with_retry(self.collection(name).get, ids=ids, include=include)
        parts = [
            read_with_retry(self.collection(name).get, ids=ids[s : s + MAX_RECORDS_PER_WRITE], include=include)
            for s in range(0, len(ids), MAX_RECORDS_PER_WRITE)
        ]
        return {
            key: [v for p in parts for v in (p.get(key) if p.get(key) is not None else [None] * len(p["ids"]))]
            for key in ["ids", *include]
        }

    def _close_client(self) -> None:
        try:
            close = getattr(self.client, "close", None)
            if callable(close):
                close()
            from chromadb.api.shared_system_client import SharedSystemClient

            SharedSystemClient.clear_system_cache()
        except Exception:  # pragma: no cover
            log.debug("closing the staged chromadb failed", exc_info=True)

    def commit(self) -> Path | None:
        """Make the staged copy live (persistent directory); returns where the previous directory was kept."""
        if self.staging is None or self.live is None:
            return None
        self._close_client()
        # the slow check first, so that "did the live directory change" and "is it open" are asked right before
        # the renames (a write during the integrity check is seen)
        integrity = chroma_files.sqlite_integrity(self.staging / chroma_files.SQLITE_NAME)
        if integrity != "ok":
            self.discard()
            raise RunbookError(f"The staged copy of {self.live} failed SQLite's integrity check ({integrity}).")
        fault_point("swap:checks")
        try:
            _refuse_changed(
                self.live, self._before, chroma_files.stat_tree(self.live), "while its staged copy was written"
            )
            refuse_if_open(self.live, count_uninspectable=self.count_uninspectable)
        except ConfigError:
            self.discard()
            raise
        previous = unused_sibling(self.live, "pre-sync")
        try:
            replace_directory(self.live, self.staging, previous)
        except OSError as exc:
            raise SyncError(
                f"Could not swap the staged copy into {self.live} ({exc}): {self.live} was put back as it was "
                "(nothing was replaced); run this step again."
            ) from exc
        self.previous, self.staging = previous, None
        log.info("ChromaDB directory replaced by its verified staged copy; the previous one is kept at %s", previous)
        return previous

    def discard(self) -> None:
        """Remove the staged copy, unless a swap record says it is (or is becoming) the live directory."""
        if self.staging is not None:
            self._close_client()
            if self.live is None or not is_swapping(self.live, self.staging):
                shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
