"""The monitor's workload and the two stores it is run against (see :mod:`runbook_lib.steps.monitor.engine`).

* :func:`monitored_collections` decides which collections are measured: those the run's migration
  checkpoint lists (queried by alias or target name), else every source collection under its own name.
* :func:`build_queries` draws the queries of one collection from its own records, deterministically:
  stored vectors and perturbed copies of them, optionally with an equality filter on one metadata key
  whose value is drawn from the data.
* :class:`ChromaStore` and :class:`QdrantStore` run one query and return the top-k Chroma ids. Both ask
  for what a RAG app asks for (ids, scores, documents and metadata). They never retry: a query that raises
  is an error for the monitor to count, not something to hide.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any, Literal, Protocol

import numpy as np
from qdrant_client import models

from runbook_lib.core.filters import to_qdrant_filter
from runbook_lib.core.mapping import PAYLOAD_ID_KEY
from runbook_lib.source.chroma import ChromaSource
from runbook_lib.target.qdrant import QdrantTarget

log = logging.getLogger(__name__)

StoreKey = Literal["chroma", "qdrant"]
STORES: tuple[StoreKey, StoreKey] = ("chroma", "qdrant")
STORE_LABELS: dict[str, str] = {"chroma": "Chroma", "qdrant": "Qdrant"}

#: Perturbed queries add Gaussian noise of this size relative to the vector's RMS component.
PERTURBATION = 0.1

#: What each query returns, in both stores (the same work a RAG app asks for).
RETURNED_FIELDS = "ids, scores/distances, documents and metadata"

LOCAL_MODE_DISCLAIMER = (
    "The Qdrant figures were measured in qdrant-client's embedded local mode: a pure-Python/NumPy exact "
    "(brute-force) search running inside this Python process, not the Qdrant server. They say nothing about "
    "the latency or concurrency of a Qdrant server or cluster; set QDRANT_URL to your server and run the "
    "monitor again for figures comparable with the guide's."
)

Scalar = str | int | float | bool


# --- which collections ---------------------------------------------------------------------------
@dataclass
class MonitoredCollection:
    """One source collection and the Qdrant name it is queried under."""

    source: str
    target: str
    status: Literal["measured", "skipped"]
    reason: str = ""
    migration_status: str | None = None
    source_count: int | None = None
    target_count: int | None = None
    filter_key: str | None = None
    filter_applied: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def monitored_collections(
    source: ChromaSource,
    target: QdrantTarget,
    checkpoint: Mapping[str, Mapping[str, Any]] | None,
    requested: Sequence[str],
) -> list[MonitoredCollection]:
    """The collections to measure, in order, each marked measured or skipped (with the reason).

    With a checkpoint, its collections are used and queried by alias (if the run set one) or target name; a
    collection the migration finished is measured even when Qdrant has lost it (its queries then count as
    errors). Without one, every source collection is queried under its own name and one Qdrant does not
    have is skipped. Empty collections are always skipped.
    """
    known = set(source.collection_names())
    if checkpoint is not None:
        names = list(checkpoint)
        if requested:
            for name in requested:
                if name not in checkpoint and name not in known:
                    source.collection(name)  # raises SourceError listing what exists
            names = list(dict.fromkeys(requested))
    else:
        names = source.resolve_collections(list(requested))
    rows: list[MonitoredCollection] = []
    for name in names:
        state = checkpoint.get(name) if checkpoint is not None else None
        query_name = str(state.get("alias") or state.get("target") or name) if state is not None else name
        row = MonitoredCollection(
            source=name,
            target=query_name,
            status="measured",
            migration_status=str(state.get("status")) if state is not None else None,
        )
        rows.append(row)
        if name not in known:
            row.status, row.reason = "skipped", "not found in ChromaDB"
            continue
        row.source_count = source.count(name)
        row.target_count = _target_count(target, query_name)
        if row.source_count == 0:
            row.status, row.reason = "skipped", "empty in ChromaDB (nothing to query)"
        elif state is not None and state.get("status") == "skipped":
            row.status, row.reason = "skipped", "skipped by the migration"
        elif state is not None and state.get("status") != "done":
            row.status = "skipped"
            row.reason = f"migration status is {state.get('status')!r}, not done: the stores would not be comparable"
        elif state is None and row.target_count is None:
            row.status = "skipped"
            row.reason = f"Qdrant has no collection or alias {query_name!r} (and this run has no migrate checkpoint)"
    return rows


def _target_count(target: QdrantTarget, name: str) -> int | None:
    try:
        return int(target.client.count(collection_name=name, exact=True).count)
    except Exception:
        return None


# --- queries -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """One query, run identically against both stores."""

    collection: str  # the Chroma collection
    target: str  # the Qdrant collection or alias
    index: int
    vector: list[float]
    kind: Literal["stored", "perturbed"]
    origin_id: str  # the Chroma id whose vector it was drawn from
    warmup: bool
    where: dict[str, Any] | None = None
    qdrant_filter: models.Filter | None = field(default=None, compare=False)


def collection_seed(seed: int, name: str) -> np.random.SeedSequence:
    """A per-collection seed, so adding a collection does not change another's queries."""
    return np.random.SeedSequence([seed & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def build_queries(
    source: ChromaSource,
    row: MonitoredCollection,
    *,
    queries: int,
    warmup: int,
    seed: int,
    filter_key: str = "",
) -> tuple[list[Query], list[str]]:
    """``warmup + queries`` queries drawn from the collection's records; warnings about the filter.

    Records are sampled without replacement when the collection has enough of them. Even-numbered
    queries use a stored vector as it is, odd-numbered ones add Gaussian noise (:data:`PERTURBATION` of
    the vector's RMS component), so both exact hits and near misses are asked. With ``filter_key``, each
    query filters on equality of that key with the value the sampled record holds (or, when it holds none,
    a value drawn from the other sampled records); only scalar values are used.
    """
    warnings: list[str] = []
    ids = source.snapshot_ids(row.source)
    total = warmup + queries
    seq = collection_seed(seed, row.source)
    pick_rng, noise_rng, filter_rng = (np.random.default_rng(s) for s in seq.spawn(3))
    positions = pick_rng.choice(len(ids), size=total, replace=len(ids) < total)
    chosen = [ids[int(p)] for p in positions]
    unique = list(dict.fromkeys(chosen))
    batch = source.fetch(row.source, unique)
    where_of = {rid: k for k, rid in enumerate(batch.ids)}
    values: list[Scalar | None] = []
    if filter_key:
        for rid in chosen:
            meta = batch.metadatas[where_of[rid]] or {}
            value = meta.get(filter_key)
            values.append(value if _is_filter_scalar(value) else None)
        pool = [v for v in values if v is not None]
        row.filter_key = filter_key
        if not pool:
            warnings.append(
                f"Collection {row.source!r}: no sampled record has a scalar value for metadata key {filter_key!r}, "
                "so its queries run without a filter."
            )
        else:
            row.filter_applied = True
            values = [v if v is not None else pool[int(filter_rng.integers(len(pool)))] for v in values]
    out: list[Query] = []
    for j, rid in enumerate(chosen):
        vector = batch.embeddings[where_of[rid]].astype(np.float64)
        kind: Literal["stored", "perturbed"] = "stored"
        if j % 2 == 1:
            rms = float(np.sqrt(np.mean(vector * vector))) if vector.size else 0.0
            vector = vector + PERTURBATION * (rms or 1.0) * noise_rng.normal(size=vector.shape)
            kind = "perturbed"
        where: dict[str, Any] | None = None
        qdrant_filter: models.Filter | None = None
        if row.filter_applied:
            value = values[j]
            assert value is not None
            where = {filter_key: value}
            qdrant_filter = equality_filter(filter_key, value)
        out.append(
            Query(
                collection=row.source,
                target=row.target,
                index=j,
                vector=[float(x) for x in vector.astype(np.float32)],
                kind=kind,
                origin_id=rid,
                warmup=j < warmup,
                where=where,
                qdrant_filter=qdrant_filter,
            )
        )
    return out, warnings


def _is_filter_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | bool | int)


def equality_filter(key: str, value: Scalar) -> models.Filter:
    """The Qdrant filter that selects what Chroma's ``where={key: value}`` selects (the app wrapper's
    translation, so the monitor and the app filter the same way)."""
    return to_qdrant_filter({key: value})


# --- the stores ----------------------------------------------------------------------------------
class Store(Protocol):
    """One side of the comparison."""

    key: StoreKey

    def query(self, q: Query, k: int) -> list[str]:
        """The Chroma ids of the top-k results, best first. Raises on any failure."""
        ...

    def count(self, name: str) -> int: ...

    def ping(self) -> None:
        """Raise unless the store answers."""
        ...

    def engine(self) -> dict[str, Any]: ...


class ChromaStore:
    """The ChromaDB source: a scratch copy of the persistent directory, or the Chroma server."""

    key: StoreKey = "chroma"

    def __init__(self, source: ChromaSource) -> None:
        self.source = source
        self._handles: dict[str, Any] = {}

    def prepare(self, names: Sequence[str]) -> None:
        """Open the collections up front, so worker threads never race to open one."""
        for name in names:
            self._handles[name] = self.source.collection(name)

    def _collection(self, name: str) -> Any:
        handle = self._handles.get(name)
        return handle if handle is not None else self.source.collection(name)

    def query(self, q: Query, k: int) -> list[str]:
        result = self._collection(q.collection).query(
            query_embeddings=[q.vector],
            n_results=k,
            where=q.where,
            include=["documents", "metadatas", "distances"],
        )
        return [str(i) for i in result["ids"][0]]

    def count(self, name: str) -> int:
        return int(self.source.client.get_collection(name, embedding_function=None).count())

    def ping(self) -> None:
        self.source.client.heartbeat()

    def engine(self) -> dict[str, Any]:
        settings = self.source.settings
        version = _version("chromadb")
        if settings.is_server:
            server_version: str | None
            try:
                server_version = str(self.source.client.get_version())
            except Exception:
                server_version = None
            return {
                "store": "chroma",
                "kind": "server",
                "where": settings.describe(),
                "description": f"Chroma server at {settings.describe().removeprefix('Chroma server ')} "
                f"(server version {server_version or 'unknown'}, chromadb client {version}), over HTTP",
                "client_version": version,
                "server_version": server_version,
                "local_mode": False,
            }
        return {
            "store": "chroma",
            "kind": "embedded persistent client",
            "where": settings.describe(),
            "description": f"chromadb {version} embedded (PersistentClient, HNSW approximate search) in this "
            f"process, on a scratch copy of {settings.persist_dir} (the live directory is never opened)",
            "client_version": version,
            "server_version": None,
            "local_mode": True,
        }


class QdrantStore:
    """The Qdrant target: a server (REST or gRPC), or qdrant-client's embedded local mode."""

    key: StoreKey = "qdrant"

    def __init__(self, target: QdrantTarget) -> None:
        self.target = target

    def query(self, q: Query, k: int) -> list[str]:
        response = self.target.client.query_points(
            collection_name=q.target,
            query=q.vector,
            limit=k,
            query_filter=q.qdrant_filter,
            with_payload=True,
        )
        return [str((p.payload or {}).get(PAYLOAD_ID_KEY, p.id)) for p in response.points]

    def count(self, name: str) -> int:
        return int(self.target.client.count(collection_name=name, exact=True).count)

    def ping(self) -> None:
        self.target.client.get_collections()

    def engine(self) -> dict[str, Any]:
        settings = self.target.settings
        version = _version("qdrant-client")
        if self.target.is_local:
            return {
                "store": "qdrant",
                "kind": "embedded local mode",
                "where": settings.describe(),
                "description": f"qdrant-client {version} embedded local mode at {settings.path}: pure-Python/NumPy "
                "exact (brute-force) search in this process, NOT the Qdrant server",
                "client_version": version,
                "server_version": None,
                "local_mode": True,
                "disclaimer": LOCAL_MODE_DISCLAIMER,
            }
        server_version: str | None
        try:
            server_version = str(self.target.client.info().version)
        except Exception:
            server_version = None
        return {
            "store": "qdrant",
            "kind": "server",
            "where": settings.describe(),
            "description": f"Qdrant server {settings.url} (version {server_version or 'unknown'}, qdrant-client "
            f"{version}, {'gRPC' if settings.prefer_grpc else 'REST'}), default HNSW search",
            "client_version": version,
            "server_version": server_version,
            "local_mode": False,
            "disclaimer": None,
        }


def _version(package: str) -> str:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def short_error(exc: BaseException) -> str:
    """``Type: first line`` of an exception, at most 200 characters."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text[:200]


__all__ = [
    "LOCAL_MODE_DISCLAIMER",
    "RETURNED_FIELDS",
    "STORES",
    "STORE_LABELS",
    "ChromaStore",
    "MonitoredCollection",
    "QdrantStore",
    "Query",
    "Store",
    "build_queries",
    "equality_filter",
    "monitored_collections",
    "short_error",
]
