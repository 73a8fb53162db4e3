"""``runbook_lib.app.compat.Client``: the same app code against ``chromadb.PersistentClient`` and against the drop-in
after a real migration of the same data gives the same results (real chromadb, real migrate step, Qdrant Edge and
Qdrant local mode).

The app code reads as an app written against chromadb 1.5 reads: ``get_collection(...).query(query_embeddings=...,
n_results=..., where=..., where_document=..., include=[...])``, ``get`` with ``limit``/``offset``, ``peek``, ``count``,
then writes (``add``/``upsert``/``update``/``delete``) applied to both and read back. A bounded subset of
chromadb's own property tests (``chromadb/test/property/test_filtering.py``: ``where`` + ``where_document`` + ids
on ``get``) runs its strategies against both.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

from runbook_lib.app.compat import Client
from runbook_lib.app.errors import UnknownCollectionError
from runbook_lib.config.settings import QdrantSettings
from runbook_lib.core.document_filters import to_qdrant_prefilter
from runbook_lib.core.filters import to_qdrant_filter
from runbook_lib.errors import ConfigError, DimensionMismatchError
from runbook_lib.qdrant.connect import open_target
from runbook_lib.steps.migrate.engine import migrate

from conftest import run_step_inprocess

DIM = 6
N = 90
NAMES = {"compat_l2": "l2", "compat_cosine": "cosine"}
WORDS = ("alpha", "Beta", "gamma delta", "café", "x_y", "100%")


def _records(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    vectors = np.random.default_rng(seed).normal(size=(N, DIM)).astype(np.float32)
    metadatas: list[dict[str, Any] | None] = []
    for i in range(N):
        meta: dict[str, Any] = {"i": i, "score": rng.random(), "tag": f"t{i % 4}", "flag": i % 3 == 0}
        if i % 5 == 0:
            meta["tags"] = [f"t{i % 2}", "z"]
        metadatas.append(None if i % 11 == 10 else meta)
    documents = [None if i % 13 == 12 else " ".join(rng.sample(WORDS, 2)) for i in range(N)]
    return {
        "ids": [f"id-{i:03d}" for i in range(N)],
        "embeddings": vectors,
        "metadatas": metadatas,
        "documents": documents,
        "uris": [f"s3://b/{i}" if i % 4 == 0 else None for i in range(N)],
    }


#: The Qdrant targets the drop-in is proven on: Qdrant Edge (the server's engine) and qdrant-client's local mode.
TARGET_VARIABLES = {"edge": "QDRANT_EDGE_PATH", "local": "QDRANT_PATH"}


def _target(kind: str, path: Path) -> dict[str, str]:
    """The environment naming a Qdrant target of ``kind`` at ``path``, its storage made (the app opens only a target
    that holds storage: local mode's ``meta.json``, Edge's folder)."""
    path.mkdir(parents=True, exist_ok=True)
    if kind == "local":
        QdrantClient(path=str(path)).close()
    return {TARGET_VARIABLES[kind]: str(path)}


@pytest.fixture(scope="module", params=sorted(TARGET_VARIABLES))
def migrated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A Chroma directory, migrated by the real migrate step into Qdrant Edge or local mode; the env of both sides."""
    root: Path = tmp_path_factory.mktemp("compat")
    chroma_dir, qdrant_dir, outputs = root / "chroma", root / "qdrant", root / "outputs"
    client = chromadb.PersistentClient(path=str(chroma_dir))
    for seed, (name, space) in enumerate(NAMES.items()):
        col = client.create_collection(name, configuration={"hnsw": {"space": space}}, embedding_function=None)
        recs = _records(seed)
        for i in range(N):  # chromadb takes None metadata only for all records of a call or none
            col.add(
                ids=[recs["ids"][i]],
                embeddings=[recs["embeddings"][i].tolist()],
                metadatas=[recs["metadatas"][i]] if recs["metadatas"][i] else None,
                documents=[recs["documents"][i]] if recs["documents"][i] is not None else None,
                uris=[recs["uris"][i]] if recs["uris"][i] else None,
            )
    client.close()
    env = {
        "CHROMA_PERSIST_DIR": str(chroma_dir),
        **_target(request.param, qdrant_dir),
        "RUNBOOK_OUTPUTS": str(outputs),
        "RUNBOOK_PROGRESS": "off",
        "MPLBACKEND": "Agg",
    }
    _migrate(env)
    yield {"chroma_dir": chroma_dir, "env": {**env, "VECTOR_DB": "qdrant"}, "kind": request.param}


