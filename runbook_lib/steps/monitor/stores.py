"""The two stores the monitor compares, and what it says about them.

* :class:`ChromaStore` and :class:`QdrantStore` run one query and return the top-k Chroma ids. Both ask
  for what a RAG app asks for (:data:`RETURNED_FIELDS`: ids, scores, documents and metadata). They never
  retry: a query that raises is an error for the monitor to count, not something to hide.
* Each store describes the engine it talks to (:meth:`Store.engine`); :data:`LOCAL_MODE_DISCLAIMER` is what
  the result says whenever Qdrant is qdrant-client's embedded local mode rather than a server.
* :data:`STORES` and :data:`STORE_LABELS` fix the order and names of the two sides everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from typing import Any, Literal, Protocol

from runbook_lib.chroma.base import ChromaReader
from runbook_lib.core.mapping import PAYLOAD_ID_KEY
from runbook_lib.qdrant.target import QdrantTarget
from runbook_lib.steps.monitor.workload import Query

StoreKey = Literal["chroma", "qdrant"]
STORES: tuple[StoreKey, StoreKey] = ("chroma", "qdrant")
STORE_LABELS: dict[str, str] = {"chroma": "Chroma", "qdrant": "Qdrant"}

#: What each query returns, in both stores (the same work a RAG app asks for).
RETURNED_FIELDS = "ids, scores/distances, documents and metadata"

LOCAL_MODE_DISCLAIMER = (
    "The Qdrant figures were measured in qdrant-client's embedded local mode: a pure-Python/NumPy exact "
    "(brute-force) search running inside this Python process, not the Qdrant server. They say nothing about "
    "the latency or concurrency of a Qdrant server or cluster; set QDRANT_URL to your server and run the "
    "monitor again for figures comparable with the guide's."
)


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

    def __init__(self, source: ChromaReader) -> None:
        self.source = source

    def prepare(self, names: Sequence[str]) -> None:
        """Open the collections up front, so worker threads never race to open one."""
        self.source.prepare_search(names)

    def query(self, q: Query, k: int) -> list[str]:
        return self.source.search(q.collection, q.vector, k, q.where)

    def count(self, name: str) -> int:
        return self.source.count(name)

    def ping(self) -> None:
        self.source.heartbeat()

    def engine(self) -> dict[str, Any]:
        identity = self.source.identity()
        version = identity.client_version
        if identity.kind == "server":
            return {
                "store": "chroma",
                "kind": "server",
                "where": self.source.describe(),
                "description": f"Chroma server at {identity.location} "
                f"(server version {identity.server_version or 'unknown'}, chromadb client {version}), over HTTP",
                "client_version": version,
                "server_version": identity.server_version,
                "local_mode": False,
            }
        return {
            "store": "chroma",
            "kind": "embedded persistent client",
            "where": self.source.describe(),
            "description": f"chromadb {version} embedded (PersistentClient, HNSW approximate search) in this "
            f"process, on a scratch copy of {identity.location} (the live directory is never opened)",
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
    "QdrantStore",
    "Store",
    "StoreKey",
    "short_error",
]
