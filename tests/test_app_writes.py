"""VectorDBClient's writes (add, upsert, update, delete) and reads by id (get, count), on real chromadb and real
Qdrant Edge (the engine; the same-writes test on qdrant-client's local mode too, ``@on_both_targets``): the same
writes through ``VECTOR_DB=chroma`` and ``VECTOR_DB=qdrant`` leave both stores answering alike, and every Qdrant
point the wrapper writes is the point the migration writes for that record.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest

from runbook_lib.app import UnknownCollectionError, VectorDBClient
from runbook_lib.app.records import GetResult
from runbook_lib.config.settings import QdrantSettings
from runbook_lib.core.mapping import build_payload, normalise_rows, point_id, qdrant_distance
from runbook_lib.errors import DimensionMismatchError
from runbook_lib.qdrant.connect import open_target

from conftest import TARGET_VARIABLE, assert_exact_copy, on_both_targets, read_qdrant

DIM = 6
SPACES = ("cosine", "l2", "ip")
ALL = ["embeddings", "documents", "metadatas", "uris"]


@dataclass(frozen=True)
class Dirs:
    chroma: Path
    qdrant: Path
    outputs: Path
    kind: str = "edge"  # the embedded Qdrant target: "edge" (QDRANT_EDGE_PATH) or "local" (QDRANT_PATH)

    def env(self, backend: str, **extra: str) -> dict[str, str]:
        return {
            "VECTOR_DB": backend,
            "CHROMA_PERSIST_DIR": str(self.chroma),
            TARGET_VARIABLE[self.kind]: str(self.qdrant),
            "RUNBOOK_OUTPUTS": str(self.outputs),
            **extra,
        }

    def settings(self) -> QdrantSettings:
        return QdrantSettings(edge_path=self.qdrant) if self.kind == "edge" else QdrantSettings(path=self.qdrant)


def make_stores(root: Path, collections: dict[str, str], dim: int = DIM, kind: str = "edge") -> Dirs:
    """Empty collections of the same names and spaces in a ChromaDB directory and an embedded Qdrant folder (Edge,
    or local mode), as the migration creates them."""
    dirs = Dirs(root / "chroma", root / "qdrant", root / "outputs", kind)
    client = chromadb.PersistentClient(path=str(dirs.chroma))
    for name, space in collections.items():
        client.create_collection(name, metadata={"hnsw:space": space}, embedding_function=None)
    client.close()
    with open_target(dirs.settings()) as target:  # as the migration creates them
        for name, space in collections.items():
            target.create_collection(name, size=dim, distance=qdrant_distance(space))
    return dirs


@pytest.fixture
def dirs(tmp_path: Path, qdrant_kind: str) -> Dirs:
    return make_stores(tmp_path, {f"docs_{s}": s for s in SPACES}, kind=qdrant_kind)


def vec(seed: int) -> list[float]:
    return np.random.default_rng(seed).normal(size=DIM).astype(np.float32).tolist()


UUID_ID = str(uuid.UUID(int=42))  # a canonical UUID is its own point id


def write_sequence(db: VectorDBClient, name: str) -> None:
    """Every kind of write, with Chroma's corner cases: existing ids in add, missing ids in update, None entries,
    metadata merged and keys removed, typed values (1, 1.0, True, lists), deletes by id, by where and both."""
    db.add(
        name,
        ["a", "b", UUID_ID, "d", "e"],
        [vec(1), vec(2), vec(3), vec(4), vec(5)],
        documents=["doc a", None, "doc c", "doc d", "doc e"],
        metadatas=[{"n": 1, "f": 1.0, "flag": True, "tags": ["x", "y"]}, None, {"n": 2}, {"kind": "pdf"}, {"n": 3}],
        uris=[None, "s3://b", None, "s3://d", None],
    )
    db.add(name, ["a", "f"], [vec(10), vec(6)], documents=["ignored", "doc f"], metadatas=[{"n": 99}, {"n": 1.0}])
    db.update(name, ["a", "missing"], metadatas=[{"n": None, "extra": "yes"}, {"n": 5}], documents=["doc a2", "x"])
    db.update(name, ["b"], embeddings=[vec(20)], uris=["s3://b2"])
    db.update(name, [UUID_ID, "d"], documents=[None, "doc d2"], metadatas=[{"nums": [1.5, 2.5]}, None])
    db.upsert(
        name,
        ["d", "g", "h"],
        [vec(30), vec(7), vec(8)],
        documents=[None, "doc g", None],
        metadatas=[{"kind": None, "page": 4}, {"z": None, "page": 4.0}, {"page": 5}],
        uris=[None, None, "s3://h"],
    )
    db.delete(name, ids=["e"])
    db.delete(name, where={"page": 5})
    db.delete(name, ids=["f", "g"], where={"n": 1.0})  # only "f" matches both


def canonical(result: GetResult) -> dict[str, Any]:
    """A GetResult as type-strict JSON-able data (1, 1.0 and True stay distinct), embeddings apart."""
    return {
        "ids": result.ids,
        "documents": result.documents,
        "metadatas": json.dumps(result.metadatas, sort_keys=True),
        "uris": result.uris,
        "included": result.included,
    }


def read_all(env: dict[str, str], name: str) -> dict[str, Any]:
    with VectorDBClient(env) as db:
        full = db.get(name, include=ALL)
        return {
            "count": db.count(name),
            "full": full,
            "default": db.get(name),
            "by_ids": db.get(name, ids=["h", "zzz", "a", UUID_ID, "d"], include=["documents", "uris"]),
            "where": db.get(name, where={"page": {"$gte": 4}}, include=["metadatas"]),
            "page": db.get(name, limit=2, offset=1, include=["documents"]),
            "ids_where_page": db.get(name, ids=["d", "g", "a"], where={"page": 4}, limit=1, offset=1),
            "search": [db.search(name, vec(s), limit=10) for s in (1, 30, 99)],
            "search_where": db.search(name, vec(2), limit=10, where={"n": {"$gt": 0}}),
        }


@on_both_targets
@pytest.mark.parametrize("space", SPACES)
def test_same_writes_leave_both_stores_answering_alike(dirs: Dirs, space: str) -> None:
    name = f"docs_{space}"
    for backend in ("chroma", "qdrant"):
        with VectorDBClient(dirs.env(backend)) as db:
            write_sequence(db, name)
    chroma, qdrant = read_all(dirs.env("chroma"), name), read_all(dirs.env("qdrant"), name)

    assert chroma["count"] == qdrant["count"] == 5
    assert chroma["full"].ids == [UUID_ID, "a", "b", "d", "g"]  # ordered by Chroma id
    for key in ("full", "default", "by_ids", "where", "page", "ids_where_page"):
        assert canonical(qdrant[key]) == canonical(chroma[key]), key
    expected_vectors = chroma["full"].embeddings
    if space == "cosine":  # Qdrant keeps the unit vectors the migration writes
        expected_vectors = normalise_rows(expected_vectors)
    np.testing.assert_allclose(qdrant["full"].embeddings, expected_vectors, atol=1e-6)
    searches = zip(
        qdrant["search"] + [qdrant["search_where"]], chroma["search"] + [chroma["search_where"]], strict=True
    )
    for got, expected in searches:
        assert got.ids == expected.ids
        np.testing.assert_allclose(got.distances, expected.distances, atol=1e-4)
        assert json.dumps(got.metadatas, sort_keys=True) == json.dumps(expected.metadatas, sort_keys=True)
        assert (got.documents, got.uris) == (expected.documents, expected.uris)

    # Chroma's semantics, stated outright (both stores agree, as checked above)
    by_id = dict(zip(chroma["full"].ids, chroma["full"].metadatas, strict=True))
    docs = dict(zip(chroma["full"].ids, chroma["full"].documents, strict=True))
    assert by_id["a"] == {"f": 1.0, "flag": True, "tags": ["x", "y"], "extra": "yes"}  # add ignored, then merged
    assert docs["a"] == "doc a2" and docs[UUID_ID] == "doc c" and docs["d"] == "doc d2"
    assert by_id["b"] == {} and by_id["d"] == {"page": 4} and by_id["g"] == {"page": 4.0}
    assert type(by_id["g"]["page"]) is float and type(by_id["d"]["page"]) is int


def test_the_chroma_side_can_be_migrated_to_exactly_what_the_wrapper_wrote(dirs: Dirs) -> None:
    """After the same writes, the Qdrant folder the wrapper wrote holds exactly the migration of the ChromaDB
    directory (the checks `runbook verify` makes: ids, vectors, documents, typed metadata, uris, nothing else)."""
    for backend in ("chroma", "qdrant"):
        with VectorDBClient(dirs.env(backend)) as db:
            for space in SPACES:
                write_sequence(db, f"docs_{space}")
    assert assert_exact_copy(dirs.chroma, dirs.qdrant) == 5 * len(SPACES)


@pytest.mark.parametrize("space", SPACES)
def test_a_written_point_is_byte_for_byte_the_migrated_point(dirs: Dirs, space: str) -> None:
    from runbook_lib.chroma.source import RecordBatch
    from runbook_lib.steps.migrate.pipeline import to_points

    name = f"docs_{space}"
    ids = ["p-1", str(uuid.UUID(int=7)), "p-3", "p-4"]
    vectors = np.stack([np.asarray(vec(100 + k), dtype=np.float32) for k in range(4)])
    documents = ["one", None, "three", "four"]
    metadatas: list[dict[str, Any] | None] = [{"i": 1, "x": 1.0, "b": False}, None, {"l": [1, 2]}, {"s": "v"}]
    uris = [None, "s3://two", None, None]
    with VectorDBClient(dirs.env("qdrant")) as db:
        db.add(name, ids[:2], vectors[:2], documents=documents[:2], metadatas=metadatas[:2], uris=uris[:2])
        db.upsert(name, ids[2:], vectors[2:], documents=documents[2:], metadatas=metadatas[2:], uris=uris[2:])
        db.update(name, ["p-4"], documents=["four"])  # a payload-only rewrite keeps the vector bit for bit
    migrated = to_points(0, RecordBatch(ids, vectors, documents, metadatas, uris), normalise=space == "cosine")
    # the migration's own write path (QdrantTarget.upsert of to_points) into a twin collection of the same folder
    with open_target(dirs.settings()) as target:
        target.create_collection("migrated", size=DIM, distance=qdrant_distance(space))
        target.upsert("migrated", migrated.ids, migrated.vectors, migrated.payloads)
    written = read_qdrant(dirs.qdrant, name)["points"]
    copied = read_qdrant(dirs.qdrant, "migrated")["points"]
    assert set(written) == set(copied) == {point_id(i) for i in ids}
    for k, pid in enumerate(migrated.ids):
        (vector, payload), (copied_vector, copied_payload) = written[pid], copied[pid]
        if ids[k] != "p-4":
            assert vector.tobytes() == copied_vector.tobytes(), pid  # the same float32 bits
        # p-4's payload-only update keeps the vector on a server; qdrant-client's local mode re-stores its in-memory
        # copy, which it normalised once more for Cosine (an ulp apart at most)
        np.testing.assert_allclose(vector, copied_vector, atol=1e-7)
        assert json.dumps(payload) == json.dumps(copied_payload), pid  # the same keys, order, values and types
        assert payload == build_payload(ids[k], documents[k], metadatas[k], uris[k])
        np.testing.assert_allclose(vector, migrated.vectors[k], atol=1e-6)


# --- errors ----------------------------------------------------------------------------------------
@pytest.fixture(params=("chroma", "qdrant"))
def seeded(request: pytest.FixtureRequest, dirs: Dirs) -> Iterator[VectorDBClient]:
    with VectorDBClient(dirs.env(request.param)) as db:
        db.add("docs_l2", ["a", "b"], [vec(1), vec(2)], metadatas=[{"k": 1}, {"k": 2}])
        yield db


def test_wrong_dimension_is_the_dimension_error(seeded: VectorDBClient) -> None:
    for write in (
        lambda: seeded.add("docs_l2", ["c"], [[0.1, 0.2]]),
        lambda: seeded.upsert("docs_l2", ["a"], [[0.1, 0.2, 0.3]]),
        lambda: seeded.update("docs_l2", ["a"], embeddings=[[0.1] * (DIM + 1)]),
    ):
        with pytest.raises(DimensionMismatchError) as info:
            write()
        assert "docs_l2" in str(info.value) and str(DIM) in str(info.value) and "\n" not in str(info.value)
    assert seeded.count("docs_l2") == 2


def test_unknown_collection_is_the_one_sentence_error_and_is_not_created(seeded: VectorDBClient) -> None:
    for call in (
        lambda: seeded.add("nope", ["a"], [vec(1)]),
        lambda: seeded.update("nope", ["a"], documents=["x"]),
        lambda: seeded.delete("nope", ids=["a"]),
        lambda: seeded.get("nope"),
        lambda: seeded.count("nope"),
    ):
        with pytest.raises(UnknownCollectionError, match="'nope'"):
            call()
    assert seeded.health()["collections"] == len(SPACES)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda db: db.add("docs_l2", ["x", "x"], [vec(1), vec(2)]), "unique"),
        (lambda db: db.add("docs_l2", [], []), "non-empty"),
        (lambda db: db.add("docs_l2", ["x"], [vec(1), vec(2)]), "2 rows for 1 ids"),
        (lambda db: db.add("docs_l2", ["x"], [[float("nan")] * DIM]), "NaN"),
        (lambda db: db.add("docs_l2", ["x"], [vec(1)], metadatas=[{}]), "empty"),
        (lambda db: db.add("docs_l2", ["x"], [vec(1)], metadatas=[{"k": None}]), "None"),
        (lambda db: db.add("docs_l2", ["x"], [vec(1)], metadatas=[{"k": {"a": 1}}]), "dict"),
        (lambda db: db.add("docs_l2", ["x"], [vec(1)], metadatas=[{"k": [1, "a"]}]), "one type"),
        (lambda db: db.add("docs_l2", ["x"], [vec(1)], metadatas=[{"k": float("inf")}]), "finite"),
        (lambda db: db.add("docs_l2", ["x"], [vec(1)], documents=["a", "b"]), "2 entries"),
        (lambda db: db.update("docs_l2", ["a"]), "at least one"),
        (lambda db: db.delete("docs_l2"), "ids or a non-empty where"),
        (lambda db: db.get("docs_l2", include=["distances"]), "include"),
        (lambda db: db.get("docs_l2", limit=-1), "limit"),
    ],
)
def test_invalid_arguments_change_nothing(seeded: VectorDBClient, call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(seeded)
    assert seeded.get("docs_l2", include=[]).ids == ["a", "b"]


def test_get_result_reads_like_chromas(seeded: VectorDBClient) -> None:
    result = seeded.get("docs_l2", ids="b", include=["embeddings", "metadatas"])
    assert result["ids"] == ["b"] and result["metadatas"] == [{"k": 2}] and result["documents"] is None
    assert result["embeddings"].shape == (1, DIM) and result["embeddings"].dtype == np.float32
    assert result["included"] == ["embeddings", "metadatas"] and len(result) == 1
    assert seeded.get("docs_l2", where={"k": 3}).ids == []