def _migrate(env: dict[str, str]) -> Any:
    """Run the real migrate step with exactly this environment; return its step."""
    with pytest.MonkeyPatch.context() as mp:
        for key in ("CHROMA_HOST", "QDRANT_URL", "QDRANT_PATH", "QDRANT_EDGE_PATH", "VECTOR_DB", "RUNBOOK_HEADLESS"):
            mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        step, result = run_step_inprocess("migrate", migrate)
    assert result.ok, result.errors
    return step


@pytest.fixture
def both(migrated: dict[str, Any]) -> Iterator[tuple[Any, Client]]:
    chroma = chromadb.PersistentClient(path=str(migrated["chroma_dir"]))
    compat = Client(migrated["env"])
    yield chroma, compat
    compat.close()
    chroma.close()


#: The (where, where_document) pairs the app code below sends.
APP_FILTERS: dict[str, tuple[Any, Any]] = {
    "query_where": ({"tag": {"$in": ["t1", "t2"]}}, None),
    "query_document": ({"i": {"$gte": 10}}, {"$contains": "Beta"}),
    "get_where": ({"$and": [{"flag": True}, {"tags": {"$contains": "z"}}]}, None),
    "get_document": (None, {"$or": [{"$regex": "^gamma"}, {"$not_contains": "a"}]}),
}


def _app_reads(client: Any, name: str) -> dict[str, Any]:
    """What an app written against chromadb reads (the same calls for both clients)."""
    col = client.get_collection(name)
    queries = np.random.default_rng(5).normal(size=(3, DIM)).astype(np.float32)
    out: dict[str, Any] = {"count": col.count()}
    out["query"] = col.query(
        query_embeddings=queries.tolist(), n_results=7, include=["documents", "metadatas", "distances", "uris"]
    )
    where, document = APP_FILTERS["query_where"]
    out["query_where"] = col.query(query_embeddings=queries[0].tolist(), n_results=5, where=where)
    where, document = APP_FILTERS["query_document"]
    out["query_document"] = col.query(query_embeddings=queries[:2], n_results=4, where=where, where_document=document)
    out["get_ids"] = col.get(ids=["id-001", "id-003", "id-012"], include=["documents", "metadatas", "uris"])
    out["get_where"] = col.get(where=APP_FILTERS["get_where"][0])
    out["get_document"] = col.get(where_document=APP_FILTERS["get_document"][1])
    out["get_embeddings"] = col.get(ids=["id-004"], include=["embeddings"])
    return out


def _same(chroma: Any, compat: Any, path: str = "") -> None:
    """Equal results: distances within float32 rounding, embeddings within 1e-6, the rest exactly."""
    if isinstance(chroma, dict):
        assert set(chroma) == set(compat), path
        for key in chroma:
            _same(chroma[key], compat[key], f"{path}.{key}")
    elif isinstance(chroma, np.ndarray) or (path.endswith("distances") and chroma is not None):
        assert np.allclose(np.asarray(chroma, dtype=np.float64), np.asarray(compat, dtype=np.float64), atol=1e-5), path
    elif isinstance(chroma, list) and chroma and isinstance(chroma[0], np.ndarray):
        assert len(chroma) == len(compat), path
        for i, (a, b) in enumerate(zip(chroma, compat, strict=True)):
            _same(a, b, f"{path}[{i}]")
    else:
        assert chroma == compat, path


@pytest.mark.parametrize("name", sorted(NAMES))
def test_the_same_app_code_reads_the_same(both: tuple[Any, Client], name: str) -> None:
    chroma, compat = both
    expected, got = _app_reads(chroma, name), _app_reads(compat, name)
    if NAMES[name] == "cosine":  # Qdrant keeps a Cosine collection's vectors unit-length (the migration's rule)
        rows = expected["get_embeddings"]["embeddings"]
        expected["get_embeddings"]["embeddings"] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    # chromadb orders a get by insertion; the drop-in by id, or as the ids were asked (the same here)
    _same(expected, got)
    assert got["query"]["included"] == ["documents", "metadatas", "distances", "uris"]
    assert got["query"]["embeddings"] is None and got["query"]["data"] is None


def test_peek_and_listing(both: tuple[Any, Client]) -> None:
    chroma, compat = both
    _same(chroma.get_collection("compat_l2").peek(3), compat.get_collection("compat_l2").peek(3))
    assert sorted(c.name for c in compat.list_collections()) == sorted(c.name for c in chroma.list_collections())
    with pytest.raises(UnknownCollectionError):
        compat.get_collection("missing_collection")


