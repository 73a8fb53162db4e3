"""Chroma-shaped writes and reads on a Qdrant collection, writing exactly the points the migration writes.

A record becomes the point the migration would write for it, through the one point builder
(:func:`runbook_lib.core.points.build_points`: the SPEC point id, the layout's payload, a float32 vector
unit-normalised in a Cosine collection). Chroma's rules for existing
and missing ids (see :mod:`runbook_lib.app.records`) are applied by reading the points first: ``add`` writes only
the ids not yet there, ``update`` only those that are, and ``update``/``upsert`` merge the stored record with the
fields given. An update without embeddings rewrites the payload only: a server keeps the stored vector bit for bit
(qdrant-client's local mode re-stores its in-memory copy, which it normalised once more for Cosine: an ulp apart).

Every call goes through the Qdrant-side interface (:class:`~runbook_lib.qdrant.base.QdrantStore`), which retries
transient errors; a call that fails on a collection that does not exist raises :class:`UnknownCollectionError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qdrant_client import models

from runbook_lib.app.errors import UnknownCollectionError
from runbook_lib.app.records import Field, GetResult, Records, WriteKind, field_or, get_result, merge_metadata, page
from runbook_lib.core.layouts import Layout
from runbook_lib.core.mapping import (
    PAYLOAD_ID_KEY,
    id_collisions,
    point_id,
)
from runbook_lib.core.points import build_points
from runbook_lib.errors import TargetError
from runbook_lib.qdrant.base import QdrantStore

#: Points per scroll page when listing the ids of a collection.
SCROLL_PAGE = 1_000


def call(target: QdrantStore, collection: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, a method of ``target``; when it fails on a ``collection`` that does not exist,
    :class:`UnknownCollectionError` instead of the :class:`TargetError`."""
    try:
        return fn(*args, **kwargs)
    except TargetError as exc:
        if is_missing(target, collection):
            raise UnknownCollectionError(collection, target.describe()) from exc
        raise


def is_missing(target: QdrantStore, collection: str) -> bool:
    """Whether ``collection`` is neither a collection nor an alias (False when the target cannot even say)."""
    try:
        return not target.exists(collection)
    except TargetError:
        return False


# --- writes ----------------------------------------------------------------------------------------
def write(
    target: QdrantStore, collection: str, space: str, kind: WriteKind, recs: Records, layout: Layout | None = None
) -> None:
    """Apply an add, upsert or update with Chroma's semantics (payloads in ``layout``, default the SPEC one)."""
    layout = layout or Layout()
    collisions = id_collisions(recs.ids)
    if collisions:
        first, other = collisions[0]
        raise ValueError(f"The ids {first!r} and {other!r} map to the same Qdrant point: write them in separate calls.")
    stored = _stored(target, collection, recs.ids, with_payload=kind != "add")
    rows = [
        i
        for i, rid in enumerate(recs.ids)
        if (kind == "add" and rid not in stored) or (kind == "update" and rid in stored) or kind == "upsert"
    ]
    if not rows:
        return
    ids = [recs.ids[i] for i in rows]
    documents: list[str | None] = []
    metadatas: list[dict[str, Any]] = []
    uris: list[str | None] = []
    for i, rid in zip(rows, ids, strict=True):
        old = stored.get(rid)
        if old is None:  # a new record: the fields as given
            documents.append(field_or(recs.documents, i, None))
            metadatas.append(merge_metadata(None, field_or(recs.metadatas, i, None)))
            uris.append(field_or(recs.uris, i, None))
        else:
            _, old_document, old_metadata, old_uri = layout.from_payload(old)
            documents.append(field_or(recs.documents, i, old_document))
            metadatas.append(merge_metadata(old_metadata, field_or(recs.metadatas, i, None)))
            uris.append(field_or(recs.uris, i, old_uri))
    if recs.embeddings is not None:
        point_ids, vectors, payloads = build_points(
            ids, recs.embeddings[rows], documents, metadatas, uris, cosine=space == "cosine", layout=layout
        )
        call(target, collection, target.upsert, collection, point_ids, vectors, payloads, batch_label="an app write")
        return
    # update without embeddings: the payloads only, each point's vector untouched
    payloads_by_point = {
        point_id(rid): layout.to_payload(rid, doc, meta, uri)
        for rid, doc, meta, uri in zip(ids, documents, metadatas, uris, strict=True)
    }
    call(target, collection, target.overwrite_payloads, collection, payloads_by_point)


