"""The sample ChromaDB (runbook_fixtures.sample_data) and the awkward test data (tests/data_builders.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from runbook_fixtures.sample_data import SAMPLE_COLLECTIONS, SAMPLE_TOTAL, create_sample_db, main, scaled_counts
from runbook_lib.errors import ConfigError

try:
    from tests.data_builders import LIST_METADATA, LONG_ID, SHADOW_KEYS, UUID_SPELLINGS, create_awkward_db
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from data_builders import (  # type: ignore[no-redef]
        LIST_METADATA,
        LONG_ID,
        SHADOW_KEYS,
        UUID_SPELLINGS,
        create_awkward_db,
    )

# chromadb 1.5.9 warns when reading `configuration` of a collection created with embedding_function=None.
pytestmark = pytest.mark.filterwarnings("ignore:legacy embedding function config:DeprecationWarning")

SCALE = 0.02
DIM = 64


def _open(path: Path) -> chromadb.ClientAPI:
    return chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))


def _space(collection: Any) -> str:
    return (collection.metadata or {}).get("hnsw:space") or collection.configuration["hnsw"]["space"]


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "nested" / "chroma_db"
    counts = create_sample_db(path, seed=42, scale=SCALE, dim=DIM, progress=False)
    assert counts == scaled_counts(SCALE)
    return path


@pytest.fixture(scope="module")
def sample_client(sample_dir: Path) -> Iterator[chromadb.ClientAPI]:
    client = _open(sample_dir)
    yield client
    client.close()


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    path = tmp_path_factory.mktemp("awkward") / "db"
    return path, create_awkward_db(path)


@pytest.fixture(scope="module")
def awkward_client(awkward: tuple[Path, dict[str, dict[str, Any]]]) -> Iterator[chromadb.ClientAPI]:
    client = _open(awkward[0])
    yield client
    client.close()


# ------------------------------------------------------------------------------------------ the table


def test_sample_collections_table() -> None:
    assert len(SAMPLE_COLLECTIONS) == 14
    assert sum(spec.count for spec in SAMPLE_COLLECTIONS) == SAMPLE_TOTAL == 14365
    names = [spec.name for spec in SAMPLE_COLLECTIONS]
    assert len(set(names)) == 14
    assert {"zantara_books", "oracle_kb", "cultural_context", "crm_memory"} <= set(names)
    for space in ("cosine", "l2", "ip"):
        declared = {spec.declared for spec in SAMPLE_COLLECTIONS if spec.space == space}
        assert declared == {"metadata", "configuration"}, space
    assert len({spec.id_shape for spec in SAMPLE_COLLECTIONS}) >= 6


def test_scaled_counts() -> None:
    assert scaled_counts(1) == {spec.name: spec.count for spec in SAMPLE_COLLECTIONS}
    assert sum(scaled_counts(10).values()) == 10 * SAMPLE_TOTAL
    assert min(scaled_counts(0.0001).values()) == 1
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="scale"):
            scaled_counts(bad)


# ------------------------------------------------------------------------------------------ the sample


def test_sample_collections_counts_and_spaces(sample_client: chromadb.ClientAPI) -> None:
    expected = scaled_counts(SCALE)
    by_name = {c.name: c for c in sample_client.list_collections()}
    assert set(by_name) == set(expected)
    for spec in SAMPLE_COLLECTIONS:
        collection = by_name[spec.name]
        assert collection.count() == expected[spec.name]
        assert _space(collection) == spec.space
        if spec.declared == "metadata":
            assert collection.metadata["hnsw:space"] == spec.space
        else:
            assert "hnsw:space" not in (collection.metadata or {})
            assert collection.configuration["hnsw"]["space"] == spec.space


def test_sample_records(sample_client: chromadb.ClientAPI) -> None:
    value_types: set[str] = set()
    uris = 0
    for spec in SAMPLE_COLLECTIONS:
        got = sample_client.get_collection(spec.name).get(include=["embeddings", "metadatas", "documents", "uris"])
        embeddings = np.asarray(got["embeddings"])
        assert embeddings.shape == (len(got["ids"]), DIM)
        assert np.isfinite(embeddings).all()
        if spec.normalized:
            np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
        assert len(set(got["ids"])) == len(got["ids"])
        for metadata in got["metadatas"]:
            for value in (metadata or {}).values():
                inner = type(value[0]).__name__ if isinstance(value, list) else None
                value_types.add(f"list[{inner}]" if inner else type(value).__name__)
        uris += sum(uri is not None for uri in got["uris"])
        texts = [doc for doc in got["documents"] if doc is not None]
        assert all(300 <= len(doc) <= 800 for doc in texts)
    assert value_types >= {"str", "int", "float", "bool", "list[str]", "list[int]", "list[float]", "list[bool]"}
    assert uris > 0

    books = sample_client.get_collection("zantara_books").get(include=["uris", "metadatas"])
    assert books["ids"][0] == "book-000000"
    assert "s3://bucket/zantara/book-" in "".join(uri for uri in books["uris"] if uri)
    # integer-valued floats stay floats, ints stay ints, bools stay bools
    metadata = next(m for m in books["metadatas"] if m and m["score"] == int(m["score"]))
    assert type(metadata["score"]) is float
    assert type(metadata["page"]) is int
    assert type(metadata["active"]) is bool


def test_sample_vectors_are_clustered(sample_client: chromadb.ClientAPI) -> None:
    """Nearest neighbours are much closer than a typical pair (structure, not uniform noise)."""
    got = sample_client.get_collection("zantara_books").get(include=["embeddings"])
    x = np.asarray(got["embeddings"], dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1.0 - x @ x.T
    np.fill_diagonal(dist, np.inf)
    nearest = dist.min(axis=1)
    typical = np.median(dist[np.isfinite(dist)])
    assert np.median(nearest) < 0.5 * typical


def test_sample_is_deterministic_and_prefix_stable(tmp_path: Path, sample_dir: Path) -> None:
    again = tmp_path / "again"
    create_sample_db(again, seed=42, scale=SCALE, dim=DIM, progress=False)
    bigger = tmp_path / "bigger"
    create_sample_db(bigger, seed=42, scale=2 * SCALE, dim=DIM, progress=False)
    other_seed = tmp_path / "other"
    create_sample_db(other_seed, seed=7, scale=SCALE, dim=DIM, progress=False)

    def read(path: Path, name: str) -> dict[str, Any]:
        client = _open(path)
        try:
            got = client.get_collection(name).get(include=["embeddings", "documents", "metadatas", "uris"])
        finally:
            client.close()
        order = np.argsort(got["ids"])
        return {key: [got[key][i] for i in order] for key in ("ids", "embeddings", "documents", "metadatas", "uris")}

    for name in ("oracle_kb", "legal_docs"):
        first, second = read(sample_dir, name), read(again, name)
        assert first["ids"] == second["ids"]
        assert first["documents"] == second["documents"]
        assert first["metadatas"] == second["metadatas"]
        assert first["uris"] == second["uris"]
        np.testing.assert_array_equal(np.array(first["embeddings"]), np.array(second["embeddings"]))
        different = read(other_seed, name)
        assert different["documents"] != first["documents"]
        assert not np.array_equal(np.array(different["embeddings"]), np.array(first["embeddings"]))

    # a larger scale keeps the first records of a collection
    small, large = read(sample_dir, "zantara_books"), read(bigger, "zantara_books")
    large_by_id = dict(zip(large["ids"], range(len(large["ids"])), strict=True))
    for i, record_id in enumerate(small["ids"]):
        j = large_by_id[record_id]
        assert small["documents"][i] == large["documents"][j]
        np.testing.assert_array_equal(small["embeddings"][i], large["embeddings"][j])


def test_refuses_non_empty_path(tmp_path: Path) -> None:
    target = tmp_path / "db"
    target.mkdir()
    (target / "something").write_text("x")
    with pytest.raises(ConfigError, match="already exists"):
        create_sample_db(target, scale=SCALE, dim=8, progress=False)
    assert (target / "something").read_text() == "x"
    with pytest.raises(ConfigError, match="scale"):
        create_sample_db(tmp_path / "new", scale=0, dim=8, progress=False)
    assert not (tmp_path / "new").exists()
    assert main(["--path", str(target), "--scale", "0.01", "--no-progress"]) == 2


def test_empty_existing_directory_is_accepted(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    counts = create_sample_db(target, scale=0.0001, dim=8, progress=False)
    assert sum(counts.values()) == 14  # one record per collection
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no staging directory left behind


# --------------------------------------------------------------------------------------- awkward data


def test_awkward_description(awkward: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    _, described = awkward
    assert set(described) == {"awkward_cosine", "empty_one", "dim384_l2", "dim1536_ip"}
    assert described["awkward_cosine"]["space"] == "cosine"
    assert described["empty_one"]["count"] == 0
    assert (described["dim384_l2"]["dim"], described["dim384_l2"]["count"]) == (384, 50)
    assert (described["dim1536_ip"]["dim"], described["dim1536_ip"]["space"]) == (1536, "ip")


def test_awkward_collections_read_back(
    awkward: tuple[Path, dict[str, dict[str, Any]]], awkward_client: chromadb.ClientAPI
) -> None:
    _, described = awkward
    for name, info in described.items():
        collection = awkward_client.get_collection(name)
        assert collection.count() == info["count"]
        assert _space(collection) == info["space"]
        got = collection.get(include=["embeddings"])
        assert sorted(got["ids"]) == sorted(info["ids"])
        if info["count"]:
            assert np.asarray(got["embeddings"]).shape == (info["count"], info["dim"])
    assert "hnsw:space" not in (awkward_client.get_collection("empty_one").metadata or {})


def test_awkward_records_round_trip(awkward_client: chromadb.ClientAPI) -> None:
    collection = awkward_client.get_collection("awkward_cosine")
    got = collection.get(
        ids=[LONG_ID, "lists", "shadow-keys", "zero-vector", "1", "01", "001", "types", "no-document"],
        include=["embeddings", "metadatas", "documents", "uris"],
    )
    rec = {
        record_id: {"embedding": e, "metadata": m, "document": d, "uri": u}
        for record_id, e, m, d, u in zip(
            got["ids"], got["embeddings"], got["metadatas"], got["documents"], got["uris"], strict=True
        )
    }
    assert len(LONG_ID) == 2000 and LONG_ID in rec
    assert rec["lists"]["metadata"] == LIST_METADATA
    assert rec["shadow-keys"]["metadata"] == SHADOW_KEYS
    assert rec["shadow-keys"]["document"] == "the real document"
    assert rec["shadow-keys"]["uri"] == "s3://bucket/real.pdf"
    assert list(rec["zero-vector"]["embedding"]) == [0.0, 0.0, 0.0]
    assert rec["zero-vector"]["metadata"] is None and rec["zero-vector"]["document"] is None
    assert rec["no-document"]["document"] is None and rec["no-document"]["uri"] is not None
    values = [rec[i]["metadata"]["value"] for i in ("1", "01", "001")]
    assert [type(v) for v in values] == [int, float, bool]
    types = rec["types"]["metadata"]
    assert (type(types["as_int"]), type(types["as_float"]), type(types["as_bool"])) == (int, float, bool)
    assert types["big_int"] == 2**53 + 1

    all_ids = collection.get()["ids"]
    assert set(UUID_SPELLINGS) <= set(all_ids)
    assert {"日本語-id", "émoji-🚀", "1", "01", "001"} <= set(all_ids)
    empty_doc = collection.get(ids=["empty-document"], include=["documents"])
    assert empty_doc["documents"] == [""]
    uri_only = collection.get(ids=["uri-no-metadata"], include=["metadatas", "uris"])
    assert uri_only["uris"] == ["s3://bucket/uri-only.pdf"]
    assert uri_only["metadatas"][0] in (None, {})  # chromadb 1.5.9 gives {}


def test_awkward_is_deterministic(tmp_path: Path, awkward: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    described = create_awkward_db(tmp_path / "again")
    assert described == awkward[1]