def test_writes_then_reads_agree(tmp_path: Path, migrated: dict[str, Any]) -> None:
    """add / upsert / update / delete through both clients on fresh copies, then the same reads."""
    chroma = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    compat = Client({**_without_target(migrated["env"]), **_target(migrated["kind"], tmp_path / "qdrant")})
    try:
        for client in (chroma, compat):
            col = client.get_or_create_collection(
                "written", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
            )
            col.add(
                ids=[f"w{i:02d}" for i in range(12)],
                embeddings=_same_rows(7),
                documents=[f"doc {i} {'odd' if i % 2 else 'even'}" for i in range(12)],
                metadatas=[{"n": i, "v": 0.9739536643028259 if i == 3 else i / 7} for i in range(12)],
            )
        vectors = _same_rows(12)
        for client in (chroma, compat):
            col = client.get_collection("written", embedding_function=None)
            col.upsert(ids=[f"w{i:02d}" for i in range(12)], embeddings=vectors)
            col.update(
                ids=["w01", "w02"],
                metadatas=[{"n": 100}, {"extra": "yes"}],
                documents=["changed", "also changed"],
                embeddings=[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]],
            )
            col.upsert(ids=["w12"], embeddings=[[0.5, 0.5, 0.5, 0.5]], documents=["new odd"], metadatas=[{"n": 12}])
            col.delete(where_document={"$contains": "even"}, where={"n": {"$gt": 6}})
            col.delete(ids=["w05"])
        for reader in (
            lambda c: c.get_collection("written", embedding_function=None).get(include=["documents", "metadatas"]),
            lambda c: c.get_collection("written", embedding_function=None).get(where={"v": 0.9739536643028259}),
            lambda c: c.get_collection("written", embedding_function=None).query(
                query_embeddings=[[1, 0, 0, 0]], n_results=20
            ),
            lambda c: {"count": c.get_collection("written", embedding_function=None).count()},
        ):
            _same(reader(chroma), reader(compat))
        assert compat.get_collection("written").get(where={"v": 0.9739536643028259})["ids"] == ["w03"]
    finally:
        compat.close()
        chroma.close()


def _without_target(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in TARGET_VARIABLES.values()}


def _same_rows(seed: int) -> list[list[float]]:
    return np.random.default_rng(seed).normal(size=(12, 4)).round(3).tolist()


