"""Chroma-shaped writes and reads on a ChromaDB collection: chromadb's own calls, answered like the Qdrant side.

The wrapper never computes embeddings: chromadb 1.5 embeds the documents of an ``update`` that brings documents
without embeddings (with the collection's embedding function, which may download a model), so such an update
passes the records' current embeddings back unchanged. :func:`get` orders records as
:mod:`runbook_lib.app.qdrant_writes` does (the ``ids`` asked for, else by Chroma id), so both stores answer a
``limit``/``offset`` page alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runbook_lib.app.records import Field, GetResult, Records, WriteKind, get_result, page

#: Ids per ``Collection.get`` request, well under SQLite's 32,766 variables per statement.
MAX_IDS_PER_REQUEST = 10_000


def write(col: Any, kind: WriteKind, recs: Records) -> None:
    """``Collection.add`` / ``upsert`` / ``update`` with the validated records."""
    ids = recs.ids
    embeddings = recs.embeddings
    documents, metadatas, uris = recs.documents, recs.metadatas, recs.uris
    if kind == "update" and embeddings is None and documents is not None:
        current = _by_id(col, ids, ["embeddings"], where=None)
        rows = [i for i, rid in enumerate(ids) if rid in current]  # chromadb ignores the others anyway
        if not rows:
            return
        ids = [ids[i] for i in rows]
        embeddings = np.stack([np.asarray(current[rid]["embedding"], dtype=np.float32) for rid in ids])
        documents = [documents[i] for i in rows]
        metadatas = None if metadatas is None else [metadatas[i] for i in rows]
        uris = None if uris is None else [uris[i] for i in rows]
    kwargs: dict[str, Any] = {"ids": ids}
    if embeddings is not None:
        kwargs["embeddings"] = embeddings
    if documents is not None:
        kwargs["documents"] = documents
    if metadatas is not None:
        kwargs["metadatas"] = metadatas
    if uris is not None:
        kwargs["uris"] = uris
    getattr(col, kind)(**kwargs)


def delete(col: Any, ids: list[str] | None, where: Mapping[str, Any] | None) -> None:
    col.delete(ids=ids, where=dict(where) if where else None)


def count(col: Any) -> int:
    return int(col.count())


def get(
    col: Any,
    ids: list[str] | None,
    where: Mapping[str, Any] | None,
    limit: int | None,
    offset: int,
    include: Sequence[Field],
) -> GetResult:
    """Records by id (in that order) or all matching records ordered by Chroma id, then ``offset``/``limit``."""
    where_arg = dict(where) if where else None
    if ids is not None:
        found = _by_id(col, ids, list(include), where=where_arg)
        selected = page([i for i in ids if i in found], limit, offset)
    else:
        all_ids = sorted(str(i) for i in col.get(where=where_arg, include=[])["ids"])
        selected = page(all_ids, limit, offset)
        found = _by_id(col, selected, list(include), where=None) if selected and include else {}
    rows = [found.get(i, {}) for i in selected]
    return get_result(
        include,
        selected,
        [r.get("embedding") for r in rows],
        [r.get("document") for r in rows],
        [r.get("metadata") for r in rows],
        [r.get("uri") for r in rows],
    )


def _by_id(col: Any, ids: list[str], include: list[str], *, where: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Chroma id -> {"embedding", "document", "metadata", "uri"} (the fields in ``include``) of the ids found."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), MAX_IDS_PER_REQUEST):
        response = col.get(ids=ids[start : start + MAX_IDS_PER_REQUEST], where=where, include=include)
        got = [str(i) for i in response["ids"]]
        columns = {
            "embedding": response.get("embeddings"),
            "document": response.get("documents"),
            "metadata": response.get("metadatas"),
            "uri": response.get("uris"),
        }
        for k, rid in enumerate(got):
            found[rid] = {name: values[k] for name, values in columns.items() if values is not None}
    return found
