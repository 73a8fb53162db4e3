"""The ChromaDB source: a persistent directory (read from a scratch copy) or a Chroma server.

Reads only. Collections are looked up, never created, so a typo fails instead of migrating an empty
collection. Records stream without offset paging: the ids are snapshotted once (``include=[]``),
then fetched by id in chunks that keep each request under SQLite's variable limit.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from runbook_lib.chroma import files as chroma_files
from runbook_lib.chroma import scratch
from runbook_lib.chroma.base import CollectionInfo, RecordBatch, SourceIdentity
from runbook_lib.chroma.clients import close_client, open_admin_client, open_client
from runbook_lib.chroma.server import read_with_retry
from runbook_lib.config.settings import ChromaSettings
from runbook_lib.core.mapping import chroma_space
from runbook_lib.core.payload_indexes import add_key_types
from runbook_lib.core.plan import resolve_collections
from runbook_lib.errors import DimensionMismatchError, SourceError

__all__ = ["INCLUDE_ALL", "ChromaSource", "CollectionInfo", "RecordBatch"]

log = logging.getLogger(__name__)

#: SQLite allows 32,766 host parameters per statement; stay well below it per ``get(ids=...)``.
MAX_IDS_PER_REQUEST = 10_000
INCLUDE_ALL = ["embeddings", "documents", "metadatas", "uris"]


class ChromaSource:
    """A ChromaDB source (:class:`~runbook_lib.chroma.base.ChromaReader`): a persistent directory read from a scratch
    copy, or a Chroma server. Use as a context manager so the scratch copy is removed."""

    def __init__(self, client: ClientAPI, settings: ChromaSettings, scratch: Path | None = None) -> None:
        self.client = client
        self.settings = settings
        self.scratch = scratch
        self.upgraded_on_open = False
        self._collections: dict[str, Collection] = {}

    # --- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: ChromaSettings, *, copy_from: Path | None = None) -> ChromaSource:
        """Open the source. A persistent directory (or ``copy_from``, e.g. a verified backup) is first
        copied to a scratch folder in ``RUNBOOK_SCRATCH_DIR``, because chromadb upgrades an older database it
        opens in place. Scratch folders left by dead processes are removed first."""
        root = settings.scratch_root()
        scratch.sweep_stale(root, scratch.default_root())
        if settings.is_cloud:  # pragma: no cover - a programming error: Cloud needs the quota-aware reader
            raise SourceError("Chroma Cloud is read by runbook_lib.chroma.cloud.CloudSource: open it with open_source.")
        if settings.is_server:
            return cls(open_client(settings), settings)
        origin = copy_from if copy_from is not None else settings.require_persist_dir()
        db = origin / chroma_files.SQLITE_NAME
        problem = chroma_files.sqlite_problem(db)
        if problem is not None:
            raise chroma_files.damaged_sqlite_error(db, problem, is_persist_dir=copy_from is None)
        chroma_files.ensure_free_space(
            root,
            chroma_files.tree_size(origin),
            f"the scratch copy of {origin} in {root}",
            fix="free some space there, or set RUNBOOK_SCRATCH_DIR to a folder on a disk with room.",
        )
        scratch_parent = scratch.make_scratch(root)
        scratch_db = scratch_parent / "chroma_db"
        try:
            try:
                chroma_files.copy_chroma_dir(origin, scratch_db)
            except sqlite3.DatabaseError as exc:  # damaged pages the schema read did not reach
                raise chroma_files.damaged_sqlite_error(db, str(exc), is_persist_dir=copy_from is None) from exc
            before = _migration_versions(scratch_db / chroma_files.SQLITE_NAME)
            client = open_client(settings, path=scratch_db)
        except BaseException:
            scratch.remove_scratch(scratch_parent)
            raise
        source = cls(client, settings, scratch_parent)
        source.upgraded_on_open = _migration_versions(scratch_db / chroma_files.SQLITE_NAME) != before
        return source

    def __enter__(self) -> ChromaSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._collections.clear()
        close_client(self.client)
        if self.scratch is not None:
            try:
                from chromadb.api.shared_system_client import SharedSystemClient

                SharedSystemClient.clear_system_cache()
            except Exception:  # pragma: no cover
                log.debug("clearing chromadb's system cache failed", exc_info=True)
            scratch.remove_scratch(self.scratch)
            self.scratch = None

    def release(self) -> None:
        """Free chromadb's in-memory copy of the collections read so far (scratch copies only).

        chromadb loads a collection's whole vector index on first access, even for ``count()``, and keeps
        every collection it opened until its client closes: without this, memory grows with the database
        instead of with the largest collection. A Chroma server holds its own memory."""
        if self.scratch is None:
            return
        self._collections.clear()
        close_client(self.client)  # refcounted: stops only this scratch copy's system
        self.client = open_client(self.settings, path=self.scratch / "chroma_db")

    def describe(self) -> str:
        return self.settings.describe()

    def identity(self) -> SourceIdentity:
        client_version = importlib_metadata.version("chromadb")
        settings = self.settings
        if not settings.is_server:
            return SourceIdentity("persistent", str(settings.persist_dir), client_version)
        try:
            server_version: str | None = str(self.client.get_version())
        except Exception:  # the version is information; a server that does not say is still read
            server_version = None
        url = f"{'https' if settings.ssl else 'http'}://{settings.host}:{settings.port}"
        return SourceIdentity("server", url, client_version, server_version)

    def heartbeat(self) -> None:
        self.client.heartbeat()

    # --- collections ---------------------------------------------------------------------------
    def collection_names(self) -> list[str]:
        found = read_with_retry(self.client.list_collections)
        return sorted(c if isinstance(c, str) else c.name for c in found)

    def collection(self, name: str) -> Collection:
        """The collection ``name``; :class:`SourceError` listing what exists when it does not."""
        if name not in self._collections:
            try:
                self._collections[name] = read_with_retry(self.client.get_collection, name, embedding_function=None)
            except Exception as exc:
                known = self.collection_names()
                if name in known:
                    raise SourceError(f"ChromaDB could not open collection {name!r}: {exc}") from exc
                raise SourceError(
                    f"Collection {name!r} does not exist in {self.describe()}: the collections there are "
                    f"{', '.join(known) or 'none'}; fix the `collections` parameter.",
                    collection=name,
                ) from exc
        return self._collections[name]

    def resolve_collections(self, requested: Sequence[str] | None) -> list[str]:
        return resolve_collections(self.collection_names(), requested)

    def prepare_search(self, names: Sequence[str]) -> None:
        for name in names:
            self.collection(name)

    def count(self, name: str) -> int:
        return int(read_with_retry(self.collection(name).count))

    def space(self, name: str) -> str:
        col = self.collection(name)
        return chroma_space(col.metadata, _configuration(col))

    def dimension(self, name: str) -> int | None:
        """The dimension read from the data (first record), or None for an empty collection."""
        col = self.collection(name)
        first = read_with_retry(col.get, limit=1, include=["embeddings"])
        embeddings = first.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            return None
        return len(embeddings[0])

    def collection_id(self, name: str) -> str:
        return str(self.collection(name).id)

    def info(self, name: str) -> CollectionInfo:
        col = self.collection(name)
        configuration = _configuration(col)
        ef = configuration.get("embedding_function")
        ef_name = None
        if isinstance(ef, dict):
            ef_name = str(ef.get("name") or ef.get("type"))
        elif ef is not None:
            ef_name = type(ef).__name__
        return CollectionInfo(
            name=name,
            count=self.count(name),
            space=self.space(name),
            dimension=self.dimension(name),
            metadata=dict(col.metadata or {}),
            configuration={k: v for k, v in configuration.items() if k != "embedding_function"},
            embedding_function=ef_name,
        )

    def embedding_function(self, name: str) -> dict[str, Any] | None:
        """The embedding function Chroma recorded in the collection's configuration, ``{"name", "config"}`` as
        chromadb's registry rebuilds it; None when there is none, or only a legacy one (no recorded config)."""
        ef = _configuration(self.collection(name)).get("embedding_function")
        if not isinstance(ef, dict) or ef.get("type") != "known" or not ef.get("name"):
            return None
        return {"name": str(ef["name"]), "config": dict(ef.get("config") or {})}

    def other_databases(self) -> list[dict[str, Any]]:
        """Tenants/databases present besides the one being read (they are not migrated)."""
        current = (self.settings.tenant or "default_tenant", self.settings.database or "default_database")
        found: list[dict[str, Any]] = []
        if self.scratch is not None:
            db = self.scratch / "chroma_db" / chroma_files.SQLITE_NAME
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                rows = con.execute(
                    "SELECT d.tenant_id, d.name, COUNT(c.id) FROM databases d "
                    "LEFT JOIN collections c ON c.database_id = d.id GROUP BY d.id"
                ).fetchall()
            finally:
                con.close()
            for tenant, name, n in rows:
                if (tenant, name) != current:
                    found.append({"tenant": tenant, "database": name, "collections": int(n)})
            return found
        try:
            admin = open_admin_client(self.settings)
            for tenant in {current[0]}:
                for db in admin.list_databases(tenant=tenant):
                    if (tenant, db["name"]) != current:
                        found.append({"tenant": tenant, "database": db["name"], "collections": None})
        except Exception as exc:  # listing databases may need admin rights on a server
            log.info("could not list databases on the Chroma server: %s", exc)
        return found

    # --- records -------------------------------------------------------------------------------
    def snapshot_ids(self, name: str) -> list[str]:
        """Every id of the collection, sorted: a fixed order so a resumed run skips the same batches."""
        result = read_with_retry(self.collection(name).get, include=[])
        return sorted(result["ids"])

    def _get_by_ids(self, name: str, ids: Sequence[str], include: list[str]) -> list[dict[str, Any]]:
        """``get(ids=..., include=...)`` in chunks under SQLite's variable limit, retried: chromadb's answers, in
        order (a Cloud source chunks within its quotas and reads its chunks concurrently)."""
        col = self.collection(name)
        return [
            read_with_retry(col.get, ids=list(ids[start : start + MAX_IDS_PER_REQUEST]), include=include)
            for start in range(0, len(ids), MAX_IDS_PER_REQUEST)
        ]

    def read_summary(self) -> str | None:
        """How the source was read, for a step's result (None: the usual way, nothing to add)."""
        return None

    def quotas(self) -> dict[str, Any] | None:
        """The source's request quotas and what reading it takes (None: a directory or a server has none)."""
        return None

    def present_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for part in self._get_by_ids(name, ids, []):
            found.update(part["ids"])
        return found

    def fetch(self, name: str, ids: Sequence[str], *, expected_dim: int | None = None) -> RecordBatch:
        """Records for ``ids`` in the order given. Missing ids or an odd dimension raise."""
        return assemble(name, ids, self._get_by_ids(name, ids, INCLUDE_ALL), expected_dim)

    def metadata_types(self, name: str, ids: Sequence[str], batch_size: int) -> tuple[dict[str, set[str]], int]:
        """(metadata key -> the value types found, records with a document) over ``ids``, reading metadata and
        documents only (no vectors): what the payload index plan needs."""
        key_types: dict[str, set[str]] = {}
        documents = 0
        step = max(1, min(batch_size * 4, MAX_IDS_PER_REQUEST))
        for start in range(0, len(ids), step):
            for part in self._get_by_ids(name, ids[start : start + step], ["metadatas", "documents"]):
                add_key_types(key_types, part.get("metadatas") or [])
                documents += sum(d is not None for d in part.get("documents") or [])
        return key_types, documents

    def iter_batches(
        self, name: str, batch_size: int, *, ids: Sequence[str] | None = None, expected_dim: int | None = None
    ) -> Iterator[RecordBatch]:
        all_ids = self.snapshot_ids(name) if ids is None else list(ids)
        for start in range(0, len(all_ids), batch_size):
            yield self.fetch(name, all_ids[start : start + batch_size], expected_dim=expected_dim)

    def search(self, name: str, vector: Sequence[float], k: int, where: Mapping[str, Any] | None) -> list[str]:
        result = self.collection(name).query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)],
            n_results=k,
            where=dict(where) if where else None,
            include=["documents", "metadatas", "distances"],
        )
        return [str(i) for i in result["ids"][0]]

    def query_ids(self, name: str, queries: np.ndarray, k: int) -> list[list[str]] | str:
        """Ids of the ``k`` nearest records per query from Chroma's approximate index, or why they are
        unavailable (``"unavailable: ..."``). Never raises: the answers are information only."""
        try:
            res = read_with_retry(
                self.collection(name).query, query_embeddings=queries, n_results=k, include=["distances"]
            )
            return [list(r) for r in res["ids"]]
        except Exception as exc:  # an index problem here is reported, never fatal
            return f"unavailable: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"


