"""Everything the migration can check before it changes anything (SPEC: exit 2 means nothing changed).

Run before the backup is made and before the first point is written: the requested collections exist,
no two Chroma ids share a point id, every target collection agrees with ``on_existing`` (and, when
kept, has the right shape), and ``cutover=alias`` has no name clash. The id snapshot taken here is the
one the copy loop uses, so the check costs no extra pass over the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runbook_lib.chroma.base import ChromaCatalog, ChromaReader
from runbook_lib.core.layouts import get_layout
from runbook_lib.core.mapping import id_collisions, id_scheme
from runbook_lib.core.plan import PlanEntry, plan_collection, resolve_collections, target_names
from runbook_lib.errors import ConfigError, DimensionMismatchError, ExistingCollectionError, TargetError
from runbook_lib.qdrant.base import QdrantStore

#: At most this many colliding pairs are named in the error.
_SHOWN_PAIRS = 5


@dataclass
class Planned:
    """One collection to migrate: its plan and its id snapshot (sorted, as the checkpoint counts them)."""

    entry: PlanEntry
    ids: list[str]


def collision_error(collection: str, pairs: list[tuple[str, str]]) -> ConfigError:
    shown = "; ".join(f"{a!r} and {b!r}" for a, b in pairs[:_SHOWN_PAIRS])
    more = f" (and {len(pairs) - _SHOWN_PAIRS} more pairs)" if len(pairs) > _SHOWN_PAIRS else ""
    return ConfigError(
        f"Collection {collection!r} has distinct Chroma ids that would share one Qdrant point: {shown}{more}. "
        "A canonical UUID id is kept as the point id and any other id is hashed with uuid5(NAMESPACE_URL, id), "
        "so an id equal to another id's hash collides: rename one id of each pair in ChromaDB. Nothing was changed.",
        collection=collection,
        pairs=pairs,
    )


def _names_only(source: ChromaCatalog, name: str, ids: list[str], *, run_id: str, cutover: str) -> PlanEntry:
    """A plan entry with what a catalog knows (no distance yet): enough to check names and ``on_existing``."""
    tname, alias = target_names(name, run_id, cutover)
    dimension = source.dimension(name) if ids else None
    return PlanEntry(name, len(ids), dimension, "?", "?", tname, alias, id_scheme(ids) if ids else "n/a (empty)")


def check_shape(target: QdrantStore, entry: PlanEntry) -> None:
    """A kept target collection must have the source's dimension and distance."""
    found = target.describe_collection(entry.target)
    if found.size != entry.dimension:
        raise DimensionMismatchError(entry.target, int(entry.dimension or 0), found.size)
    if found.distance != entry.distance:
        raise TargetError(
            f"Qdrant collection {entry.target!r} uses distance {found.distance} but the Chroma collection "
            f"{entry.source!r} uses {entry.space} (= {entry.distance}): recreate it with on_existing=recreate."
        )


def existing_collection_error(name: str) -> ExistingCollectionError:
    return ExistingCollectionError(
        f"Qdrant already has a collection {name!r} that this run did not create: pass "
        "on_existing=resume to add to it (same ids overwrite), on_existing=recreate to delete and "
        "rebuild it, or choose cutover=alias to write a new versioned collection.",
        collection=name,
    )


def check_target(
    target: QdrantStore, entry: PlanEntry, state: Mapping[str, Any], on_existing: str, *, shape: bool = True
) -> None:
    """What ``_ensure_target`` will do with this collection is allowed (read-only)."""
    if entry.dimension is None or not target.exists(entry.target):
        return  # empty source collections are skipped; a missing target is created
    if state.get("created_by_run") or on_existing == "resume":
        if shape:
            check_shape(target, entry)
    elif on_existing == "fail":
        raise existing_collection_error(entry.target)


def check_layout(source: ChromaReader, name: str, ids: list[str], p: Any) -> None:
    """Every record can be carried by the run's ``payload_layout`` (one read pass, only for a framework layout): a
    ConfigError naming the first record, the key and the count, before anything is written."""
    layout = get_layout(getattr(p, "payload_layout", "runbook"), getattr(p, "null_documents", "refuse"))
    if layout.carries_every_record:
        return
    problems: list[str] = []
    for batch in source.iter_batches(name, max(int(getattr(p, "batch_size", 256)), 256), ids=ids):
        for rid, doc, meta, uri in zip(batch.ids, batch.documents, batch.metadatas, batch.uris, strict=True):
            problem = layout.check(rid, doc, meta, uri)
            if problem:
                problems.append(problem)
    if problems:
        raise ConfigError(
            f"Collection {name!r}: the {layout.name} payload layout cannot carry {len(problems):,} record(s); first: "
            f"{problems[0]}. Choose another payload_layout or fix the records; nothing was changed.",
            collection=name,
        )


def preflight(
    source: ChromaCatalog,
    target: QdrantStore,
    p: Any,
    *,
    run_id: str,
    states: Mapping[str, Mapping[str, Any]],
) -> list[Planned]:
    """Check every requested collection, in order; raise before anything is written. ``states`` is the
    checkpoint's per-collection state (a collection this run created may be resumed whatever ``on_existing``).
    A ``source`` that is only a :class:`~runbook_lib.chroma.base.ChromaCatalog` (names and ids, such as the
    read-only :class:`~runbook_lib.chroma.catalog.Catalog`) leaves the distance, dimension and layout checks to
    the pass over the backup."""
    names = resolve_collections(source.collection_names(), p.collections)
    if p.cutover == "alias":
        existing = set(target.collection_names())
        clash = [n for n in names if n in existing]
        if clash:
            raise ExistingCollectionError(
                f"Qdrant has a collection named {clash[0]!r}, so cutover=alias cannot create an alias of "
                "that name: delete or rename that collection, or migrate with cutover=plain and "
                "on_existing=resume or recreate.",
                collection=clash[0],
            )
    planned: list[Planned] = []
    for name in names:
        ids = source.snapshot_ids(name)
        pairs = id_collisions(ids)
        if pairs:
            raise collision_error(name, pairs)
        if isinstance(source, ChromaReader):
            entry = plan_collection(source, name, run_id=run_id, cutover=p.cutover, ids=ids)
        else:
            entry = _names_only(source, name, ids, run_id=run_id, cutover=p.cutover)
        check_target(target, entry, states.get(name, {}), p.on_existing, shape=isinstance(source, ChromaReader))
        done = states.get(name, {}).get("status") == "done"
        if isinstance(source, ChromaReader) and entry.dimension is not None and not done:
            check_layout(source, name, ids, p)
        planned.append(Planned(entry=entry, ids=ids))
        source.release()  # memory follows the largest collection, not the database
    return planned


def check_capabilities(target: QdrantStore, p: Any) -> None:
    """Refuse, before anything is written, what the target cannot do: aliases (``cutover=alias``) and cluster
    settings on a target without them (Qdrant Edge has neither; local mode has no cluster)."""
    caps = target.capabilities
    if p.cutover == "alias" and not caps.aliases:
        raise ConfigError(
            f"{target.describe()} has no collection aliases, so cutover=alias cannot work: migrate with "
            "-p cutover plain, or to a Qdrant server (QDRANT_URL)."
        )
    cluster = [n for n in ("shard_number", "replication_factor", "write_consistency_factor") if getattr(p, n, None)]
    if cluster and not caps.cluster:
        raise ConfigError(
            f"{target.describe()} has no shards or replicas, so {', '.join(cluster)} cannot be set: leave "
            f"{' and '.join(cluster)} at 0, or migrate to a Qdrant cluster (QDRANT_URL)."
        )
