"""A target collection shaped for the app before its first point: payload indexes and HNSW parameters.

Qdrant's bulk-load order is collection, payload indexes, points (filter-aware HNSW links are built only for
indexes that exist when the graph is built). The plan is :mod:`runbook_lib.core.payload_indexes`, from the
metadata values of the snapshot being copied; the HNSW parameters are Chroma's own (``max_neighbors`` ->
``m``, ``ef_construction`` -> ``ef_construct``, from the collection configuration or the legacy ``hnsw:*``
metadata).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runbook_lib.chroma.base import ChromaReader
from runbook_lib.core.layouts import Layout
from runbook_lib.core.payload_indexes import PayloadIndex, plan_payload_indexes
from runbook_lib.qdrant.base import QdrantStore

#: Chroma's HNSW settings and the Qdrant ones they become: (configuration key, legacy metadata key, Qdrant key).
_HNSW_KEYS = (("max_neighbors", "hnsw:M", "m"), ("ef_construction", "hnsw:construction_ef", "ef_construct"))


def hnsw_params(configuration: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, int]:
    """The collection's HNSW build parameters for Qdrant (only those Chroma states)."""
    hnsw = configuration.get("hnsw") if isinstance(configuration.get("hnsw"), Mapping) else {}
    found: dict[str, int] = {}
    for config_key, legacy_key, qdrant_key in _HNSW_KEYS:
        value = (hnsw or {}).get(config_key, metadata.get(legacy_key))
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            found[qdrant_key] = value
    return found


def plan_indexes(
    source: ChromaReader, name: str, ids: Sequence[str], choice: str, layout: Layout, batch_size: int
) -> list[PayloadIndex]:
    """The payload indexes for collection ``name`` from the metadata of the records being copied."""
    key_types, documents = source.metadata_types(name, ids, batch_size)
    indexes, _ = plan_payload_indexes(
        key_types,
        choice,
        collection=name,
        flat=layout.flat,
        document_path=layout.document_path,
        has_documents=documents > 0,
    )
    return indexes


def create_indexes(target: QdrantStore, collection: str, indexes: Sequence[PayloadIndex]) -> None:
    """Create each planned index (idempotent: an index that exists with the same type is left as it is)."""
    existing = target.payload_indexes(collection) or {}
    for index in indexes:
        if existing.get(index.path) != index.index_type:
            target.create_payload_index(collection, index.path, index.index_type)


def index_problems(target: QdrantStore, collection: str, planned: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """What is wrong with the planned indexes of ``collection`` as the target reports them ([] when every one
    exists with its type), or None when the target does not report payload indexes (local mode)."""
    reported = target.payload_indexes(collection)
    if reported is None:
        return None
    problems = []
    for index in planned:
        found = reported.get(index["path"])
        if found is None:
            problems.append(f"{collection}: no payload index on {index['path']!r} (planned {index['index_type']})")
        elif found != index["index_type"]:
            problems.append(
                f"{collection}: the payload index on {index['path']!r} is {found}, planned {index['index_type']}"
            )
    return problems
