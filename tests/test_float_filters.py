"""Float metadata and float ``where`` operands: Chroma's answer and the translated Qdrant filter's answer agree.

chromadb 1.5 stores about one float in ten 1 ulp away from the value written and shifts ``where`` operands the
same way (:mod:`runbook_lib.core.chroma_floats`). The fixture writes random floats to a real ChromaDB, copies what
Chroma stored into Qdrant local mode and Qdrant Edge (as the migration does, with float indexes on Edge), and every
filter is asked of all three.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

from runbook_lib.app.chroma_backend import ChromaBackend
from runbook_lib.app.dual import copy_records
from runbook_lib.app.qdrant_backend import QdrantBackend
from runbook_lib.app.records import Records
from runbook_lib.config.settings import QdrantSettings, load_settings
from runbook_lib.core.chroma_floats import chroma_float, chroma_metadata, chroma_preimage
from runbook_lib.core.filters import to_qdrant_filter
from runbook_lib.core.mapping import build_payload, point_id
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.qdrant.connect import open_target

N = 240
ISSUE_VALUE = 0.9739536643028259  # issue 20: 1 record from Chroma, 0 from Qdrant before the fix


def _value(rng: random.Random, i: int) -> float:
    if i == 0:
        return ISSUE_VALUE
    kind = i % 4
    if kind == 0:
        return rng.random()
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return rng.uniform(-1.0, 1.0) * 10.0 ** rng.randint(-300, 300)
    return float(rng.randint(-5, 5))  # integral floats: never shifted


@dataclass(frozen=True)
class Stores:
    chroma: Any  # chromadb Collection
    qdrant: QdrantClient
    edge: QdrantStore  # Qdrant Edge (the server's engine) with float indexes on both keys, as the migration plans
    written: list[float]  # what the app wrote
    stored: list[float]  # what Chroma returned (and the migration copied)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    root: Path = tmp_path_factory.mktemp("float_filters")
    rng = random.Random(20261204)
    written = [_value(rng, i) for i in range(N)]
    ids = [f"r{i:03d}" for i in range(N)]
    client = chromadb.PersistentClient(path=str(root / "chroma"))
    col = client.create_collection("floats", embedding_function=None)
    col.add(
        ids=ids,
        embeddings=[[1.0, float(i)] for i in range(N)],
        metadatas=[{"v": v, "l": [v, 0.5]} for v in written],
    )
    got = col.get(ids=ids, include=["metadatas"])
    stored = [float(m["v"]) for m in got["metadatas"]]
    qdrant = QdrantClient(path=str(root / "qdrant"))
    qdrant.create_collection("floats", vectors_config=models.VectorParams(size=2, distance=models.Distance.EUCLID))
    qdrant.upsert(
        "floats",
        points=[
            models.PointStruct(id=point_id(rid), vector=[1.0, float(i)], payload=build_payload(rid, None, meta, None))
            for i, (rid, meta) in enumerate(zip(ids, got["metadatas"], strict=True))
        ],
    )
    edge = open_target(QdrantSettings(edge_path=root / "edge"))
    edge.create_collection("floats", size=2, distance="Euclid")
    for key in ("v", "l"):
        edge.create_payload_index("floats", f"metadata.{key}", "float")
    edge.upsert(
        "floats",
        [point_id(rid) for rid in ids],
        [[1.0, float(i)] for i in range(N)],
        [build_payload(rid, None, meta, None) for rid, meta in zip(ids, got["metadatas"], strict=True)],
    )
    yield Stores(col, qdrant, edge, written, stored)
    edge.close()
    qdrant.close()
    client.close()


def _chroma_ids(stores: Stores, where: dict[str, Any]) -> set[str]:
    return set(stores.chroma.get(where=where, include=[])["ids"])


def _qdrant_ids(stores: Stores, where: dict[str, Any]) -> set[str]:
    points, _ = stores.qdrant.scroll("floats", scroll_filter=to_qdrant_filter(where), limit=N + 1)
    return {str((p.payload or {})["chroma_id"]) for p in points}


def _edge_ids(stores: Stores, where: dict[str, Any]) -> set[str]:
    points, _ = stores.edge.scroll("floats", limit=N + 1, with_vectors=False, query_filter=to_qdrant_filter(where))
    return {str((p.payload or {})["chroma_id"]) for p in points}


def test_chroma_float_reproduces_what_chroma_stored(stores: Stores) -> None:
    assert [chroma_float(v) for v in stores.written] == stores.stored
    assert sum(a != b for a, b in zip(stores.written, stores.stored, strict=True)) > 0  # the shift is real here
    assert chroma_metadata({"v": ISSUE_VALUE, "l": [ISSUE_VALUE], "n": 3, "s": "x"}) == {
        "v": 0.973953664302826,
        "l": [0.973953664302826],
        "n": 3,
        "s": "x",
    }


def test_the_issue_value_selects_the_same_record(stores: Stores) -> None:
    for where in (
        {"v": ISSUE_VALUE},
        {"v": {"$lt": ISSUE_VALUE}},
        {"v": {"$gte": ISSUE_VALUE}},
        {"l": {"$contains": ISSUE_VALUE}},
    ):
        assert _qdrant_ids(stores, where) == _chroma_ids(stores, where) == _edge_ids(stores, where), where
    assert _chroma_ids(stores, {"v": ISSUE_VALUE}) == {"r000"}


_OPERATORS = ("$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$in", "$nin", "$contains", "$not_contains")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    index=st.integers(min_value=0, max_value=N - 1),
    source=st.sampled_from(("written", "stored", "next_up", "next_down")),
    operator=st.sampled_from(_OPERATORS),
)
def test_float_operands_select_what_chroma_selects(stores: Stores, index: int, source: str, operator: str) -> None:
    base = stores.written[index] if source == "written" else stores.stored[index]
    operand = {
        "written": base,
        "stored": base,
        "next_up": math.nextafter(base, math.inf),
        "next_down": math.nextafter(base, -math.inf),
    }[source]
    key = "l" if operator in ("$contains", "$not_contains") else "v"
    value: Any = [operand, 0.25] if operator in ("$in", "$nin") else operand
    where = {key: {operator: value}}
    expected = _chroma_ids(stores, where)
    assert _qdrant_ids(stores, where) == expected, where
    assert _edge_ids(stores, where) == expected, where


def test_chroma_preimage_makes_chroma_store_a_copied_value_exactly(tmp_path: Path, stores: Stores) -> None:
    """Writing a value read from a store into Chroma as is would shift some of them again (chroma_float is not
    idempotent); written as their preimage, Chroma keeps every one bit for bit."""
    assert sum(chroma_float(v) != v for v in stores.stored) > 0  # a naive copy back would drift
    client = chromadb.PersistentClient(path=str(tmp_path / "copy"))
    col = client.create_collection("copied", embedding_function=None)
    ids = [f"c{i:03d}" for i in range(N)]
    col.add(
        ids=ids,
        embeddings=[[1.0, float(i)] for i in range(N)],
        metadatas=[{"v": chroma_preimage(v)} for v in stores.stored],
    )
    assert [m["v"] for m in col.get(ids=ids, include=["metadatas"])["metadatas"]] == stores.stored
    client.close()


def test_a_dual_write_replay_copies_floats_bit_for_bit(tmp_path: Path, stores: Stores) -> None:
    """copy_records (the journal replay) between the two stores keeps every float as the source store holds it."""
    QdrantClient(path=str(tmp_path / "qdrant")).close()  # an (empty) local-mode storage
    chromadb.PersistentClient(path=str(tmp_path / "chroma")).close()
    settings = load_settings({"CHROMA_PERSIST_DIR": str(tmp_path / "chroma"), "QDRANT_PATH": str(tmp_path / "qdrant")})
    chroma, qdrant = ChromaBackend(settings.chroma), QdrantBackend(settings.qdrant)
    try:
        ids = [f"r{i:03d}" for i in range(N)]
        chroma.create_collection("replayed", "l2")
        qdrant.create_collection("replayed", "l2", 2)
        vectors = np.array([[1.0, float(i)] for i in range(N)], dtype=np.float32)
        app_write = Records(ids, vectors, None, [{"v": v} for v in stores.written], None)
        chroma.write("replayed", "add", app_write)  # the app's values: Chroma shifts them
        assert copy_records(chroma, qdrant, "replayed", ids) == N
        in_qdrant = [m["v"] for m in qdrant.get("replayed", ids, None, None, 0, ("metadatas",)).metadatas or []]
        assert in_qdrant == stores.stored
        assert copy_records(qdrant, chroma, "replayed", ids) == N
        in_chroma = [m["v"] for m in chroma.get("replayed", ids, None, None, 0, ("metadatas",)).metadatas or []]
        assert in_chroma == stores.stored
    finally:
        chroma.close()
        qdrant.close()
