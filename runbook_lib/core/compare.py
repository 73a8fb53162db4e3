"""Pure comparison for the verify step: type-strict value and payload equality, and a streaming exact top-k.

No I/O here: :mod:`runbook_lib.steps.verify` (its ``checks`` and ``queries`` modules) reads ChromaDB and Qdrant
and hands the records to these functions.

``strict_equal`` / ``value_differences`` / ``payload_differences``
    type-strict and recursive: ``1``, ``1.0`` and ``True`` differ, lists compare element by element; a
    payload is compared against the SPEC layout of its source record.
``RunningTopK`` / ``distances_close``
    the exact top-k of each query kept across batches, and the tolerance between a Qdrant score
    (converted to a Chroma distance) and the exact distance (:data:`SCORE_RTOL`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from runbook_lib.core.layouts import Layout, LayoutError
from runbook_lib.core.mapping import (
    PAYLOAD_DOCUMENT_KEY,
    PAYLOAD_ID_KEY,
    PAYLOAD_METADATA_KEY,
    PAYLOAD_URI_KEY,
    chroma_distances,
)

#: Scores vs exact distances: ``|a - b| <= SCORE_RTOL * max(1, |a|, |b|)``. Qdrant computes in float32
#: (about 7 significant digits; a dot product over 1536 dimensions accumulates a few 1e-7 relative), the
#: reference in float64 from the same float32 vectors, so 1e-4 relative (absolute below 1) leaves two
#: orders of magnitude of headroom and still catches a wrong distance or a changed vector.
SCORE_RTOL = 1e-4


class _Absent:
    """The type of :data:`ABSENT`: equal only to itself, so no stored value (not even the string "<absent>")
    can pass for a missing one."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<absent>"

    __str__ = __repr__

    def __reduce__(self) -> str:
        return "ABSENT"


#: Stands for a value or key that one side does not have (shown as ``<absent>``).
ABSENT = _Absent()
_LAYOUT_KEYS = frozenset({PAYLOAD_ID_KEY, PAYLOAD_DOCUMENT_KEY, PAYLOAD_METADATA_KEY})