def assemble(name: str, ids: Sequence[str], parts: list[dict[str, Any]], expected_dim: int | None) -> RecordBatch:
    """The records for ``ids``, in that order, from chromadb's ``get`` answers ``parts``; a missing id or another
    dimension raises."""
    got_ids: list[str] = [i for p in parts for i in p["ids"]]
    position = {rid: k for k, rid in enumerate(got_ids)}
    if len(position) != len(ids) or any(i not in position for i in ids):
        missing = [i for i in ids if i not in position][:5]
        raise SourceError(f"ChromaDB returned no record for ids {missing} of collection {name!r}.")
    order = [position[i] for i in ids]
    embeddings = _stack_embeddings(name, parts, got_ids, expected_dim)[order]

    def column(key: str) -> list[Any]:
        values: list[Any] = []
        for p in parts:
            col_values = p.get(key)
            values.extend(col_values if col_values is not None else [None] * len(p["ids"]))
        return [values[k] for k in order]

    return RecordBatch(
        ids=list(ids),
        embeddings=embeddings,
        documents=column("documents"),
        metadatas=column("metadatas"),
        uris=column("uris"),
    )


def _stack_embeddings(name: str, parts: list[dict[str, Any]], ids: list[str], expected_dim: int | None) -> np.ndarray:
    rows: list[Any] = []
    for p in parts:
        emb = p.get("embeddings")
        if emb is None:
            raise SourceError(f"Collection {name!r} returned records without embeddings; nothing to migrate.")
        rows.extend(list(emb) if not isinstance(emb, np.ndarray) else emb)
    if not rows:
        return np.zeros((0, expected_dim or 0), dtype=np.float32)
    dims = [len(r) if r is not None else 0 for r in rows]
    dim = expected_dim if expected_dim is not None else dims[0]
    for rid, d in zip(ids, dims, strict=True):
        if d != dim:
            raise DimensionMismatchError(name, dim, d, rid)
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), dim)


def _configuration(col: Collection) -> dict[str, Any]:
    for attr in ("configuration_json", "configuration"):
        try:
            value = getattr(col, attr)
        except Exception:  # chromadb raises on configurations it cannot parse (old databases)
            continue
        if isinstance(value, dict):
            return dict(value)
    return {}


def _migration_versions(db: Path) -> list[tuple[str, int]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted(con.execute("SELECT dir, MAX(version) FROM migrations GROUP BY dir").fetchall())
    except sqlite3.Error:
        return []
    finally:
        con.close()
