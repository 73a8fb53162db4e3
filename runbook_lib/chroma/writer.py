"""Writing into ChromaDB for a reverse sync (and a rollback that brings Qdrant's writes back).

A Chroma server is written directly. A persistent directory is never written in place: its current state is
copied to a staging folder beside it (SQLite's online backup for the database), the changes are applied to the
staging copy and read back to prove they landed, and only then does the staging copy replace the live directory;
the previous directory is kept as ``<dir>.pre-sync-<time>``. A directory that another process holds open (a
running app) is refused before anything is copied, and again just before the swap, and a live directory that
changed while the staging copy was written is not replaced.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import chromadb
from chromadb.api import ClientAPI

from runbook_lib.chroma import files as chroma_files
from runbook_lib.config.settings import ChromaSettings
from runbook_lib.errors import ConfigError, RunbookError

log = logging.getLogger(__name__)


def processes_holding(directory: Path) -> list[str]:
    """``pid (name)`` of every other process with a file under ``directory`` open (Linux ``/proc``)."""
    root = directory.resolve()
    holders: list[str] = []
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux: nothing to check with
        return holders
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                try:
                    target = Path(os.readlink(fd))
                except OSError:
                    continue
                if target == root or root in target.parents:
                    name = (pid_dir / "comm").read_text().strip()
                    holders.append(f"{pid_dir.name} ({name})")
                    break
        except OSError:
            continue
    return holders


def refuse_if_open(directory: Path) -> None:
    holders = processes_holding(directory)
    if holders:
        raise ConfigError(
            f"{directory} is open in another process ({', '.join(holders[:5])}): stop the app (or anything "
            "else using CHROMA_PERSIST_DIR) before writing to ChromaDB, then run this step again."
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

    @classmethod
    def open(cls, settings: ChromaSettings, *, server_client: ClientAPI | None = None) -> ChromaWriter:
        if settings.is_server:
            if server_client is None:  # pragma: no cover - callers pass the source's client
                raise RunbookError("A Chroma server writer needs the server's client.")
            return cls(settings, server_client, None, None)
        live = settings.require_persist_dir()
        refuse_if_open(live)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        staging = live.with_name(f"{live.name}.sync-staging-{stamp}")
        before = chroma_files.stat_tree(live)
        chroma_files.ensure_free_space(live.parent, chroma_files.tree_size(live), "the staged copy of ChromaDB")
        chroma_files.copy_chroma_dir(live, staging)
        try:
            client = chromadb.PersistentClient(path=str(staging))
        except Exception:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        writer = cls(settings, client, staging, live)
        writer._before = before
        return writer

    def collection(self, name: str) -> Any:
        return self.client.get_collection(name, embedding_function=None)  # type: ignore[arg-type]

    def upsert(
        self, name: str, ids: list[str], embeddings: Any, documents: list[Any], metadatas: list[Any], uris: list[Any]
    ) -> None:
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
            col.delete(ids=ids)
            col.add(**kwargs)
            return
        # a server is written live: one upsert per batch, with None for every metadata key a record loses (the
        # upsert then removes it); a document or uri set to None on the other side cannot be cleared this way
        old = col.get(ids=ids, include=["metadatas"])
        before = dict(zip(old["ids"], old["metadatas"] or [None] * len(old["ids"]), strict=True))
        kwargs["metadatas"] = [
            {**dict.fromkeys(set(before.get(i) or {}) - set(m or {})), **(m or {})} or None
            for i, m in zip(ids, metadatas, strict=True)
        ]
        col.upsert(**kwargs)

    def delete(self, name: str, ids: list[str]) -> None:
        if ids:
            self.collection(name).delete(ids=ids)

    def read(self, name: str, ids: list[str]) -> dict[str, Any]:
        return self.collection(name).get(ids=ids, include=["embeddings", "documents", "metadatas", "uris"])

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
        now = chroma_files.stat_tree(self.live)
        changed = sorted(n for n in set(self._before) | set(now) if self._before.get(n) != now.get(n))
        if changed:
            self.discard()
            raise ConfigError(
                f"{self.live} changed while its staged copy was written ({', '.join(changed[:5])}): an app is "
                "writing to it; stop the app, then run this step again (nothing was replaced)."
            )
        refuse_if_open(self.live)
        integrity = chroma_files.sqlite_integrity(self.staging / chroma_files.SQLITE_NAME)
        if integrity != "ok":
            self.discard()
            raise RunbookError(f"The staged copy of {self.live} failed SQLite's integrity check ({integrity}).")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        previous = self.live.with_name(f"{self.live.name}.pre-sync-{stamp}")
        os.rename(self.live, previous)
        os.rename(self.staging, self.live)
        self.previous, self.staging = previous, None
        log.info("ChromaDB directory replaced by its verified staged copy; the previous one is kept at %s", previous)
        return previous

    def discard(self) -> None:
        if self.staging is not None:
            self._close_client()
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
