"""The Qdrant side of :class:`~runbook_lib.app.client.VectorDBClient`: searches a collection the migration wrote.

Points carry the Chroma record in their payload (:mod:`runbook_lib.core.mapping`); scores are turned back
into Chroma's distances for the collection's space, so results read the same as before the migration.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from qdrant_client import models

import runbook_lib.app.qdrant_writes as qdrant_writes
from runbook_lib.app.errors import UnknownCollectionError, WriteDimensionMismatchError, closed_client_error
from runbook_lib.app.qdrant_writes import is_missing
from runbook_lib.app.records import Field, GetResult, Records, WriteKind
from runbook_lib.app.results import CollectionInfo, SearchResult, check_dimension
from runbook_lib.config.settings import QdrantSettings
from runbook_lib.core.document_filters import to_qdrant_prefilter
from runbook_lib.core.filters import to_qdrant_filter
from runbook_lib.core.layouts import Layout
from runbook_lib.core.mapping import (
    QDRANT_TO_CHROMA_SPACE,
    qdrant_distance,
    qdrant_score_to_chroma_distance,
)
from runbook_lib.errors import ConfigError, TargetError
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.qdrant.connect import holds_storage, open_target


class QdrantBackend:
    """One lazily opened Qdrant target (:class:`~runbook_lib.qdrant.base.QdrantStore`) and what it knows about each
    collection. Thread-safe."""

    def __init__(self, settings: QdrantSettings, layout: Layout | None = None) -> None:
        self.settings = settings
        self.layout = layout or Layout()  # the payload layout the collections were migrated with
        self._lock = threading.RLock()
        self._closed = False
        self._target: QdrantStore | None = None
        self._info: dict[str, CollectionInfo] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> str:
        return self.settings.describe()

    def close(self) -> None:
        """Release the connection (and the lock on ``QDRANT_PATH`` in local mode). Idempotent."""
        with self._lock:
            self._closed = True
            target, self._target = self._target, None
            self._info.clear()
        if target is not None:
            target.close()

    # --- search --------------------------------------------------------------------------------
    def search(
        self, collection: str, query: list[float], limit: int, qdrant_filter: models.Filter | None
    ) -> SearchResult:
        target = self._open_target()
        info = self._collection_info(target, collection)
        check_dimension(collection, info, query)
        try:
            points = target.query(collection, query, limit=limit, query_filter=qdrant_filter, with_payload=True)
        except TargetError as exc:
            if is_missing(target, collection):
                self._forget(collection)  # deleted since it was described
                raise UnknownCollectionError(collection, target.describe()) from exc
            raise
        space = info.space or "l2"
        rows = []
        for point in points:
            cid, document, metadata, uri = self.layout.from_payload(point.payload or {})
            distance = float(qdrant_score_to_chroma_distance(float(point.score), space))
            rows.append((distance, str(cid if cid is not None else point.id), document, dict(metadata or {}), uri))
        rows.sort(key=lambda row: row[0])  # stable: Qdrant's order is kept for equal distances
        return SearchResult(
            ids=[r[1] for r in rows],
            documents=[r[2] for r in rows],
            metadatas=[r[3] for r in rows],
            distances=[r[0] for r in rows],
            uris=[r[4] for r in rows],
        )

    # --- writes and reads by id (runbook_lib.app.qdrant_writes) --------------------------------
    def write(self, collection: str, kind: WriteKind, recs: Records) -> None:
        """An add, upsert or update with Chroma's semantics, written as the migration writes points (floats as
        Chroma stores them)."""
        recs = recs.as_chroma_stores()
        target = self._open_target()
        info = self._collection_info(target, collection)
        if recs.dimension is not None and info.dimension is not None and recs.dimension != info.dimension:
            raise WriteDimensionMismatchError(collection, info.dimension, recs.dimension)
        self._forgetting(
            collection, qdrant_writes.write, target, collection, info.space or "l2", kind, recs, self.layout
        )

    def delete(self, collection: str, ids: list[str] | None, where: Mapping[str, Any] | None) -> None:
        qdrant_filter = self.filter(where)
        target = self._open_target()
        self._collection_info(target, collection)  # UnknownCollectionError before anything else
        self._forgetting(collection, qdrant_writes.delete, target, collection, ids, qdrant_filter)

    def get(
        self,
        collection: str,
        ids: list[str] | None,
        where: Mapping[str, Any] | None,
        limit: int | None,
        offset: int,
        include: Sequence[Field],
        where_document: Mapping[str, Any] | None = None,
    ) -> GetResult:
        """Records by id or filter; ``where_document`` narrows the read with its Qdrant prefilter only (every record
        it matches passes: the caller applies the exact predicate)."""
        qdrant_filter = self.filter(where)
        prefilter = to_qdrant_prefilter(where_document, self.layout.document_path) if where_document else None
        if prefilter is not None:
            qdrant_filter = prefilter if qdrant_filter is None else models.Filter(must=[qdrant_filter, prefilter])
        target = self._open_target()
        self._collection_info(target, collection)
        return self._forgetting(  # type: ignore[no-any-return]
            collection, qdrant_writes.get, target, collection, ids, qdrant_filter, limit, offset, include, self.layout
        )

    def filter(self, where: Mapping[str, Any] | None) -> models.Filter | None:
        """A Chroma ``where`` filter on the metadata as this backend's payload layout stores it."""
        return to_qdrant_filter(where, flat=self.layout.name == "llamaindex") if where else None

    def count(self, collection: str) -> int:
        target = self._open_target()
        return self._forgetting(collection, qdrant_writes.count, target, collection)  # type: ignore[no-any-return]

    def _forgetting(self, collection: str, fn: Any, /, *args: Any) -> Any:
        """``fn(*args)``, forgetting what is cached about ``collection`` when it turns out to be gone."""
        try:
            return fn(*args)
        except UnknownCollectionError:
            self._forget(collection)
            raise

    def _open_target(self) -> QdrantStore:
        with self._lock:
            if self._closed:
                raise closed_client_error(self.describe())
            if self._target is None:
                qs = self.settings
                if not holds_storage(qs):
                    variable, folder = (
                        ("QDRANT_PATH", qs.path) if qs.kind == "local" else ("QDRANT_EDGE_PATH", qs.edge_path)
                    )
                    raise ConfigError(
                        f"{variable} points to {folder}, which holds no Qdrant storage: point {variable} at the "
                        "directory the migration wrote, or set QDRANT_URL to use a Qdrant server."
                    )
                self._target = open_target(qs, fail_fast=True)  # ConfigError when unreachable
            return self._target

    def _collection_info(self, target: QdrantStore, collection: str) -> CollectionInfo:
        cached = self._info.get(collection)
        if cached is not None:
            return cached
        try:
            described = target.describe_collection(collection)
        except TargetError as exc:
            if is_missing(target, collection):
                raise UnknownCollectionError(collection, target.describe()) from exc
            raise
        distance = described.distance
        space = QDRANT_TO_CHROMA_SPACE.get(distance)
        if space is None:
            raise TargetError(
                f"Qdrant collection {collection!r} uses {distance} distance, which has no ChromaDB equivalent: "
                "the migration creates Cosine, Euclid or Dot collections."
            )
        info = CollectionInfo(dimension=described.size, space=space)
        with self._lock:
            self._info[collection] = info
        return info

    def _forget(self, collection: str) -> None:
        with self._lock:
            self._info.pop(collection, None)

    # --- collections ----------------------------------------------------------------------------
    def collection_names(self) -> list[str]:
        return self._open_target().collection_names()

    def create_collection(self, collection: str, space: str, dimension: int) -> None:
        """A collection as the migration creates it: one unnamed float32 vector, ``space``'s distance."""
        self._open_target().create_collection(
            collection, size=dimension, distance=qdrant_distance(space), defer_indexing=False
        )

    def delete_collection(self, collection: str) -> None:
        target = self._open_target()
        if collection not in target.collection_names():
            raise UnknownCollectionError(collection, target.describe())
        self._forget(collection)
        target.delete_collection(collection)

    # --- health probes: (number of collections, seconds the listing took) ----------------------
    def probe_local(self) -> tuple[int, float]:
        """List the collections through this backend's own connection (opening it if needed)."""
        target = self._open_target()
        started = time.perf_counter()
        count = len(target.collection_names())
        return count, time.perf_counter() - started

    def probe_server(self, timeout_s: float) -> tuple[int, float]:
        """List the collections through a fresh connection whose requests time out after ``timeout_s`` (rounded
        up)."""
        timeout = max(1, math.ceil(timeout_s))
        with open_target(self.settings.model_copy(update={"timeout_s": float(timeout)}), fail_fast=True) as target:
            started = time.perf_counter()
            count = len(target.collection_names())
            return count, time.perf_counter() - started
