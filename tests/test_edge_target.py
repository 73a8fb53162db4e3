"""Qdrant Edge as a target: every method of the Qdrant-side interface on the engine, the same answers on Edge and on
qdrant-client's local mode (the ``qdrant_store`` fixture runs each congruence test on both), durability across
close and a dead process, the HNSW index after a bulk load, and what Edge refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import models

from runbook_lib.config.settings import QdrantSettings, load_settings
from runbook_lib.core.filters import payload_path
from runbook_lib.core.mapping import build_payload, point_id
from runbook_lib.errors import ConfigError, TargetError
from runbook_lib.qdrant.base import QdrantStore, TargetCollection, runbook_path
from runbook_lib.qdrant.connect import open_target
from runbook_lib.qdrant.edge import ALIAS_REFUSAL, EdgeTarget

EVEN = models.Filter(must=[models.FieldCondition(key="metadata.even", match=models.MatchValue(value=True))])


def sample(n: int, dim: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """``n`` points as the migration writes them: uuid5 ids of ``doc-i``, float32 vectors, default payloads."""
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    ids = [point_id(f"doc-{i}") for i in range(n)]
    payloads = [
        build_payload(f"doc-{i}", f"document {i}", {"i": i, "tag": f"t{i % 3}", "even": i % 2 == 0}) for i in range(n)
    ]
    return ids, vectors, payloads


def load(store: QdrantStore, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
    """Two batches (an array and lists), flushed, then the bulk load finished."""
    half = len(ids) // 2
    with store.bulk_writes(name) as flush:
        store.upsert(name, ids[:half], vectors[:half], payloads[:half], batch_label="batch 1")
        store.upsert(name, ids[half:], vectors[half:].tolist(), payloads[half:], batch_label="batch 2")
        flush()
    store.finish_bulk_load(name)


def nearest(vectors: np.ndarray, query: np.ndarray, distance: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact ranking and Qdrant's scores: cosine similarity and dot product descending, Euclid distance ascending."""
    if distance == "Euclid":
        scores = np.linalg.norm(vectors - query, axis=1)
        return np.argsort(scores), scores
    if distance == "Cosine":
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        query = query / np.linalg.norm(query)
    scores = vectors @ query
    return np.argsort(-scores), scores


def edge_target(root: Path) -> EdgeTarget:
    return EdgeTarget(QdrantSettings(edge_path=root))


# --- congruence: the same operations, the same answers on Edge and on local mode ---------------------------------
@pytest.mark.parametrize("distance", ["Cosine", "Euclid", "Dot"])
def test_reads_and_searches_answer_alike(qdrant_store: QdrantStore, distance: str) -> None:
    store = qdrant_store
    ids, vectors, payloads = sample(60, 8)
    store.create_collection("books", size=8, distance=distance)
    load(store, "books", ids, vectors, payloads)

    assert store.collection_names() == ["books"] and store.aliases() == {}
    assert store.exists("books") and not store.exists("films")
    assert store.describe_collection("books") == TargetCollection(name="books", size=8, distance=distance, points=60)
    assert store.count("books") == 60 and store.count("books", EVEN) == 30

    seen: list[str] = []
    offset = None
    while True:  # every point once, in point-id order, the pages joined by their offsets
        page, offset = store.scroll("books", limit=7, offset=offset, with_vectors=False)
        seen += [str(r.id) for r in page]
        if offset is None:
            break
    assert seen == sorted(ids)
    page, _ = store.scroll("books", limit=100, with_vectors=False, with_payload=["chroma_id"], query_filter=EVEN)
    assert sorted(str(r.id) for r in page) == sorted(ids[::2]) and all(
        set(r.payload or {}) == {"chroma_id"} for r in page
    )
    assert dict(store.iter_chroma_ids("books", page=9)) == {ids[i]: f"doc-{i}" for i in range(60)}

    records = {str(r.id): r for r in store.retrieve("books", [ids[5], ids[2]])}
    assert set(records) == {ids[5], ids[2]}
    stored = vectors[5] / np.linalg.norm(vectors[5]) if distance == "Cosine" else vectors[5]  # Cosine: normalised
    assert records[ids[5]].payload == payloads[5]
    assert np.allclose(records[ids[5]].vector, stored, atol=1e-6)
    bare = store.retrieve("books", [ids[5]], with_vectors=False, with_payload=False)
    assert bare[0].vector is None and not bare[0].payload

    query = vectors[0] + 0.25
    order, scores = nearest(vectors, query, distance)
    hits = store.query("books", query.tolist(), limit=5, exact=True)
    assert [str(h.id) for h in hits] == [ids[k] for k in order[:5]]
    assert np.allclose([h.score for h in hits], scores[order[:5]], rtol=1e-4, atol=1e-5)
    assert hits[0].payload == payloads[order[0]] and hits[0].vector is None
    filtered = store.query("books", query.tolist(), limit=5, exact=True, query_filter=EVEN, with_payload=False)
    assert [str(h.id) for h in filtered] == [ids[k] for k in order if k % 2 == 0][:5]
    assert [str(h.id) for h in store.query("books", query.tolist(), limit=5)] == [ids[k] for k in order[:5]]


