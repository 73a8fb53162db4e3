"""The Qdrant-side interface: what the steps, the sync, the monitor and the app ask of Qdrant.

One protocol, implementations by capability (as qdrant-client puts ``QdrantLocal`` and ``QdrantRemote`` behind
``QdrantBase``): :class:`~runbook_lib.qdrant.target.QdrantTarget` over qdrant-client (a server, Qdrant Cloud, a
cluster, or qdrant-client's embedded local mode) and :class:`~runbook_lib.qdrant.edge.EdgeTarget` over Qdrant Edge
(the engine in-process, one shard per collection). Nothing outside ``runbook_lib.qdrant`` holds a raw client.

The data types are qdrant-client's models (``models.Filter``, ``models.Record``, ``models.ScoredPoint``): every
implementation speaks them, whatever its own wire or in-process types are. Point ids are strings (UUIDs).
:class:`Capabilities` says what a target can do, so callers branch on a capability, never on a kind of target.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import EllipsisType
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from qdrant_client import models

from runbook_lib.core.filters import payload_path
from runbook_lib.core.mapping import PAYLOAD_ID_KEY as _ID_KEY

#: What kind of Qdrant a target is: a server (also Cloud, a cluster), Qdrant Edge, or qdrant-client's local mode.
TargetKind = Literal["server", "edge", "local"]

#: Payload index types the runbook creates: one per metadata key, typed from the values found, and the text index.
IndexType = Literal["keyword", "integer", "float", "bool", "text"]


@dataclass(frozen=True)
class Capabilities:
    """What a target supports; a step asks for a capability and refuses in one sentence when it is missing."""

    kind: TargetKind
    #: Collection aliases (``cutover=alias``): servers and local mode; not Edge.
    aliases: bool
    #: Shards, replicas, write consistency: servers only.
    cluster: bool
    #: The engine's own filter, text-match, payload-index and HNSW code (server, Edge); local mode is a stand-in.
    engine: bool
    #: Payload indexes are recorded and reported (``payload_schema``): server and Edge; local mode ignores them.
    payload_indexes: bool
    #: Approximate (HNSW) search exists beside exact search: server and Edge; local mode always scans.
    hnsw: bool
    #: Several upserts in flight at once overlap a server's round trips (``workers``); in-process targets write
    #: one batch at a time.
    concurrent_writes: bool = False


@dataclass(frozen=True)
class TargetCollection:
    name: str
    size: int
    distance: str  # "Cosine" | "Euclid" | "Dot"
    points: int


@runtime_checkable
class QdrantStore(Protocol):
    """A Qdrant target. Use as a context manager. Every method raises :class:`~runbook_lib.errors.TargetError`
    (one sentence naming the collection and what failed) on a permanent error; transient errors are retried."""

    capabilities: Capabilities
    #: Reads ask every replica (``consistency=all``) when True (verify); meaningful on a cluster only.
    strong_reads: bool

    def __enter__(self) -> QdrantStore: ...
    def __exit__(self, *exc: object) -> None: ...
    def close(self) -> None: ...
    def describe(self) -> str:
        """Where the target is, for messages (never a secret)."""
        ...

    def identity(self) -> dict[str, Any]:
        """What identifies this target for a run's record (kind, URL or path, server version; no secret)."""
        ...

    def ping(self) -> None:
        """Raise :class:`~runbook_lib.errors.TargetError` unless the target answers."""
        ...

    # --- collections and aliases ---------------------------------------------------------------
    def collection_names(self) -> list[str]: ...
    def aliases(self) -> dict[str, str]:
        """alias name -> collection name ({} where aliases do not exist)."""
        ...

    def exists(self, name: str) -> bool:
        """True when a collection or an alias of that name exists."""
        ...

    def describe_collection(self, name: str) -> TargetCollection: ...
    def create_collection(
        self,
        name: str,
        *,
        size: int,
        distance: str,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        defer_indexing: bool = True,
        hnsw: dict[str, int] | None = None,
    ) -> int | None:
        """Create a collection for one unnamed float32 vector per point; ``hnsw`` carries ``m`` and
        ``ef_construct`` when given. Returns the indexing threshold to restore after a deferred bulk load."""
        ...

    def indexing_threshold(self, name: str) -> int | None: ...
    def finish_bulk_load(
        self, name: str, *, restore_to: int | EllipsisType | None = ..., progress: Callable[[str], None] | None = None
    ) -> int | None:
        """After a bulk load: restore deferred indexing (server) or build the HNSW index (Edge's ``optimize``)."""
        ...

    def bulk_writes(self, name: str) -> AbstractContextManager[Callable[[], None]]:
        """Yields ``flush``: call it before recording a batch as written; after it returns the batch is durable."""
        ...

    def delete_collection(self, name: str) -> None: ...
    def set_alias(self, alias: str, collection: str) -> None: ...
    def delete_alias(self, alias: str) -> None: ...

    # --- payload indexes -----------------------------------------------------------------------
    def create_payload_index(self, name: str, field: str, index_type: IndexType) -> None: ...
    def payload_indexes(self, name: str) -> dict[str, str] | None:
        """field -> index type as the target reports it; None where the target does not report indexes."""
        ...

    def strict_mode(self, name: str) -> models.StrictModeConfigOutput | None:
        """The collection's strict-mode settings as the target reports them; None where the target has no strict
        mode (Qdrant Edge, local mode: only a server refuses calls by it)."""
        ...

    # --- points --------------------------------------------------------------------------------
    def count(self, name: str, query_filter: models.Filter | None = None) -> int:
        """The exact number of points (matching the filter)."""
        ...

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray | Sequence[Sequence[float]],
        payloads: Sequence[dict[str, Any]],
        *,
        batch_label: str = "",
    ) -> None:
        """Upsert one batch and wait until it is applied."""
        ...

    def overwrite_payloads(self, name: str, payloads: dict[str, dict[str, Any]]) -> None:
        """Replace the whole payload of each point (id -> payload), vectors untouched."""
        ...

    def delete_points(
        self, name: str, ids: Sequence[str] | None = None, query_filter: models.Filter | None = None
    ) -> None:
        """Delete the points with these ids, or matching the filter, or both (ids that match)."""
        ...

    def scroll(
        self,
        name: str,
        *,
        limit: int,
        offset: Any = None,
        with_vectors: bool = True,
        with_payload: bool | Sequence[str] = True,
        query_filter: models.Filter | None = None,
    ) -> tuple[list[models.Record], Any]:
        """One page in point-id order, and the offset of the next page (None at the end)."""
        ...

    def retrieve(
        self, name: str, ids: Sequence[str], *, with_vectors: bool = True, with_payload: bool | Sequence[str] = True
    ) -> list[models.Record]: ...
    def iter_chroma_ids(self, name: str, *, page: int) -> Iterator[tuple[str, Any]]:
        """(point id, payload ``chroma_id`` or None) for every point, ``page`` points per request."""
        ...

    def query(
        self,
        name: str,
        vector: Sequence[float],
        *,
        limit: int,
        exact: bool = False,
        query_filter: models.Filter | None = None,
        with_payload: bool = True,
        with_vectors: bool = False,
        retry: bool = True,
    ) -> list[models.ScoredPoint]:
        """Nearest neighbours; ``exact`` is a full scan (the HNSW index otherwise, where there is one);
        ``retry=False`` for measurements that count an error instead of hiding it."""
        ...