def delete(target: QdrantStore, collection: str, ids: list[str] | None, qdrant_filter: models.Filter | None) -> None:
    """Delete the records with these ids, or matching the filter, or both (ids that match)."""
    point_ids = None if ids is None else [point_id(i) for i in ids]
    call(target, collection, target.delete_points, collection, point_ids, qdrant_filter)


def count(target: QdrantStore, collection: str) -> int:
    return int(call(target, collection, target.count, collection))


# --- reads -----------------------------------------------------------------------------------------
def get(
    target: QdrantStore,
    collection: str,
    ids: list[str] | None,
    qdrant_filter: models.Filter | None,
    limit: int | None,
    offset: int,
    include: Sequence[Field],
    layout: Layout | None = None,
) -> GetResult:
    """Records by id (in that order) or all matching records ordered by Chroma id, then ``offset``/``limit``."""
    layout = layout or Layout()
    if ids is not None and qdrant_filter is None:
        present = set(_stored(target, collection, ids, with_payload=False))
        selected = page([i for i in ids if i in present], limit, offset)
    else:
        found = _matching_ids(target, collection, ids, qdrant_filter)
        ordered = [i for i in ids if i in found] if ids is not None else sorted(found)
        selected = page(ordered, limit, offset)
    points = _fetch(target, collection, selected, with_vectors="embeddings" in include) if selected else {}
    records = [layout.from_payload(points[i].payload or {}) for i in selected]
    return get_result(
        include,
        selected,
        [points[i].vector for i in selected],
        [r[1] for r in records],
        [r[2] for r in records],
        [r[3] for r in records],
    )


def _stored(target: QdrantStore, collection: str, ids: list[str], *, with_payload: bool) -> dict[str, dict[str, Any]]:
    """Chroma id -> stored payload of the ids that have a point (only ``chroma_id`` when not asked for)."""
    if not ids:
        return {}
    wanted = set(ids)
    points = _fetch(target, collection, ids, with_vectors=False, only_id=not with_payload)
    return {cid: dict(p.payload or {}) for cid, p in points.items() if cid in wanted}


def _fetch(
    target: QdrantStore, collection: str, ids: list[str], *, with_vectors: bool, only_id: bool = False
) -> dict[str, models.Record]:
    """Chroma id -> the point of each id that has one (``only_id``: the payload holds just ``chroma_id``)."""
    points = call(
        target,
        collection,
        target.retrieve,
        collection,
        [point_id(i) for i in ids],
        with_vectors=with_vectors,
        with_payload=[PAYLOAD_ID_KEY] if only_id else True,
    )
    return {str(p.payload[PAYLOAD_ID_KEY]): p for p in points if p.payload and PAYLOAD_ID_KEY in p.payload}


def _matching_ids(
    target: QdrantStore, collection: str, ids: list[str] | None, qdrant_filter: models.Filter | None
) -> set[str]:
    """The Chroma ids of every point matching the filter (and among ``ids`` when given)."""
    scroll_filter = _with_ids(ids, qdrant_filter) if ids is not None else qdrant_filter
    found: set[str] = set()
    offset: Any = None
    while True:
        points, offset = call(
            target,
            collection,
            target.scroll,
            collection,
            query_filter=scroll_filter,
            limit=SCROLL_PAGE,
            offset=offset,
            with_payload=[PAYLOAD_ID_KEY],
            with_vectors=False,
        )
        found.update(str((p.payload or {}).get(PAYLOAD_ID_KEY)) for p in points)
        if offset is None:
            return found


def _with_ids(ids: list[str] | None, qdrant_filter: models.Filter | None) -> models.Filter:
    conditions: list[models.Condition] = []
    if ids is not None:
        conditions.append(models.HasIdCondition(has_id=[point_id(i) for i in ids]))
    if qdrant_filter is not None:
        conditions.append(qdrant_filter)
    return models.Filter(must=conditions)
