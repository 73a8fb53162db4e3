"""VectorDBClient: the same answers from ChromaDB and Qdrant (real chromadb, real Qdrant Edge: the engine).

The fixture builds a ChromaDB directory with three collections (cosine, l2, ip; 60 records, dimension 8,
metadata of every type, some keys missing, some records without metadata, some list values) and copies
it into an embedded Qdrant with the mapping's point ids and payload layout: Qdrant Edge for every test, and
for the congruence tests (search and filters, through ``both``) qdrant-client's local mode too, so they run on
both targets and each must equal Chroma. Every test opens its own clients and closes them: an embedded target
has one user at a time.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from qdrant_client import models

from runbook_lib.app import SearchResult, UnknownCollectionError, VectorDBClient
from runbook_lib.config.settings import QdrantSettings
from runbook_lib.core.filters import payload_path, to_qdrant_filter
from runbook_lib.core.mapping import build_payload, point_id, qdrant_distance
from runbook_lib.errors import ConfigError, DimensionMismatchError, RunbookError
from runbook_lib.qdrant.connect import open_target

from conftest import TARGET_KINDS, TARGET_VARIABLE, holding_qdrant

DIM = 8
N = 60
SPACES = ("cosine", "l2", "ip")
BACKENDS = ("chroma", "qdrant")


def _collection(space: str) -> str:
    return f"docs_{space}"


def _metadata(i: int) -> dict[str, Any] | None:
    if i % 13 == 12:
        return None  # a record without metadata
    meta: dict[str, Any] = {}
    if i % 10 != 0:
        meta["source"] = ("web", "pdf", "email")[i % 3]
    if i % 11 != 0:
        # page is mostly an int, sometimes the same number stored as a float
        meta["page"] = float(i % 7) if i % 5 == 1 else i % 7
    if i % 6 != 0:
        meta["score"] = round(i * 0.1, 2)
    if i % 9 != 0:
        meta["published"] = i % 2 == 0
    if i % 3 == 1:
        meta["flag"] = 1
    elif i % 3 == 2:
        meta["flag"] = True
    if i % 4 == 0:
        meta["tags"] = [f"t{i % 3}", f"t{(i + 1) % 3 + 3}"]  # a list of strings
    elif i % 8 == 5:
        meta["tags"] = "t1"  # the same key holding a plain string
    if i % 5 == 2:
        meta["nums"] = [i % 4, i % 4 + 1]  # a list of ints
    elif i % 5 == 3:
        meta["nums"] = [float(i % 4), 0.5]  # a list of floats
    if i % 7 == 3:
        meta["dotted.key"] = "x"
    return meta


@dataclass(frozen=True)
class Stores:
    chroma_dir: Path
    qdrant_dir: Path
    outputs: Path
    vectors: np.ndarray  # (N, DIM), identical in every collection
    ids: list[str]
    metadatas: list[dict[str, Any] | None]
    kind: str = "edge"  # the embedded Qdrant target: "edge" (QDRANT_EDGE_PATH) or "local" (QDRANT_PATH)

    def env(self, backend: str, **extra: str) -> dict[str, str]:
        return {
            "VECTOR_DB": backend,
            "CHROMA_PERSIST_DIR": str(self.chroma_dir),
            TARGET_VARIABLE[self.kind]: str(self.qdrant_dir),
            "RUNBOOK_OUTPUTS": str(self.outputs),
            **extra,
        }


def _build_stores(root: Path, kind: str) -> Stores:
    chroma_dir, qdrant_dir = root / "chroma", root / "qdrant"
    rng = np.random.default_rng(20240611)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    # ids: plain strings and canonical UUIDs (kept as point ids by the mapping)
    ids = [f"doc-{i:03d}" if i % 4 else str(uuid.UUID(int=i + 1)) for i in range(N)]
    metadatas = [_metadata(i) for i in range(N)]
    documents = [None if i % 17 == 16 else f"document {i}" for i in range(N)]
    uris = [f"s3://bucket/{i}.txt" if i % 3 == 0 else None for i in range(N)]

    client = chromadb.PersistentClient(path=str(chroma_dir))
    for space in SPACES:
        col = client.create_collection(_collection(space), metadata={"hnsw:space": space})
        # chromadb's add() takes None metadata only for all records or none: add them one by one
        for i in range(N):
            col.add(
                ids=[ids[i]],
                embeddings=[vectors[i].tolist()],
                documents=[documents[i]] if documents[i] is not None else None,
                metadatas=[metadatas[i]] if metadatas[i] is not None else None,
                uris=[uris[i]] if uris[i] is not None else None,
            )
    client.close()

    settings = QdrantSettings(edge_path=qdrant_dir) if kind == "edge" else QdrantSettings(path=qdrant_dir)
    with open_target(settings) as qdrant:
        for space in SPACES:
            name = _collection(space)
            qdrant.create_collection(name, size=DIM, distance=qdrant_distance(space))
            qdrant.upsert(
                name,
                [point_id(i) for i in ids],
                vectors,
                [build_payload(ids[i], documents[i], metadatas[i], uris[i]) for i in range(N)],
            )
    return Stores(chroma_dir, qdrant_dir, root / "outputs", vectors, ids, metadatas, kind)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    """The stores on Qdrant Edge (the engine)."""
    return _build_stores(tmp_path_factory.mktemp("vector_db"), "edge")


@pytest.fixture(scope="module", params=TARGET_KINDS)
def congruence_stores(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stores:
    """The stores on each embedded target (Edge, local mode): the congruence tests run on both."""
    if request.param == "edge":
        return request.getfixturevalue("stores")  # type: ignore[no-any-return]
    return _build_stores(tmp_path_factory.mktemp("vector_db_local"), request.param)


@pytest.fixture
def both(congruence_stores: Stores) -> Iterator[tuple[VectorDBClient, VectorDBClient]]:
    """Chroma's client and Qdrant's, on Edge and on local mode (the same data and vectors as ``stores``)."""
    with (
        VectorDBClient(congruence_stores.env("chroma")) as chroma,
        VectorDBClient(congruence_stores.env("qdrant")) as qdrant,
    ):
        yield chroma, qdrant


def _queries(stores: Stores) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(size=DIM).astype(np.float32) for _ in range(4)] + [stores.vectors[5], stores.vectors[12]]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- congruence ------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", SPACES)
def test_same_neighbours_and_distances_in_both_backends(
    stores: Stores, both: tuple[VectorDBClient, VectorDBClient], space: str
) -> None:
    chroma, qdrant = both
    for query in _queries(stores):
        expected = chroma.search(_collection(space), query, limit=10)
        got = qdrant.search(_collection(space), query, limit=10)
        assert len(expected) == 10
        assert got.ids == expected.ids
        np.testing.assert_allclose(got.distances, expected.distances, atol=1e-4, rtol=0)
        assert got.documents == expected.documents
        assert got.metadatas == expected.metadatas
        assert got.uris == expected.uris


@pytest.mark.parametrize("backend", BACKENDS)
def test_result_shape(stores: Stores, backend: str) -> None:
    with VectorDBClient(stores.env(backend)) as db:
        # record 12 has no metadata and a uri; querying with its own vector finds it first
        result = db.search("docs_l2", stores.vectors[12], limit=5)
    assert isinstance(result, SearchResult)
    assert result.ids[0] == stores.ids[12]
    assert result.distances[0] == pytest.approx(0.0, abs=1e-4)
    assert result.metadatas[0] == {}
    assert result.documents[0] == "document 12"
    assert result.uris[0] == "s3://bucket/12.txt"
    assert result.distances == sorted(result.distances)
    assert all(isinstance(m, dict) for m in result.metadatas)
    assert len(result.ids) == len(result.documents) == len(result.metadatas) == len(result.uris) == 5


# --- filters ---------------------------------------------------------------------------------------
FILTERS: list[dict[str, Any]] = [
    {"source": "web"},
    {"source": {"$eq": "pdf"}},
    {"source": {"$ne": "web"}},  # Chroma: records without "source" match $ne
    {"page": 3},  # matches page 3 and page 3.0
    {"page": 3.0},
    {"page": {"$ne": 3}},
    {"page": {"$gt": 3}},
    {"page": {"$gt": 2.5}},
    {"page": {"$gte": 4}},
    {"score": {"$lt": 2.5}},
    {"score": {"$lte": 1}},
    {"score": {"$in": [0.5, 1.5, 2.3]}},
    {"page": {"$in": [1, 2]}},
    {"page": {"$nin": [1.0, 2.0]}},
    {"page": "3"},  # a string never equals a number: nothing
    {"published": True},
    {"published": {"$ne": True}},
    {"published": {"$in": [False]}},
    {"published": {"$nin": [False]}},
    {"flag": 1},  # an int never equals a bool
    {"flag": True},
    {"flag": {"$ne": 1}},
    {"flag": {"$gte": 1}},  # ranges never match booleans
    {"source": {"$in": ["web", "email"]}},
    {"source": {"$nin": ["web"]}},
    {"tags": "t1"},  # only the plain string, not lists holding "t1"
    {"tags": {"$ne": "t1"}},
    {"tags": {"$in": ["t1", "t0"]}},
    {"tags": {"$contains": "t1"}},  # only lists
    {"tags": {"$not_contains": "t1"}},
    {"nums": {"$contains": 2}},  # int lists only
    {"nums": {"$contains": 2.0}},  # float lists only
    {"nums": {"$contains": 0.5}},
    {"nums": {"$not_contains": 1}},
    {"nums": {"$gt": 0}},  # scalar operators do not see lists: nothing
    {"dotted.key": "x"},
    {"missing_key": {"$ne": "x"}},  # everything
    {"missing_key": {"$nin": ["x"]}},
    {"$and": [{"source": "web"}, {"page": {"$gt": 2}}]},
    {"$or": [{"source": "pdf"}, {"published": False}]},
    {
        "$and": [
            {"$or": [{"source": "web"}, {"source": "email"}]},
            {"$or": [{"page": {"$lt": 2}}, {"score": {"$gt": 4}}]},
        ]
    },
    {"$or": [{"$and": [{"page": 3}, {"published": True}]}, {"$and": [{"flag": True}, {"tags": {"$ne": "t1"}}]}]},
    {"$and": [{"source": {"$ne": "web"}}, {"page": {"$nin": [0, 1]}}, {"published": {"$ne": False}}]},
]


def test_every_filter_selects_the_same_records_in_both_backends(
    stores: Stores, both: tuple[VectorDBClient, VectorDBClient]
) -> None:
    chroma, qdrant = both
    query = stores.vectors[0]
    non_trivial = 0
    for where in FILTERS:
        expected = chroma.search("docs_cosine", query, limit=N + 10, where=where)
        got = qdrant.search("docs_cosine", query, limit=N + 10, where=where)
        assert set(got.ids) == set(expected.ids), f"{where}: qdrant {sorted(got.ids)} != chroma {sorted(expected.ids)}"
        assert got.ids == expected.ids, where  # and in the same order
        non_trivial += 0 < len(expected.ids) < N
    assert non_trivial >= len(FILTERS) - 6  # the fixture exercises the filters, not only empty/full sets


def test_filter_semantics_spot_checks(stores: Stores, both: tuple[VectorDBClient, VectorDBClient]) -> None:
    """A few expectations stated outright, so a change in chromadb's behaviour shows up here."""
    _, qdrant = both
    q = stores.vectors[0]

    def ids(where: dict[str, Any]) -> set[str]:
        return set(qdrant.search("docs_cosine", q, limit=N + 10, where=where).ids)

    def where_meta(pred: Any) -> set[str]:
        return {stores.ids[i] for i, m in enumerate(stores.metadatas) if pred(m or {})}

    # $ne includes the records without the key (and without metadata)
    assert ids({"source": {"$ne": "web"}}) == where_meta(lambda m: m.get("source") != "web")
    # int and float are equal by value, bool is not a number
    assert ids({"page": 3}) == where_meta(lambda m: type(m.get("page")) in (int, float) and m["page"] == 3)
    assert ids({"flag": 1}) == where_meta(lambda m: type(m.get("flag")) is int and m["flag"] == 1)
    # scalar equality does not look inside lists; $contains only looks inside lists
    assert ids({"tags": "t1"}) == where_meta(lambda m: m.get("tags") == "t1")
    assert ids({"tags": {"$contains": "t1"}}) == where_meta(
        lambda m: isinstance(m.get("tags"), list) and "t1" in m["tags"]
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("where", "named"),
    [
        ({"source": {"$regex": "w.*"}}, "$regex"),
        ({"source": {"$like": "web"}}, "$like"),
        ({"$not": {"source": "web"}}, "$not"),
        ({"$nor": [{"source": "web"}, {"page": 1}]}, "$nor"),
    ],
)
def test_unsupported_operator_is_a_config_error(
    stores: Stores, backend: str, where: dict[str, Any], named: str
) -> None:
    with VectorDBClient(stores.env(backend)) as db, pytest.raises(ConfigError, match=named.replace("$", r"\$")):
        db.search("docs_cosine", stores.vectors[0], where=where)