def test_writes_and_deletes_answer_alike(qdrant_store: QdrantStore) -> None:
    store = qdrant_store
    ids, vectors, payloads = sample(30, 4)
    store.create_collection("books", size=4, distance="Cosine")
    load(store, "books", ids, vectors, payloads)

    replaced = build_payload("doc-1", None, None)
    store.overwrite_payloads("books", {ids[1]: replaced})
    (record,) = store.retrieve("books", [ids[1]])
    assert record.payload == replaced and np.allclose(record.vector, vectors[1] / np.linalg.norm(vectors[1]), atol=1e-6)

    store.delete_points("books", ids=[ids[3], ids[4]])
    tag0 = models.Filter(must=[models.FieldCondition(key="metadata.tag", match=models.MatchValue(value="t0"))])
    store.delete_points("books", query_filter=tag0)  # 0, 6, 9, ... (3 is gone already)
    store.delete_points("books", ids=[ids[7], ids[8]], query_filter=EVEN)  # only 8 is even
    gone = {3, 4, 8} | {i for i in range(30) if i % 3 == 0}
    assert {p for p, _ in store.iter_chroma_ids("books", page=50)} == {ids[i] for i in range(30) if i not in gone}
    store.delete_points("books", ids=[])  # nothing to delete
    assert store.count("books") == 30 - len(gone)

    store.delete_collection("books")
    assert not store.exists("books") and store.collection_names() == []
    store.delete_collection("books")  # deleting what is not there is no error


def test_payload_indexes_are_reported_by_the_engine_only(qdrant_store: QdrantStore) -> None:
    store = qdrant_store
    store.create_collection("books", size=4, distance="Dot")
    for field, kind in [("metadata.tag", "keyword"), ("metadata.i", "integer"), ("metadata.half", "float")]:
        store.create_payload_index("books", field, kind)
    store.create_payload_index("books", "metadata.even", "bool")
    store.create_payload_index("books", "document", "text")
    expected = {
        "metadata.tag": "keyword",
        "metadata.i": "integer",
        "metadata.half": "float",
        "metadata.even": "bool",
        "document": "text",
    }
    assert store.payload_indexes("books") == (expected if store.capabilities.payload_indexes else None)


def test_an_index_on_a_non_ascii_key_is_reported_under_the_path_it_was_created_with(qdrant_store: QdrantStore) -> None:
    """The engine reports ``metadata."clé"`` as ``metadata.clé`` (a key it reads bare loses its quotes); the
    interface gives it back in the runbook's spelling, so verify finds the planned index (found on Edge: the awkward
    database's verification failed with "no payload index on 'metadata."clé"'")."""
    store = qdrant_store
    store.create_collection("keys", size=2, distance="Dot")
    fields = [payload_path(k) for k in ("clé", "言語", "with space", "dotted.key", "plain")]
    for field in fields:
        store.create_payload_index("keys", field, "keyword")
    expected = dict.fromkeys(fields, "keyword")
    assert store.payload_indexes("keys") == (expected if store.capabilities.payload_indexes else None)
    assert [runbook_path(p) for p in ("metadata.clé", 'metadata."a b"[]', "tags[].x", "document")] == [
        'metadata."clé"',
        'metadata."a b"[]',
        "tags[].x",
        "document",
    ]


