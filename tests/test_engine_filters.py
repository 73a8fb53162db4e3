"""Every ``where`` translation (runbook_lib/core/filters.py) proven on the engine: the same records in a real Chroma
collection and in a Qdrant Edge shard (same ids), and each filter selects the same records in both, with and
without payload indexes. Then text matching: what a text filter selects in Chroma, on the engine and in local mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import pytest
from qdrant_client import models

from runbook_lib.config.settings import QdrantSettings
from runbook_lib.core.filters import payload_path, to_qdrant_filter
from runbook_lib.core.mapping import build_payload, point_id
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.qdrant.edge import EdgeTarget

from conftest import _close

BIG = 2**53
NS = 1_733_300_000_000_000_000  # a timestamp in nanoseconds: floats there are 256 apart
#: chroma id -> metadata: missing keys, int and float of one value, booleans beside 0 and 1, strings that look like
#: numbers, integers beyond 2^53, keys that need quoting, and list values (of strings, ints, floats).
RECORDS: dict[str, dict[str, Any] | None] = {
    "r00": {"k": "a", "n": 3, "flag": True, "big": BIG + 1, "tags": ["x", "y"], "nums": [1, 2], "ts": NS + 1},
    "r01": {"k": "b", "n": 3.0, "flag": False, "big": BIG + 2, "tags": ["z"], "nums": [1.0, 2.5], "ts": NS},
    "r02": {"k": "c", "n": 1, "flag": 1},
    "r03": None,
    "r04": {"k": "3", "n": 2.5, "a.b": "dotted", "with space": 1},
    "r05": {"k": ["a", "b"], "n": [3]},
    "r06": {"n": -7, "big": -(2**60), "flag": 0, "ключ": "значение"},
    "r07": {"k": "a", "n": 0.5, "flag": True, "a.b": "other", "tags": ["y"]},
    "r08": {"big": 2**62, "n": 3},
}
#: The payload indexes of the indexed shard, one per key, typed as the values found.
INDEXES = {
    "k": "keyword",
    "n": "float",
    "flag": "bool",
    "big": "integer",
    "tags": "keyword",
    "nums": "float",
    "a.b": "keyword",
    "with space": "integer",
    "ключ": "keyword",
    "ts": "integer",
}
WHERE: list[dict[str, Any]] = [
    {"k": "a"},
    {"k": {"$eq": "a"}},
    {"k": {"$ne": "a"}},
    {"k": {"$in": ["a", "c"]}},
    {"k": {"$nin": ["a", "c"]}},
    {"k": "3"},
    {"n": 3},
    {"n": 3.0},
    {"n": {"$ne": 3}},
    {"n": {"$gt": 1}},
    {"n": {"$gte": 3}},
    {"n": {"$lt": 1}},
    {"n": {"$lte": 0.5}},
    {"n": {"$in": [1, 3]}},
    {"n": {"$nin": [1, 3]}},
    {"n": {"$in": [2.5, 0.5]}},
    {"flag": True},
    {"flag": False},
    {"flag": 1},
    {"flag": 0},
    {"flag": {"$ne": True}},
    {"flag": {"$in": [True]}},
    {"flag": {"$nin": [False]}},
    {"big": BIG + 1},
    {"big": BIG + 2},
    {"big": BIG},
    {"big": {"$gt": BIG}},
    {"big": {"$ne": BIG + 1}},
    {"big": {"$in": [2**62, -(2**60)]}},
    {"big": -(2**60)},
    {"big": {"$gte": BIG + 2}},
    {"big": {"$lt": BIG + 2}},
    {"big": {"$lte": BIG + 1}},
    {"big": {"$gt": -(2**60) - 1}},
    {"big": {"$lt": -(2**60) + 1}},
    {"ts": {"$gt": NS}},
    {"ts": {"$lte": NS}},
    {"ts": NS + 1},
    {"a.b": "dotted"},
    {"a.b": {"$ne": "dotted"}},
    {"with space": 1},
    {"ключ": "значение"},
    {"tags": {"$contains": "y"}},
    {"tags": {"$not_contains": "y"}},
    {"tags": "y"},
    {"nums": {"$contains": 1}},
    {"nums": {"$contains": 1.0}},
    {"nums": {"$contains": 2.5}},
    {"k": {"$contains": "a"}},
    {"n": {"$contains": 3}},
    {"$and": [{"k": "a"}, {"flag": True}]},
    {"$or": [{"k": "b"}, {"n": {"$lt": 0}}]},
    {"$and": [{"$or": [{"k": "a"}, {"k": "c"}]}, {"$or": [{"n": {"$gte": 1}}, {"flag": True}]}]},
    {"$or": [{"$and": [{"k": {"$ne": "a"}}, {"n": 3}]}, {"tags": {"$contains": "z"}}]},
]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, EdgeTarget]]:
    """The records in a persistent Chroma collection and in two Edge shards, ``plain`` and ``indexed``."""
    root = tmp_path_factory.mktemp("engine_filters")
    client = chromadb.PersistentClient(path=str(root / "chroma"))
    collection = client.create_collection("filters", embedding_function=None)
    ids = list(RECORDS)
    vectors = [[float(i), 1.0] for i in range(len(ids))]
    collection.add(ids=ids, embeddings=vectors, metadatas=[RECORDS[i] for i in ids])
    target = EdgeTarget(QdrantSettings(edge_path=root / "edge"))
    payloads = [build_payload(i, None, RECORDS[i]) for i in ids]
    for name in ("plain", "indexed"):
        target.create_collection(name, size=2, distance="Dot")
        target.upsert(name, [point_id(i) for i in ids], vectors, payloads)
    for key, kind in INDEXES.items():
        target.create_payload_index("indexed", payload_path(key), kind)  # type: ignore[arg-type]
    try:
        yield collection, target
    finally:
        target.close()
        _close(client)


@pytest.mark.parametrize("shard", ["plain", "indexed"])
@pytest.mark.parametrize("where", WHERE, ids=[repr(w) for w in WHERE])
def test_a_where_filter_selects_the_same_records_in_chroma_and_on_the_engine(
    stores: tuple[Any, EdgeTarget], where: dict[str, Any], shard: str
) -> None:
    collection, target = stores
    in_chroma = sorted(collection.get(where=where, include=[])["ids"])
    records, _ = target.scroll(shard, limit=100, with_vectors=False, query_filter=to_qdrant_filter(where))
    on_edge = sorted(str((r.payload or {})["chroma_id"]) for r in records)
    assert on_edge == in_chroma
    assert target.count(shard, to_qdrant_filter(where)) == len(in_chroma)


DOCUMENTS = ["the visa application form", "visas are required", "supervisa program", "Visa card"]


def text_matches(store: QdrantStore, match: models.Match, *, indexed: bool) -> list[int]:
    """Which of DOCUMENTS a match on the ``document`` payload selects (with a text index on it, or none)."""
    name = "text_indexed" if indexed else "text"
    if not store.exists(name):
        store.create_collection(name, size=2, distance="Dot")
        ids = [point_id(str(i)) for i in range(len(DOCUMENTS))]
        store.upsert(
            name, ids, [[1.0, 0.0]] * len(ids), [build_payload(str(i), d, None) for i, d in enumerate(DOCUMENTS)]
        )
        if indexed:
            store.create_payload_index(name, "document", "text")
    found = models.Filter(must=[models.FieldCondition(key="document", match=match)])
    records, _ = store.scroll(name, limit=10, with_vectors=False, query_filter=found)
    return sorted(int((r.payload or {})["chroma_id"]) for r in records)


def test_text_matching_differs_between_chroma_the_engine_and_local_mode(
    qdrant_store: QdrantStore, tmp_path: Path
) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    collection = client.create_collection("texts", embedding_function=None)
    collection.add(ids=[str(i) for i in range(4)], embeddings=[[1.0, 0.0]] * 4, documents=DOCUMENTS)
    chroma = sorted(int(i) for i in collection.get(where_document={"$contains": "visa"}, include=[])["ids"])
    _close(client)
    assert chroma == [0, 1, 2]  # Chroma: a case-sensitive substring

    word = text_matches(qdrant_store, models.MatchText(text="visa"), indexed=True)
    substring = text_matches(qdrant_store, models.MatchSubstring(substring="visa"), indexed=False)
    if qdrant_store.capabilities.engine:
        assert word == [0]  # the engine's word index (lowercase=False): whole tokens, case kept
        assert substring == chroma  # MatchSubstring is Chroma's $contains
    else:
        assert word == [0, 3]  # local mode: case-insensitive, whole words, and it ignores the index


def test_an_integral_float_beyond_64_bits_in_contains_is_answered(qdrant_store: Any) -> None:
    """A float list element like -1.66e222 is integral, but no Chroma integer can equal it (Chroma's are 64-bit):
    the filter has no integer twin for it, and the engine answers instead of refusing the operand."""
    qdrant_store.create_collection("big_floats", size=2, distance="Euclid")
    qdrant_store.upsert(
        "big_floats",
        ["00000000-0000-0000-0000-000000000001"],
        [[0.0, 1.0]],
        [{"chroma_id": "a", "document": None, "metadata": {"l": [-1.66e222, 2.5]}}],
    )
    for value, expected in ((-1.66e222, 1), (1e300, 0)):
        where = to_qdrant_filter({"l": {"$contains": value}})
        assert qdrant_store.count("big_floats", where) == expected