def scroll_chroma_ids(store: QdrantStore, name: str, *, page: int) -> Iterator[tuple[str, Any]]:
    """:meth:`QdrantStore.iter_chroma_ids` over :meth:`QdrantStore.scroll`, for every implementation: the
    ``chroma_id`` payload key only, no vectors, ``page`` points per request."""
    offset: Any = None
    while True:
        records, offset = store.scroll(name, limit=page, offset=offset, with_vectors=False, with_payload=[_ID_KEY])
        for r in records:
            yield str(r.id), (r.payload or {}).get(_ID_KEY)
        if offset is None:
            return


def runbook_path(reported: str) -> str:
    """A payload path as a target reports it (``payload_schema``), in the runbook's spelling
    (:func:`~runbook_lib.core.filters.payload_path`: a key outside ``[A-Za-z0-9_-]`` quoted), so a planned index
    is found under the path it was created with. The engine (server, Edge) reports a key it can read bare without
    its quotes: the index created on ``metadata."clé"`` is reported as ``metadata.clé``."""
    segments: list[list[str]] = [[]]  # per segment: its key, then any array selectors ("[]", "[0]")
    for quoted, bare, selector, dot in _PATH_TOKEN.findall(reported):
        if dot:
            segments.append([])
        elif selector:
            segments[-1].append(selector)
        else:
            segments[-1].insert(0, payload_path(quoted or bare, flat=True))
    return ".".join("".join(segment) for segment in segments)


#: One token of a reported payload path: a quoted key, a bare key, an array selector or a dot.
_PATH_TOKEN = re.compile(r'"([^"]*)"|([^."\[]+)|(\[[^\]]*\])|(\.)')