# --- Edge itself ----------------------------------------------------------------------------------------------------
def test_edge_is_the_engine_without_aliases_or_a_cluster(tmp_path: Path) -> None:
    with open_target(QdrantSettings(edge_path=tmp_path / "edge")) as target:
        assert isinstance(target, EdgeTarget) and isinstance(target, QdrantStore)
        caps = target.capabilities
        assert (caps.kind, caps.aliases, caps.cluster, caps.engine, caps.payload_indexes, caps.hnsw) == (
            "edge",
            False,
            False,
            True,
            True,
            True,
        )
        assert target.identity() == {"kind": "edge", "path": str(tmp_path / "edge"), "qdrant_edge_version": "0.9.0"}
        assert target.describe() == f"Qdrant Edge at {tmp_path / 'edge'}"
        target.ping()  # before the first collection: reading creates nothing
        assert target.collection_names() == [] and not target.exists("books") and not (tmp_path / "edge").exists()
        target.create_collection("books", size=4, distance="Cosine", hnsw={"m": 8, "ef_construct": 64})
        assert target.indexing_threshold("books") == 1

        with pytest.raises(ConfigError, match=r"^Qdrant Edge has no aliases: use -p cutover plain") as refused:
            target.set_alias("books_live", "books")
        assert str(refused.value) == ALIAS_REFUSAL and refused.value.exit_code == 2
        with pytest.raises(ConfigError, match=r"^Qdrant Edge has no aliases"):
            target.delete_alias("books_live")
        with pytest.raises(ConfigError, match=r"no shards or replicas \(shard_number=2, replication_factor=3\)"):
            target.create_collection("films", size=4, distance="Cosine", shard_number=2, replication_factor=3)
        with pytest.raises(ConfigError, match="Qdrant Edge takes m and ef_construct"):
            target.create_collection("films", size=4, distance="Cosine", hnsw={"M": 8})
        with pytest.raises(ConfigError, match="expected Cosine, Euclid or Dot"):
            target.create_collection("films", size=4, distance="Manhattan")
        assert not target.exists("films")
        with pytest.raises(TargetError, match="'books' already exists"):
            target.create_collection("books", size=4, distance="Cosine")
        for bad in ("../books", ".hidden", "a/b", ""):
            with pytest.raises(ConfigError, match="cannot be a Qdrant Edge collection"):
                target.exists(bad)
        with pytest.raises(TargetError, match="has no collection 'films'"):
            target.count("films")
        with pytest.raises(TargetError, match=r"refused batch 1 of collection 'books' \(1 points"):
            target.upsert("books", [point_id("x")], [[1.0, 2.0]], [{}], batch_label="batch 1")

        (tmp_path / "edge" / "notes").mkdir()  # a folder that is not a shard is not a collection, and is kept
        assert target.collection_names() == ["books"]
        with pytest.raises(TargetError, match="is not a Qdrant Edge shard"):
            target.delete_collection("notes")
        assert (tmp_path / "edge" / "notes").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(TargetError, match="is not a writable directory"):
        edge_target(tmp_path / "file" / "edge").ping()
    config = json.loads((tmp_path / "edge" / "books" / "edge_config.json").read_text())
    assert config["hnsw_config"]["m"] == 8 and config["hnsw_config"]["ef_construct"] == 64


