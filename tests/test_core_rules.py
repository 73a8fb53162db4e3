"""Pure rules of ``runbook_lib.core`` that a verdict depends on: the absent-value sentinel and integer equality in
the where translation, checked on Qdrant Edge (the engine) and on qdrant-client's local mode (``qdrant_store``)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from runbook_lib.core.compare import ABSENT, payload_differences, strict_equal, value_differences
from runbook_lib.core.filters import to_qdrant_filter


def test_absent_is_not_any_stored_value() -> None:
    assert not strict_equal("<absent>", ABSENT)
    assert strict_equal(ABSENT, ABSENT) and str(ABSENT) == "<absent>"
    # a metadata value equal to the string the sentinel is shown as still differs from a missing key
    diffs = value_differences("metadata", {"k": "<absent>"}, {})
    assert diffs and diffs[0][3] == "key missing in Qdrant"
    diffs = payload_differences(
        "id-1", "doc", {"a": 1}, None, {"chroma_id": "id-1", "document": "doc", "metadata": {"a": 1, "b": "<absent>"}}
    )
    assert [d[0] for d in diffs] == ["metadata.b"]


@pytest.fixture
def big_ints(qdrant_store: Any) -> Any:
    """Edge and local mode (``qdrant_store``): point ``UUID(int=i)`` holds value ``i``'s number."""
    qdrant_store.create_collection("c", size=2, distance="Dot")
    values = {1: 2**53, 2: 2**53 + 1, 3: 2**53 + 2, 4: -(2**60) - 1, 5: -(2**60), 6: 3, 7: 3.0}
    ids = [str(uuid.UUID(int=i)) for i in values]
    qdrant_store.upsert("c", ids, [[1.0, 0.0]] * len(ids), [{"metadata": {"n": v}} for v in values.values()])
    return qdrant_store


def _ids(store: Any, where: dict[str, object]) -> list[int]:
    points, _ = store.scroll("c", query_filter=to_qdrant_filter(where), limit=100, with_vectors=False)
    return sorted(uuid.UUID(str(p.id)).int for p in points)


def test_integer_equality_is_exact_above_2_53(big_ints: Any) -> None:
    assert _ids(big_ints, {"n": 2**53 + 1}) == [2]
    assert _ids(big_ints, {"n": -(2**60) - 1}) == [4]
    assert _ids(big_ints, {"n": {"$in": [2**53, 2**53 + 2]}}) == [1, 3]
    assert 2 not in _ids(big_ints, {"n": {"$ne": 2**53 + 1}})
    # small numbers keep Chroma's int/float equality
    assert _ids(big_ints, {"n": 3}) == [6, 7]