@pytest.mark.parametrize(
    "where",
    [
        {"source": "web", "page": 1},  # two keys: Chroma wants $and
        {"$and": [{"source": "web"}]},  # $and/$or need two expressions
        {"$or": []},
        {"page": {"$gt": "3"}},  # ranges take numbers
        {"published": {"$gte": True}},
        {"page": {"$in": []}},
        {"page": {"$in": [1, 2.5]}},  # one type per list
        {"page": {"$in": [1, True]}},
        {"page": {"$in": 1}},
        {"page": {"$eq": [1]}},
        {"page": None},
        {"page": {"$eq": 1, "$ne": 2}},
        {"page": float("nan")},
        {"#document": {"$contains": "x"}},
        {'quo"te': 1},
    ],
)
def test_invalid_filters_are_config_errors(where: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        to_qdrant_filter(where)


def test_payload_paths_are_quoted_when_needed() -> None:
    assert payload_path("page") == "metadata.page"
    assert payload_path("a-b_c9") == "metadata.a-b_c9"
    assert payload_path("dotted.key") == 'metadata."dotted.key"'
    assert payload_path("with space") == 'metadata."with space"'
    assert to_qdrant_filter({}) == models.Filter()


# --- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_dimension(stores: Stores, backend: str) -> None:
    with VectorDBClient(stores.env(backend)) as db, pytest.raises(DimensionMismatchError) as info:
        db.search("docs_ip", [0.1, 0.2, 0.3, 0.4])
    err = info.value
    assert (err.collection, err.expected, err.found) == ("docs_ip", DIM, 4)  # type: ignore[attr-defined]
    assert "docs_ip" in str(err) and "8" in str(err) and "4" in str(err)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_collection(stores: Stores, backend: str) -> None:
    with VectorDBClient(stores.env(backend)) as db, pytest.raises(UnknownCollectionError) as info:
        db.search("no_such_collection", stores.vectors[0])
    message = str(info.value)
    assert isinstance(info.value, RunbookError)
    assert "no_such_collection" in message
    assert ("Qdrant" if backend == "qdrant" else "ChromaDB") in message
    assert "\n" not in message


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_collection_is_not_created(stores: Stores, backend: str) -> None:
    with VectorDBClient(stores.env(backend)) as db:
        with pytest.raises(UnknownCollectionError):
            db.search("never_created", stores.vectors[0])
        assert db.health()["collections"] == len(SPACES)


def test_bogus_backend_is_a_config_error(stores: Stores) -> None:
    with pytest.raises(ConfigError, match="VECTOR_DB"):
        VectorDBClient(stores.env("bogus"))


def test_backend_defaults_to_qdrant(stores: Stores) -> None:
    env = stores.env("qdrant")
    del env["VECTOR_DB"]
    with VectorDBClient(env) as db:
        assert db.backend == "qdrant"


# --- health and lifecycle --------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_health_ok(stores: Stores, backend: str) -> None:
    with VectorDBClient(stores.env(backend)) as db:
        report = db.health()
    assert report["backend"] == backend
    assert report["reachable"] is True
    assert report["collections"] == len(SPACES)
    assert isinstance(report["latency_ms"], float) and report["latency_ms"] >= 0
    assert report["error"] is None


@pytest.mark.parametrize(
    ("backend", "extra"),
    [
        ("qdrant", {"QDRANT_URL": "http://127.0.0.1:{port}"}),
        ("chroma", {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": "{port}"}),
    ],
)
def test_unreachable_server(stores: Stores, backend: str, extra: dict[str, str]) -> None:
    port = str(_closed_port())
    env = stores.env(backend, **{k: v.format(port=port) for k, v in extra.items()})
    db = VectorDBClient(env, health_timeout_s=2)  # construction does not connect
    try:
        report = db.health()
        assert report["reachable"] is False
        assert report["collections"] is None and report["latency_ms"] is None
        assert isinstance(report["error"], str) and report["error"]
        # the probe got as far as the network (a bug in building its client must not pass for "unreachable")
        assert "Cannot reach" in report["error"] or "did not answer" in report["error"], report["error"]
        with pytest.raises(RunbookError):
            db.search("docs_cosine", stores.vectors[0])
    finally:
        db.close()


def test_a_search_against_a_hung_chroma_server_fails_within_chroma_timeout(stores: Stores, silent_server: int) -> None:
    """The app opens its Chroma client through the runbook's factory, so ``CHROMA_TIMEOUT`` bounds a server that
    accepts connections and never answers."""
    env = stores.env("chroma", CHROMA_HOST="127.0.0.1", CHROMA_PORT=str(silent_server), CHROMA_TIMEOUT="1")
    outcome: dict[str, BaseException] = {}

    def search() -> None:
        with VectorDBClient(env) as db:
            try:
                db.search("docs_cosine", stores.vectors[0])
            except BaseException as exc:  # recorded and checked below
                outcome["error"] = exc

    worker = threading.Thread(target=search, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the app's search waited on a hung Chroma server instead of timing out"
    error = outcome.get("error")
    assert isinstance(error, RunbookError), error
    assert "Cannot reach the Chroma server" in str(error) and "CHROMA_TIMEOUT=1" in str(error), error


def test_missing_directories_are_reported(stores: Stores, tmp_path: Path) -> None:
    env = stores.env("qdrant", QDRANT_EDGE_PATH=str(tmp_path / "nowhere"))
    with VectorDBClient(env) as db:
        report = db.health()
        assert report["reachable"] is False and "QDRANT_EDGE_PATH" in report["error"]
        with pytest.raises(ConfigError, match="QDRANT_EDGE_PATH"):
            db.search("docs_cosine", stores.vectors[0])
    assert not (tmp_path / "nowhere").exists()
    env = stores.env("chroma", CHROMA_PERSIST_DIR=str(tmp_path / "no_chroma"))
    with VectorDBClient(env) as db, pytest.raises(ConfigError, match="CHROMA_PERSIST_DIR"):
        db.search("docs_cosine", stores.vectors[0])
    assert not (tmp_path / "no_chroma").exists()


def test_close_releases_the_qdrant_lock(stores: Stores) -> None:
    with VectorDBClient(stores.env("qdrant")) as db:
        db.search("docs_cosine", stores.vectors[0], limit=1)
    assert db.closed
    with pytest.raises(RunbookError, match="closed"):
        db.search("docs_cosine", stores.vectors[0])
    with holding_qdrant(stores.qdrant_dir):  # would fail while the lock is held
        pass
    second = VectorDBClient(stores.env("qdrant"))
    try:
        assert second.search("docs_cosine", stores.vectors[0], limit=1).ids == [stores.ids[0]]
    finally:
        second.close()
        second.close()  # idempotent