@register_embedding_function
class LetterCounts(EmbeddingFunction[Documents]):
    """A deterministic embedding function registered through chromadb's registry: letter counts of a-f."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, input: Documents) -> Embeddings:
        return [np.array([self.scale * (text.count(c) + 0.5) for c in "abcdef"], dtype=np.float32) for text in input]

    @staticmethod
    def name() -> str:
        return "runbook_test_letter_counts"

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> LetterCounts:
        return LetterCounts(scale=float(config["scale"]))

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale}


@pytest.mark.parametrize("kind", sorted(TARGET_VARIABLES))
def test_query_texts_round_trip_through_the_recorded_embedding_function(tmp_path: Path, kind: str) -> None:
    """Chroma embeds documents with the collection's registered function; the migration records it in the run;
    the drop-in rebuilds it from the registry and answers query_texts as Chroma does."""
    env = {
        "CHROMA_PERSIST_DIR": str(tmp_path / "chroma"),
        **_target(kind, tmp_path / "qdrant"),
        "RUNBOOK_OUTPUTS": str(tmp_path / "outputs"),
        "RUNBOOK_PROGRESS": "off",
        "MPLBACKEND": "Agg",
    }
    chroma = chromadb.PersistentClient(path=env["CHROMA_PERSIST_DIR"])
    col = chroma.create_collection("texts", embedding_function=LetterCounts(scale=2.0))
    col.add(ids=[f"t{i}" for i in range(8)], documents=["abc", "aaa", "fed", "bead", "cafe", "ddd", "ebb", "ffff"])
    texts = ["bad cab", "fee"]
    expected = col.query(query_texts=texts, n_results=2)  # no ties among the two nearest
    chroma.close()
    step = _migrate(env)
    recorded = step.run.dir / "embedding_functions.json"
    assert json.loads(recorded.read_text())["texts"] == {"name": "runbook_test_letter_counts", "config": {"scale": 2.0}}
    with Client({**env, "VECTOR_DB": "qdrant", "VECTOR_DB_EMBEDDING_FUNCTIONS": str(recorded)}) as compat:
        got = compat.get_collection("texts").query(query_texts=texts, n_results=2)
        _same(expected, got)
        compat.get_collection("texts").add(ids=["t8"], documents=["bbb"])  # embedded with the recorded function
        assert compat.get_collection("texts").query(query_texts=["bbb"], n_results=1)["ids"] == [["t8"]]


def test_an_unregistered_recorded_embedding_function_is_refused(tmp_path: Path, migrated: dict[str, Any]) -> None:
    recorded = tmp_path / "embedding_functions.json"
    recorded.write_text(json.dumps({"compat_l2": {"name": "not_registered_anywhere", "config": {}}}))
    with (
        Client({**migrated["env"], "VECTOR_DB_EMBEDDING_FUNCTIONS": str(recorded)}) as compat,
        pytest.raises(ConfigError, match="registry does not know"),
    ):
        compat.get_collection("compat_l2").query(query_texts=["hello"])


def test_errors_match_chromadb_cases(both: tuple[Any, Client]) -> None:
    _, compat = both
    col = compat.get_collection("compat_l2")
    with pytest.raises(DimensionMismatchError):
        col.query(query_embeddings=[[1.0, 2.0]], where_document={"$contains": "no document has this"})
    with pytest.raises(ValueError, match="include"):
        col.get(include=["distances"])
    with pytest.raises(ConfigError, match="look-around"):
        col.get(where_document={"$regex": "(?=a)"})


def test_dual_creates_and_writes_both_stores(tmp_path: Path, migrated: dict[str, Any]) -> None:
    chromadb.PersistentClient(path=str(tmp_path / "chroma")).close()  # the app's (empty) ChromaDB directory
    env = {
        **_without_target(migrated["env"]),
        **_target(migrated["kind"], tmp_path / "qdrant"),
        "VECTOR_DB": "dual",
        "CHROMA_PERSIST_DIR": str(tmp_path / "chroma"),
        "VECTOR_DB_JOURNAL": str(tmp_path / "journal.jsonl"),
    }
    with Client(env) as compat:
        col = compat.create_collection("made_here", metadata={"hnsw:space": "ip"})
        assert col.count() == 0 and [c.name for c in compat.list_collections()] == ["made_here"]
        col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], documents=["first", "second"])
        expected = col.query(query_embeddings=[[1.0, 0.5]], n_results=2, where_document={"$regex": "^f"})
    for backend in ("chroma", "qdrant"):
        with Client({**env, "VECTOR_DB": backend}) as single:
            got = single.get_collection("made_here").query(
                query_embeddings=[[1.0, 0.5]], n_results=2, where_document={"$regex": "^f"}
            )
            _same(expected, got)
    assert expected["ids"] == [["a"]] and np.isclose(expected["distances"][0][0], 0.0)  # ip: 1 - dot


def test_query_texts_without_an_embedding_function_is_refused(both: tuple[Any, Client]) -> None:
    _, compat = both
    with pytest.raises(ConfigError, match="no embedding function"):
        compat.get_collection("compat_l2").query(query_texts=["hello"])


# --- chromadb's own property test strategies (test_filtering.py), bounded ---------------------------------------
_where = st.one_of(
    st.builds(lambda k, v: {k: v}, st.just("tag"), st.sampled_from(["t0", "t1", "t3"])),
    st.builds(lambda op, v: {"i": {op: v}}, st.sampled_from(["$gt", "$gte", "$lt", "$lte", "$ne"]), st.integers(0, 90)),
    st.builds(lambda v: {"flag": v}, st.booleans()),
    st.builds(lambda v: {"tags": {"$contains": v}}, st.sampled_from(["t0", "z", "q"])),
)
_where_document = st.builds(
    lambda op, word: {op: word}, st.sampled_from(["$contains", "$not_contains"]), st.sampled_from((*WORDS, "a", "ta"))
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    where=st.one_of(st.none(), _where, st.builds(lambda a, b: {"$or": [a, b]}, _where, _where)),
    where_document=st.one_of(
        st.none(), _where_document, st.builds(lambda a, b: {"$and": [a, b]}, _where_document, _where_document)
    ),
    ids=st.one_of(st.none(), st.lists(st.sampled_from([f"id-{i:03d}" for i in range(N)]), min_size=1, unique=True)),
)
def test_filtering_property_subset(
    both: tuple[Any, Client], where: Any, where_document: Any, ids: list[str] | None
) -> None:
    chroma, compat = both
    expected = chroma.get_collection("compat_l2").get(ids=ids, where=where, where_document=where_document)
    got = compat.get_collection("compat_l2").get(ids=ids, where=where, where_document=where_document)
    assert set(got["ids"]) == set(expected["ids"])
    by_id = dict(zip(expected["ids"], zip(expected["documents"], expected["metadatas"], strict=True), strict=True))
    assert [by_id[i] for i in got["ids"]] == list(zip(got["documents"], got["metadatas"], strict=True))


# --- strict mode, checked here: every filter these tests send names only keys the migration indexed ------------
def _filter_keys(condition: Any) -> set[str]:
    """The payload keys a Qdrant filter condition names (what a strict-mode server requires an index for)."""
    if condition is None:
        return set()
    if isinstance(condition, models.Filter):
        parts = [*(condition.must or []), *(condition.should or []), *(condition.must_not or [])]
        if isinstance(condition.min_should, models.MinShould):
            parts += condition.min_should.conditions
        return set().union(*(_filter_keys(p) for p in parts)) if parts else set()
    if isinstance(condition, list):
        return set().union(*(_filter_keys(p) for p in condition)) if condition else set()
    if isinstance(condition, models.FieldCondition):  # "k[]" (each element of an array) is served by k's index
        return {condition.key.removesuffix("[]")}
    if isinstance(condition, models.IsEmptyCondition):
        return {condition.is_empty.key}
    if isinstance(condition, models.IsNullCondition):
        return {condition.is_null.key}
    if isinstance(condition, models.NestedCondition):
        return {condition.nested.key}
    assert isinstance(condition, models.HasIdCondition), condition  # point ids need no payload index
    return set()


def _sent_keys(where: Any, where_document: Any) -> set[str]:
    keys = _filter_keys(to_qdrant_filter(where)) if where else set()
    return keys | (_filter_keys(to_qdrant_prefilter(where_document, "document")) if where_document else set())


def test_every_filter_the_app_sends_names_an_indexed_key_on_edge(migrated: dict[str, Any]) -> None:
    """A strict-mode server refuses a filter on a key without an index: every where / where_document these tests
    send (the app code's, and the property test's strategies) names only keys the migration indexed, checked
    against the Edge shard's payload_schema (local mode reports no indexes)."""
    if migrated["kind"] != "edge":
        pytest.skip("payload_schema is the engine's: Qdrant Edge (qdrant-client's local mode ignores indexes)")
    with open_target(QdrantSettings(edge_path=Path(migrated["env"]["QDRANT_EDGE_PATH"]))) as target:
        schemas = {name: set(target.payload_indexes(name)) for name in NAMES}
    sent: set[str] = set()
    for where, where_document in APP_FILTERS.values():
        sent |= _sent_keys(where, where_document)

    @settings(max_examples=40, deadline=None, database=None)
    @given(where=st.one_of(_where, st.builds(lambda a, b: {"$or": [a, b]}, _where, _where)), wd=_where_document)
    def strategies_send(where: Any, wd: Any) -> None:
        sent.update(_sent_keys(where, wd))

    strategies_send()
    assert {"metadata.tag", "metadata.i", "metadata.flag", "metadata.tags", "document"} <= sent
    for name, schema in schemas.items():
        assert sent <= schema, f"{name}: filters on {sorted(sent - schema)} have no payload index"


def test_query_among_ids_matches_chromadb(both: tuple[Any, Client]) -> None:
    chroma, compat = both
    query = np.random.default_rng(9).normal(size=(2, DIM)).astype(np.float32).tolist()
    among = [f"id-{i:03d}" for i in range(0, N, 3)]  # (an id Chroma lacks: chromadb 1.5.9 raises InternalError)
    for kwargs in (
        {"ids": among, "n_results": 5},
        {"ids": among, "n_results": 4, "where": {"i": {"$gt": 20}}},
        {"ids": among[:10], "n_results": 3, "where_document": {"$contains": "a"}},
    ):
        expected = chroma.get_collection("compat_l2").query(query_embeddings=query, **kwargs)
        _same(expected, compat.get_collection("compat_l2").query(query_embeddings=query, **kwargs))


def test_query_among_ids_over_chroma_is_refused(tmp_path: Path, migrated: dict[str, Any]) -> None:
    with (
        Client({**migrated["env"], "VECTOR_DB": "chroma"}) as over_chroma,
        pytest.raises(ConfigError, match="over Qdrant only"),
    ):
        over_chroma.get_collection("compat_l2").query(query_embeddings=[[0.0] * DIM], ids=["id-001"])
