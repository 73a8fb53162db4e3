"""The two stores the monitor compares, and what it says about them.

* :class:`ChromaStore` and :class:`QdrantStore` run one query and return the top-k Chroma ids. Both ask
  for what a RAG app asks for (:data:`RETURNED_FIELDS`: ids, scores, documents and metadata). They never
  retry: a query that raises is an error for the monitor to count, not something to hide.
* Each store describes the engine it talks to (:meth:`Store.engine`); :data:`LOCAL_MODE_DISCLAIMER` is what
  the result says whenever Qdrant is qdrant-client's embedded local mode (a stand-in, not the Qdrant engine).
* :data:`STORES` and :data:`STORE_LABELS` fix the order and names of the two sides everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from typing import Any, Literal, Protocol

from runbook_lib.chroma.base import ChromaReader
from runbook_lib.core.mapping import PAYLOAD_ID_KEY
from runbook_lib.qdrant import base as qdrant_base
from runbook_lib.steps.monitor.workload import Query

StoreKey = Literal["chroma", "qdrant"]
STORES: tuple[StoreKey, StoreKey] = ("chroma", "qdrant")
STORE_LABELS: dict[str, str] = {"chroma": "Chroma", "qdrant": "Qdrant"}

#: What each query returns, in both stores (the same work a RAG app asks for).
RETURNED_FIELDS = "ids, scores/distances, documents and metadata"

#: How the monitor names each kind of Qdrant target (chart labels, the engines table).
QDRANT_KIND_LABELS: dict[str, str] = {
    "server": "server",
    "edge": "embedded engine (Qdrant Edge)",
    "local": "embedded local mode",
}

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
    """The Qdrant target, through the Qdrant-side interface (a server over REST or gRPC, Qdrant Edge, or
    qdrant-client's embedded local mode)."""

    key: StoreKey = "qdrant"

    def __init__(self, target: qdrant_base.QdrantStore) -> None:
        self.target = target

    def query(self, q: Query, k: int) -> list[str]:
        points = self.target.query(
            q.target, q.vector, limit=k, query_filter=q.qdrant_filter, with_payload=True, retry=False
        )
        return [str((p.payload or {}).get(PAYLOAD_ID_KEY, p.id)) for p in points]

    def count(self, name: str) -> int:
        return self.target.count(name)

    def ping(self) -> None:
        self.target.ping()

    def engine(self) -> dict[str, Any]:
        identity = self.target.identity()
        client_version = _version("qdrant-client")
        where = self.target.describe()
        kind = QDRANT_KIND_LABELS[self.target.capabilities.kind]
        if not self.target.capabilities.engine:
            return {
                "store": "qdrant",
                "kind": kind,
                "where": where,
                "description": f"qdrant-client {client_version} embedded local mode at {identity.get('path')}: "
                "pure-Python/NumPy exact (brute-force) search in this process, NOT the Qdrant engine",
                "client_version": client_version,
                "server_version": None,
                "local_mode": True,
                "disclaimer": LOCAL_MODE_DISCLAIMER,
            }
        versions = [
            f"{key.replace('_', ' ')} {v or 'unknown'}" for key, v in identity.items() if key.endswith("version")
        ]
        details = ", ".join([*versions, *([identity["transport"]] if identity.get("transport") else [])])
        return {
            "store": "qdrant",
            "kind": kind,
            "where": where,
            "description": f"{where} ({details}), default HNSW search",
            "client_version": client_version,
            "server_version": identity.get("server_version"),
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
    "QDRANT_KIND_LABELS",
    "RETURNED_FIELDS",
    "STORES",
    "STORE_LABELS",
    "ChromaStore",
    "QdrantStore",
    "Store",
    "StoreKey",
    "short_error",
]