def test_flushed_batches_survive_close_and_a_dead_process(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    ids, vectors, payloads = sample(40, 6)
    writer = f"""
import os, numpy as np
from pathlib import Path
from runbook_lib.config.settings import QdrantSettings
from runbook_lib.qdrant.edge import EdgeTarget
target = EdgeTarget(QdrantSettings(edge_path=Path({str(root)!r})))
target.create_collection("books", size=6, distance="Euclid", hnsw={{"m": 12}})
with target.bulk_writes("books") as flush:
    target.upsert("books", {ids[:20]!r}, np.array({vectors[:20].tolist()!r}, dtype=np.float32), {payloads[:20]!r})
    flush()
    os._exit(0)  # dies holding the shard, never closed
"""
    subprocess.run([sys.executable, "-c", writer], check=True, timeout=120)
    with edge_target(root) as target:  # the dead process's lock is gone; the flushed batch is there
        assert target.describe_collection("books") == TargetCollection(
            name="books", size=6, distance="Euclid", points=20
        )
        with target.bulk_writes("books") as flush:
            target.upsert("books", ids[20:], vectors[20:], payloads[20:])
            flush()
    with edge_target(root) as target:
        records = {str(r.id): r for r in target.retrieve("books", ids)}
        assert len(records) == 40 and all(records[i].payload == p for i, p in zip(ids, payloads, strict=True))
        assert np.allclose([records[i].vector for i in ids], vectors, atol=0)
    assert json.loads((root / "books" / "edge_config.json").read_text())["hnsw_config"]["m"] == 12


def test_finish_bulk_load_builds_the_hnsw_index(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    ids, vectors, payloads = sample(400, 16)
    with edge_target(root) as target:
        target.create_collection("books", size=16, distance="Cosine")
        with target.bulk_writes("books") as flush:
            target.upsert("books", ids, vectors, payloads)
            flush()
    shard = qe.EdgeShard.load(str(root / "books"))
    assert shard.info().indexed_vectors_count == 0  # Edge indexes only when asked
    shard.close()

    said: list[str] = []
    with edge_target(root) as target:
        assert target.finish_bulk_load("books", progress=said.append) is None
        recall = []
        for query in vectors[:20] + 0.3:
            exact = {h.id for h in target.query("books", query.tolist(), limit=10, exact=True)}
            approximate = {h.id for h in target.query("books", query.tolist(), limit=10)}
            recall.append(len(exact & approximate) / 10)
    assert said[0] == "building the HNSW index of 'books' (400 points)"
    assert said[-1].startswith("HNSW index of 'books' built: 400 vectors indexed in ")
    shard = qe.EdgeShard.load(str(root / "books"))
    assert shard.info().indexed_vectors_count == 400
    shard.close()
    assert np.mean(recall) >= 0.9


def test_a_shard_open_in_one_process_is_refused_in_another(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    other = f"""
from pathlib import Path
from runbook_lib.config.settings import QdrantSettings
from runbook_lib.errors import ConfigError
from runbook_lib.qdrant.edge import EdgeTarget
try:
    EdgeTarget(QdrantSettings(edge_path=Path({str(root)!r}))).count("books")
except ConfigError as exc:
    print(exc)
"""
    with edge_target(root) as target:
        target.create_collection("books", size=4, distance="Dot")
        refused = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True, timeout=120)
        assert refused.stdout.startswith("The Qdrant Edge shard of collection 'books' (")
        assert "is open in another process" in refused.stdout and refused.stdout.count(".\n") == 1
        assert target.count("books") == 0
    assert subprocess.run([sys.executable, "-c", other], capture_output=True, text=True, timeout=120).stdout == ""


# --- settings ------------------------------------------------------------------------------------------------------
def test_the_target_is_the_first_of_url_edge_path_and_path(tmp_path: Path) -> None:
    edge, local = str(tmp_path / "e"), str(tmp_path / "l")
    default = load_settings({}).qdrant
    assert (default.kind, default.edge_path, default.path) == ("edge", default.edge_path, None)
    assert default.edge_path is not None and default.edge_path.parts[-2:] == ("data", "qdrant_edge")
    both = load_settings({"QDRANT_EDGE_PATH": edge, "QDRANT_PATH": local})
    assert both.qdrant.kind == "edge" and both.qdrant.describe() == f"Qdrant Edge at {edge}"
    assert both.public()["qdrant_edge_path"] == edge and both.public()["qdrant_path"] is None
    only_local = load_settings({"QDRANT_PATH": local})
    assert only_local.qdrant.kind == "local" and not only_local.qdrant.is_server
    assert only_local.public()["qdrant_edge_path"] is None and only_local.public()["qdrant_path"] == local
    server = load_settings({"QDRANT_URL": "http://localhost:6333", "QDRANT_EDGE_PATH": edge}).qdrant
    assert server.kind == "server" and server.is_server and server.edge_path is None
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"^QDRANT_EDGE_PATH points to .*which is a file"):
        load_settings({"QDRANT_EDGE_PATH": str(tmp_path / "file")})


def test_every_kind_of_condition_answers_alike(qdrant_store: QdrantStore) -> None:
    """Each condition qdrant-client can express and Edge evaluates, converted one for one."""
    store = qdrant_store
    payloads = [
        {"when": "2026-01-01T00:00:00Z", "list": [1, 2, 3], "word": "alpha", "nested": [{"a": 1}, {"a": 2}], "n": None},
        {"when": "2026-06-01T00:00:00Z", "list": [], "word": "beta", "nested": [{"a": 3}]},
        {"list": [4], "word": "alphabet"},
    ]
    ids = [point_id(str(i)) for i in range(3)]
    store.create_collection("kinds", size=2, distance="Dot")
    store.upsert("kinds", ids, [[1.0, float(i)] for i in range(3)], payloads)

    def field(key: str, **condition: Any) -> models.Filter:
        return models.Filter(must=[models.FieldCondition(key=key, **condition)])

    cases: list[tuple[models.Filter, set[int]]] = [
        (field("when", range=models.DatetimeRange(gte="2026-03-01T00:00:00Z")), {1}),
        (field("list", values_count=models.ValuesCount(gte=2)), {0}),
        (field("list", is_empty=True), {1}),
        (models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="when"))]), {2}),
        (models.Filter(must=[models.IsNullCondition(is_null=models.PayloadField(key="n"))]), {0}),
        (field("list", match=models.MatchAny(any=[3, 4])), {0, 2}),
        (field("word", match=models.MatchExcept(**{"except": ["alpha", "beta"]})), {2}),
        (field("word", match=models.MatchPrefix(prefix="alpha")), {0, 2}),
        (field("word", match=models.MatchTextAny(text_any="beta gamma")), {1}),
        (field("word", match=models.MatchPhrase(phrase="alpha")), {0}),
        (models.Filter(must=[models.HasIdCondition(has_id=[ids[1], ids[2]])]), {1, 2}),
        (models.Filter(must=[models.HasVectorCondition(has_vector="")]), {0, 1, 2}),
        (
            models.Filter(
                must=[
                    models.NestedCondition(
                        nested=models.Nested(key="nested", filter=field("a", range=models.Range(gte=2, lte=2)))
                    )
                ]
            ),
            {0},
        ),
        (
            models.Filter(
                min_should=models.MinShould(
                    conditions=[field("word", match=models.MatchValue(value="beta")), field("list", is_empty=True)],
                    min_count=2,
                )
            ),
            {1},
        ),
    ]
    for query_filter, expected in cases:
        records, _ = store.scroll("kinds", limit=10, with_vectors=False, query_filter=query_filter)
        assert {ids.index(str(r.id)) for r in records} == expected, query_filter
    if store.capabilities.kind == "edge":  # spelled otherwise in Edge 0.9, and never built by the runbook
        box = models.GeoBoundingBox(top_left=models.GeoPoint(lon=0, lat=1), bottom_right=models.GeoPoint(lon=1, lat=0))
        with pytest.raises(ConfigError, match=r"^Qdrant Edge cannot evaluate a geo condition on 'at' in a filter"):
            store.count("kinds", field("at", geo_bounding_box=box))
