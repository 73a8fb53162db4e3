"""LangChain and LlamaIndex apps read the migrated collections unchanged (the `frameworks` extra, real packages).

Each framework writes a ChromaDB store through its own Chroma integration (precomputed embeddings, no model
downloads), the runbook migrates it with that framework's payload layout, and the framework's own Qdrant store
then returns the same documents, metadata and neighbour order for the same query vectors (with and without a
metadata filter) as its Chroma store did; verify and sync agree under the layout. The frameworks' Qdrant stores
take a ``QdrantClient``, which cannot open a Qdrant Edge shard: these tests migrate into qdrant-client's local mode,
the client's own embedded store (a server is what such an app uses in production).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from runbook_lib.app import VectorDBClient
from runbook_lib.core.mapping import point_id
from runbook_lib.errors import ConfigError
from runbook_lib.state.checkpoint import CHECKPOINT
from runbook_lib.steps.dry_run.engine import dry_run
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.sync.engine import sync
from runbook_lib.steps.verify.engine import verify

from conftest import _close, run_step_inprocess

DIM = 16
N = 24


@pytest.fixture
def qdrant_kind() -> str:
    """The frameworks read through a ``QdrantClient``: local mode (see the module's docstring)."""
    return "local"


TOPICS = ("alpha", "beta", "gamma")


def _vectors(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def _corpus() -> tuple[list[str], list[str], list[dict[str, Any]], np.ndarray]:
    ids = [f"doc-{i}" for i in range(N)]
    texts = [f"passage {i} about {TOPICS[i % 3]} ✓" for i in range(N)]
    metas: list[dict[str, Any]] = [
        {"topic": TOPICS[i % 3], "year": 2020 + i % 4, "score": i / 4, "draft": i % 2 == 0} for i in range(N)
    ]
    return ids, texts, metas, _vectors(1, N)


QUERIES = _vectors(2, 5)


def _raw_chroma(collection: Any, where: dict[str, Any]) -> list[tuple[list[str], list[Any], list[Any]]]:
    """What ChromaDB itself answers (ids, documents, metadatas), without and with ``where``."""
    out = []
    for w in (None, where):
        res = collection.query(query_embeddings=QUERIES.tolist(), n_results=5, where=w)
        out.extend(zip(res["ids"], res["documents"], res["metadatas"], strict=True))
    return out


def _app_reads(layout: str, name: str, where: dict[str, Any]) -> list[tuple[list[str], list[Any], list[Any]]]:
    """The app wrapper (VECTOR_DB=qdrant) over the migrated collection, told the run's layout."""
    env = {**os.environ, "VECTOR_DB": "qdrant", "VECTOR_DB_PAYLOAD_LAYOUT": layout}
    out = []
    with VectorDBClient(env) as app:
        for w in (None, where):
            for q in QUERIES:
                res = app.search(name, q, limit=5, where=w)
                out.append((res.ids, res.documents, res.metadatas))
    return out


def _dry_run_recommends(framework: str, name: str) -> None:
    """The dry run tells which framework wrote the collection, and shows a real record in the chosen layout."""
    _, default = run_step_inprocess("dry-run", dry_run)
    inv = default.collections[0]
    assert (inv["framework"], inv["recommended_layout"]) == (framework, framework)
    assert any(f"payload_layout={framework}" in w for w in default.warnings)
    _, chosen = run_step_inprocess("dry-run", dry_run, payload_layout=framework)
    example = chosen.plan[0]["example_payload"]
    assert chosen.plan[0]["payload_layout"] == framework and example["payload"]["chroma_id"] == example["chroma_id"]
    assert not any("payload_layout" in w for w in chosen.warnings)
    print(f"{framework} payload:", json.dumps(example["payload"], ensure_ascii=False))


def _migrate_and_check(layout: str, name: str, outputs: Path) -> dict[str, Any]:
    step, result = run_step_inprocess("migrate", migrate, payload_layout=layout, batch_size=7)
    assert result.ok, result.errors
    checkpoint = json.loads((step.run.state_dir / CHECKPOINT).read_text())
    assert checkpoint["payload_layout"] == layout
    run_id = step.run.run_id
    _, verified = run_step_inprocess("verify", verify, run_id=run_id)
    assert verified.ok, verified.to_dict()
    _, synced = run_step_inprocess("sync", sync, run_id=run_id)
    assert "IN SYNC" in synced.verdict, synced.verdict
    return {"run_id": run_id}


# --- LangChain -------------------------------------------------------------------------------------------------
def test_langchain_reads_the_migrated_collection(runbook_env: dict[str, Path]) -> None:
    pytest.importorskip("langchain_qdrant")
    from langchain_chroma import Chroma
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import QdrantVectorStore

    ids, texts, metas, vectors = _corpus()
    table = {t: v.tolist() for t, v in zip(texts, vectors, strict=True)}

    class Precomputed(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [table.get(t, [0.0] * DIM) for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return table[text]

    name = "lc_docs"
    store = Chroma(
        collection_name=name,
        embedding_function=Precomputed(),
        persist_directory=str(runbook_env["chroma"]),
        collection_metadata={"hnsw:space": "cosine"},
    )
    store.add_texts(texts, metadatas=metas, ids=ids)

    def chroma_results(q: np.ndarray, flt: dict[str, Any] | None) -> list[tuple[str, dict[str, Any], str | None]]:
        docs = store.similarity_search_by_vector(q.tolist(), k=5, filter=flt)
        return [(d.page_content, d.metadata, d.id) for d in docs]

    before = [chroma_results(q, None) for q in QUERIES] + [chroma_results(q, {"topic": "beta"}) for q in QUERIES]
    raw = _raw_chroma(store._collection, {"topic": "beta"})
    _close(store._client)

    _dry_run_recommends("langchain", name)
    _migrate_and_check("langchain", name, runbook_env["outputs"])
    assert _app_reads("langchain", name, {"topic": "beta"}) == raw

    client = QdrantClient(path=str(runbook_env["qdrant"]))
    try:
        qstore = QdrantVectorStore(client=client, collection_name=name, embedding=Precomputed())
        flt = models.Filter(must=[models.FieldCondition(key="metadata.topic", match=models.MatchValue(value="beta"))])
        after = []
        for f in (None, flt):
            for q in QUERIES:
                docs = qstore.similarity_search_by_vector(q.tolist(), k=5, filter=f)
                # langchain-qdrant adds the point id and the collection name to each result's metadata
                extra = ("_id", "_collection_name")
                after.append(
                    [
                        (d.page_content, {k: v for k, v in d.metadata.items() if k not in extra}, d.metadata["_id"])
                        for d in docs
                    ]
                )
        point = client.retrieve(name, [point_id("doc-0")])[0]
        assert point.payload == {"page_content": texts[0], "metadata": metas[0], "chroma_id": "doc-0"}
    finally:
        client.close()
    for b, a in zip(before, after, strict=True):
        assert [(t, m) for t, m, _ in a] == [(t, m) for t, m, _ in b]
        assert [pid for *_, pid in a] == [point_id(cid) for *_, cid in b]  # same neighbours, by id
    assert all(m["topic"] == "beta" for res in after[len(QUERIES) :] for _, m, _ in res)


def test_langchain_layout_refuses_a_null_document(runbook_env: dict[str, Path]) -> None:
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    col = client.create_collection("nulls", metadata={"hnsw:space": "cosine"})
    col.add(ids=["a", "b"], embeddings=_vectors(3, 2).tolist(), documents=["x", None], metadatas=[{"k": 1}, {"k": 2}])
    _close(client)
    with pytest.raises(ConfigError, match=r"cannot carry 1 record.*record 'b' has no document.*null_documents=empty"):
        run_step_inprocess("migrate", migrate, payload_layout="langchain")
    assert not (runbook_env["qdrant"] / "collection" / "nulls").exists()  # decided before anything was written
    step, result = run_step_inprocess(
        "migrate", migrate, payload_layout="langchain", null_documents="empty", on_existing="recreate"
    )
    assert result.ok and result.rows[0]["null_documents_as_empty"] == 1
    _, verified = run_step_inprocess("verify", verify, run_id=step.run.run_id)
    assert verified.ok
    _, synced = run_step_inprocess("sync", sync, run_id=step.run.run_id)
    assert "IN SYNC" in synced.verdict, synced.verdict


# --- LlamaIndex ------------------------------------------------------------------------------------------------
def test_llamaindex_reads_the_migrated_collection(runbook_env: dict[str, Path]) -> None:
    pytest.importorskip("llama_index.vector_stores.qdrant")
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters, VectorStoreQuery
    from llama_index.vector_stores.chroma import ChromaVectorStore
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    ids, texts, metas, vectors = _corpus()
    nodes = [
        TextNode(
            id_=point_id(f"node-{i}"),  # LlamaIndex's own node ids are UUIDs
            text=texts[i],
            metadata=metas[i],
            embedding=vectors[i].tolist(),
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"file-{i % 4}")},
        )
        for i in range(N)
    ]
    name = "li_nodes"
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    cstore = ChromaVectorStore(
        chroma_collection=client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})
    )
    cstore.add(nodes)
    year = MetadataFilters(filters=[MetadataFilter(key="year", value=2021)])

    def results(store: Any, q: np.ndarray, filters: Any) -> list[tuple[str, str, dict[str, Any], str | None]]:
        res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=5, filters=filters))
        return [(n.node_id, n.get_content(), n.metadata, n.ref_doc_id) for n in res.nodes]

    before = [results(cstore, q, None) for q in QUERIES] + [results(cstore, q, year) for q in QUERIES]
    raw = _raw_chroma(client.get_collection(name), {"year": 2021})
    _close(client)

    _dry_run_recommends("llamaindex", name)
    _migrate_and_check("llamaindex", name, runbook_env["outputs"])
    assert _app_reads("llamaindex", name, {"year": 2021}) == raw

    qclient = QdrantClient(path=str(runbook_env["qdrant"]))
    try:
        qstore = QdrantVectorStore(collection_name=name, client=qclient)
        after = [results(qstore, q, None) for q in QUERIES] + [results(qstore, q, year) for q in QUERIES]
        assert after == before
        assert all(m["year"] == 2021 for res in after[len(QUERIES) :] for _, _, m, _ in res)
        assert all(res for res in after)
        # delete(ref_doc_id) removes exactly that document's nodes
        qstore.delete(ref_doc_id="file-1")
        left = qclient.scroll(name, limit=100)[0]
        assert len(left) == N - N // 4
        assert {p.payload["doc_id"] for p in left} == {"file-0", "file-2", "file-3"}
        assert isinstance(left[0].payload["year"], int) and isinstance(left[0].payload["score"], float)
    finally:
        qclient.close()


def test_llamaindex_layout_refuses_a_colliding_key(runbook_env: dict[str, Path]) -> None:
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    col = client.create_collection("clash", metadata={"hnsw:space": "cosine"})
    col.add(ids=["a"], embeddings=_vectors(4, 1).tolist(), documents=["x"], metadatas=[{"chroma_id": "other"}])
    _close(client)
    with pytest.raises(ConfigError, match="metadata key 'chroma_id' that the llamaindex layout writes itself"):
        run_step_inprocess("migrate", migrate, payload_layout="llamaindex")
