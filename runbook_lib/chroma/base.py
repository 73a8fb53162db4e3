"""The Chroma-side interface: what the steps, the sync, the monitor and the app ask of a ChromaDB source.

Two protocols, the way :mod:`runbook_lib.qdrant.base` puts every Qdrant behind one: :class:`ChromaCatalog` (names,
ids and dimensions: what the checks before a copy need, answered from SQLite by
:class:`~runbook_lib.chroma.catalog.Catalog` without copying anything) and :class:`ChromaReader` (everything a step
reads: collections with their metadata and configuration, counts, records by id, searches, identity), implemented
by :class:`~runbook_lib.chroma.source.ChromaSource` over a persistent directory's scratch copy or a Chroma server, and
by :class:`~runbook_lib.chroma.cloud.CloudSource` over Chroma Cloud (within its quotas, from a snapshot it pages).
:func:`runbook_lib.chroma.connect.open_source` picks the implementation: a new kind of source is one more there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

#: What kind of ChromaDB a source reads: a persistent directory (through a scratch copy) or a Chroma server.
SourceKind = Literal["persistent", "server"]


@dataclass
class RecordBatch:
    """Records of one collection, aligned by position."""

    ids: list[str]
    embeddings: np.ndarray  # (n, dim) float32
    documents: list[str | None]
    metadatas: list[dict[str, Any] | None]
    uris: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class CollectionInfo:
    """What the dry run reports about one source collection."""

    name: str
    count: int
    space: str
    dimension: int | None
    metadata: dict[str, Any]
    configuration: dict[str, Any]
    embedding_function: str | None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SourceIdentity:
    """What a source is, for a run's record and the monitor's description (never a secret)."""

    kind: SourceKind
    #: The server's URL, or the persistent directory the source reads (from a scratch copy).
    location: str
    #: The chromadb package this process reads with.
    client_version: str
    #: The server's own version (servers only; None when it did not say).
    server_version: str | None = None


@runtime_checkable
class ChromaCatalog(Protocol):
    """Collection names, ids and dimensions of one tenant/database."""

    def collection_names(self) -> list[str]:
        """Every collection, sorted."""
        ...

    def snapshot_ids(self, name: str) -> list[str]:
        """Every id of the collection, sorted (the order a migration counts and resumes in)."""
        ...

    def dimension(self, name: str) -> int | None:
        """The collection's vector dimension, or None when it is empty."""
        ...

    def collection_id(self, name: str) -> str:
        """The collection's UUID (chromadb's ``Collection.id``): a collection deleted and re-created has another."""
        ...

    def release(self) -> None:
        """Free what was loaded for the collections read so far (memory follows the largest collection)."""
        ...


@runtime_checkable
class ChromaReader(ChromaCatalog, Protocol):
    """A ChromaDB source, read only; use as a context manager. Collections are looked up, never created: an
    unknown one is a :class:`~runbook_lib.errors.SourceError` listing what exists. Transient errors are retried,
    except in :meth:`search` (the monitor counts them)."""

    #: True when opening it upgraded an older chromadb's database (in the scratch copy, never the live directory).
    upgraded_on_open: bool

    def __enter__(self) -> ChromaReader: ...
    def __exit__(self, *exc: object) -> None: ...
    def close(self) -> None: ...

    def describe(self) -> str:
        """Where the source is, for messages."""
        ...

    def read_summary(self) -> str | None:
        """How the source was read, when a step's result should say it (Chroma Cloud: within its quotas, paged
        until a pass found nothing new, requests and throttled answers); None when there is nothing to add."""
        ...

    def quotas(self) -> dict[str, Any] | None:
        """The source's request quotas and, per collection read so far, the requests and seconds reading it took
        and will take (Chroma Cloud); None when the source has no quotas."""
        ...

    def identity(self) -> SourceIdentity: ...

    def heartbeat(self) -> None:
        """Raise unless the source answers (not retried)."""
        ...

    def resolve_collections(self, requested: Sequence[str] | None) -> list[str]:
        """All collections when ``requested`` is empty, else exactly those: a ConfigError names an unknown one."""
        ...

    def info(self, name: str) -> CollectionInfo:
        """Count, distance space, dimension, metadata and configuration of a collection."""
        ...

    def count(self, name: str) -> int: ...

    def space(self, name: str) -> str:
        """The collection's distance space (``cosine``, ``l2`` or ``ip``), from its metadata or configuration."""
        ...

    def embedding_function(self, name: str) -> dict[str, Any] | None:
        """The embedding function Chroma recorded in the collection's configuration, ``{"name", "config"}`` as
        chromadb's registry rebuilds it; None when there is none (or only a legacy one)."""
        ...

    def other_databases(self) -> list[dict[str, Any]]:
        """Tenants/databases present besides the one read (they are not migrated)."""
        ...

    def fetch(self, name: str, ids: Sequence[str], *, expected_dim: int | None = None) -> RecordBatch:
        """Records for ``ids``, in that order; a missing id or another dimension raises."""
        ...

    def iter_batches(
        self, name: str, batch_size: int, *, ids: Sequence[str] | None = None, expected_dim: int | None = None
    ) -> Iterator[RecordBatch]:
        """Every record (or those of ``ids``), ``batch_size`` at a time, in id-snapshot order."""
        ...

    def metadata_types(self, name: str, ids: Sequence[str], batch_size: int) -> tuple[dict[str, set[str]], int]:
        """(metadata key -> the value types found, records with a document) over ``ids``, reading metadata and
        documents only (no vectors): what the payload index plan needs."""
        ...

    def present_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` the collection holds."""
        ...

    def prepare_search(self, names: Sequence[str]) -> None:
        """Open these collections now, so searches from several threads never race to open one."""
        ...

    def search(self, name: str, vector: Sequence[float], k: int, where: Mapping[str, Any] | None) -> list[str]:
        """The ids of the ``k`` nearest records, best first, fetched with documents, metadata and distances (what a
        RAG app asks for). Not retried: any failure raises."""
        ...

    def query_ids(self, name: str, queries: np.ndarray, k: int) -> list[list[str]] | str:
        """Ids of the ``k`` nearest records per query from Chroma's approximate index, or why they are unavailable
        (``"unavailable: ..."``). Never raises: the answers are information only."""
        ...
