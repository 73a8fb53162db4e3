"""The one point builder: what migrate, sync and the app write to Qdrant for a set of Chroma records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runbook_lib.core.layouts import Layout
from runbook_lib.core.mapping import normalise_rows, point_id


def build_points(
    chroma_ids: Sequence[str],
    vectors: np.ndarray,
    documents: Sequence[str | None],
    metadatas: Sequence[Mapping[str, Any] | None],
    uris: Sequence[str | None],
    *,
    cosine: bool,
    layout: Layout | None = None,
) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """(point ids, float32 vectors, payloads in ``layout``, default the SPEC one). A Cosine collection gets unit
    vectors, as a Qdrant server stores them (local mode would otherwise persist the raw vector)."""
    layout = layout or Layout()
    rows = normalise_rows(vectors) if cosine else np.asarray(vectors, dtype=np.float32)
    payloads = [
        layout.to_payload(i, d, dict(m) if m else None, u)
        for i, d, m, u in zip(chroma_ids, documents, metadatas, uris, strict=True)
    ]
    return [point_id(i) for i in chroma_ids], rows, payloads
