"""The monitor's workload: which collections are measured and the queries run against both stores.

* :func:`monitored_collections` decides which collections are measured: those the run's migration
  checkpoint lists (queried by alias or target name), else every source collection under its own name.
* :func:`build_queries` draws the queries of one collection from its own records, deterministically:
  stored vectors and perturbed copies of them, optionally with an equality filter on one metadata key
  whose value is drawn from the data (:func:`equality_filter`, the app wrapper's translation).

The stores that run the queries are in :mod:`runbook_lib.steps.monitor.stores`.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from qdrant_client import models

from runbook_lib.chroma.base import ChromaReader
from runbook_lib.core.filters import to_qdrant_filter
from runbook_lib.errors import TargetError
from runbook_lib.qdrant.base import QdrantStore

log = logging.getLogger(__name__)

#: Perturbed queries add Gaussian noise of this size relative to the vector's RMS component.
PERTURBATION = 0.1

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
    source: ChromaReader,
    target: QdrantStore,
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
            if unknown := [n for n in requested if n not in checkpoint and n not in known]:
                source.resolve_collections(unknown)  # a ConfigError listing what exists
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


def _target_count(target: QdrantStore, name: str) -> int | None:
    try:
        return target.count(name)
    except TargetError:
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
    source: ChromaReader,
    row: MonitoredCollection,
    *,
    queries: int,
    warmup: int,
    seed: int,
    filter_key: str = "",
    flat: bool = False,
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
            qdrant_filter = equality_filter(filter_key, value, flat=flat)
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


def equality_filter(key: str, value: Scalar, *, flat: bool = False) -> models.Filter:
    """The Qdrant filter that selects what Chroma's ``where={key: value}`` selects (the app wrapper's
    translation, so the monitor and the app filter the same way); ``flat``: the run's payload layout keeps metadata
    keys at the top level (``llamaindex``)."""
    return to_qdrant_filter({key: value}, flat=flat)


__all__ = [
    "PERTURBATION",
    "MonitoredCollection",
    "Query",
    "build_queries",
    "collection_seed",
    "equality_filter",
    "monitored_collections",
]
