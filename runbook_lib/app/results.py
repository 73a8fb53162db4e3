"""What both backends answer with: :class:`SearchResult` in Chroma's conventions, and the query checks they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runbook_lib.app.errors import QueryDimensionMismatchError


@dataclass(frozen=True)
class SearchResult:
    """Nearest neighbours of one query, nearest first, in Chroma's conventions for both backends."""

    ids: list[str] = field(default_factory=list)
    documents: list[str | None] = field(default_factory=list)
    metadatas: list[dict[str, Any]] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    uris: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class CollectionInfo:
    """What a backend caches about a collection to check queries against it."""

    dimension: int | None
    space: str | None  # Chroma space of a Qdrant collection; None for Chroma (its own distances)


def query_vector(vector: Sequence[float] | np.ndarray) -> list[float]:
    """``vector`` as a list of floats; :class:`ValueError` unless it is one non-empty row of finite numbers."""
    try:
        array = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the query vector must be a sequence of numbers: {exc}") from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"the query vector must be one non-empty list of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("the query vector contains NaN or infinity")
    return [float(x) for x in array]


def check_dimension(collection: str, info: CollectionInfo, query: list[float]) -> None:
    """Raise :class:`QueryDimensionMismatchError` when ``query`` does not fit the collection's vectors."""
    if info.dimension is not None and info.dimension != len(query):
        raise QueryDimensionMismatchError(collection, info.dimension, len(query))