# --- type-strict comparison ---------------------------------------------------------------------------
def strict_equal(a: Any, b: Any) -> bool:
    """Equality that also requires equal types, recursively: ``1``, ``1.0`` and ``True`` all differ.

    Lists and tuples are both sequences (JSON has one array type); their elements compare strictly.
    Two NaN floats are equal (the same value stored twice).
    """
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[key], b[key]) for key in a)
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def value_differences(path: str, source: Any, target: Any) -> list[tuple[str, Any, Any, str]]:
    """``(field, source, target, detail)`` for every place ``target`` differs from ``source`` (type-strict).

    Dicts are compared key by key (``path.key``), equal-length sequences element by element (``path[i]``).
    """
    if isinstance(source, dict) and isinstance(target, dict):
        out: list[tuple[str, Any, Any, str]] = []
        for key in sorted(set(source) | set(target), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in target:
                out.append((sub, source[key], ABSENT, "key missing in Qdrant"))
            elif key not in source:
                out.append((sub, ABSENT, target[key], "key not in the source"))
            else:
                out.extend(value_differences(sub, source[key], target[key]))
        return out
    seqs = isinstance(source, list | tuple) and isinstance(target, list | tuple)
    if seqs and len(source) == len(target):
        out = []
        for i, (x, y) in enumerate(zip(source, target, strict=True)):
            out.extend(value_differences(f"{path}[{i}]", x, y))
        return out
    if strict_equal(source, target):
        return []
    if seqs:
        return [(path, source, target, f"length {len(source)} vs {len(target)}")]
    if target is ABSENT:
        detail = "absent in Qdrant"
    elif source is ABSENT:
        detail = "not in the source"
    elif type(source) is not type(target):
        detail = f"type {type(source).__name__} vs {type(target).__name__}"
    else:
        detail = "value differs"
    return [(path, source, target, detail)]


def payload_differences(
    chroma_id: str,
    document: str | None,
    metadata: dict[str, Any] | None,
    uri: str | None,
    payload: dict[str, Any],
) -> list[tuple[str, Any, Any, str]]:
    """How a point's payload differs from the SPEC layout of the source record (empty: identical)."""
    out: list[tuple[str, Any, Any, str]] = []
    expected_keys = set(_LAYOUT_KEYS) | ({PAYLOAD_URI_KEY} if uri is not None else set())
    unexpected = sorted(set(payload) - _LAYOUT_KEYS - {PAYLOAD_URI_KEY})
    missing = sorted(_LAYOUT_KEYS - set(payload))
    if unexpected or missing:
        detail = "; ".join(
            part
            for part in (
                f"unexpected keys {unexpected}" if unexpected else "",
                f"missing keys {missing}" if missing else "",
            )
            if part
        )
        out.append(("payload keys", sorted(expected_keys), sorted(payload), detail))
    if PAYLOAD_ID_KEY in payload and not strict_equal(payload[PAYLOAD_ID_KEY], chroma_id):
        out.append(("chroma_id", chroma_id, payload[PAYLOAD_ID_KEY], "payload chroma_id is another record's"))
    if PAYLOAD_DOCUMENT_KEY in payload:
        out.extend(value_differences("document", document, payload[PAYLOAD_DOCUMENT_KEY]))
    if PAYLOAD_METADATA_KEY in payload:
        expected_meta = dict(metadata) if metadata else {}
        found = payload[PAYLOAD_METADATA_KEY]
        if isinstance(found, dict):
            out.extend(value_differences("metadata", expected_meta, found))
        else:
            out.append(("metadata", expected_meta, found, f"metadata is a {type(found).__name__}, not an object"))
    out.extend(value_differences("uri", uri if uri is not None else ABSENT, payload.get(PAYLOAD_URI_KEY, ABSENT)))
    return out


def layout_payload_differences(
    layout: Layout | None,
    chroma_id: str,
    document: str | None,
    metadata: dict[str, Any] | None,
    uri: str | None,
    payload: dict[str, Any],
) -> list[tuple[str, Any, Any, str]]:
    """How a point's payload differs from the source record written in ``layout`` (the SPEC layout: exactly
    :func:`payload_differences`). Type-strict and recursive, key by key; a record the layout cannot carry is
    reported as a difference naming why."""
    if layout is None or type(layout) is Layout:  # the SPEC layout
        return payload_differences(chroma_id, document, metadata, uri, payload)
    try:
        expected = layout.to_payload(chroma_id, document, metadata, uri)
    except LayoutError as exc:
        return [("payload", "(source record)", ABSENT, exc.message)]
    return value_differences("", expected, payload)


# --- streaming exact top-k -------------------------------------------------------------------------------
class RunningTopK:
    """Exact top-k of each query over vectors seen batch by batch (memory: queries x k)."""

    def __init__(self, queries: np.ndarray, k: int, space: str) -> None:
        self.queries = np.asarray(queries, dtype=np.float32)
        self.k = k
        self.space = space
        n = len(self.queries)
        self.distances: list[np.ndarray] = [np.empty(0, dtype=np.float64) for _ in range(n)]
        self.ids: list[np.ndarray] = [np.empty(0, dtype=object) for _ in range(n)]

    def update(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        if len(ids) == 0:
            return
        id_array = np.asarray(list(ids), dtype=object)
        vectors64 = np.asarray(vectors, dtype=np.float64)  # converted once, not once per query
        for j, q in enumerate(self.queries):
            d = np.concatenate([self.distances[j], chroma_distances(q, vectors64, self.space)])
            i = np.concatenate([self.ids[j], id_array])
            if len(d) > self.k:
                keep = np.argpartition(d, self.k - 1)[: self.k]
                d, i = d[keep], i[keep]
            order = np.lexsort((i.astype(str), d))
            self.distances[j], self.ids[j] = d[order], i[order]

    def result(self, j: int) -> tuple[list[str], np.ndarray]:
        """(ids, distances) of query ``j``, nearest first."""
        return [str(x) for x in self.ids[j]], self.distances[j]


def distances_close(a: float, b: float, rtol: float = SCORE_RTOL) -> bool:
    """``|a - b| <= rtol * max(1, |a|, |b|)``: relative for distances above 1, absolute below."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= rtol * max(1.0, abs(a), abs(b))
