"""The dual-write journal settles what looks like a conflict: after cutover (Qdrant primary) a partial ``update``
that ChromaDB missed, then an update that reached both stores, leaves the record changed differently on both sides;
the journal says ChromaDB missed a write, so Qdrant's version (the app's latest) is a Qdrant change, not a conflict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chromadb
from test_rollback_live import chroma_get, migrate_ok

from runbook_lib.app.journal import JOURNAL_FILE_NAME, Journal
from runbook_lib.core.mapping import point_id
from runbook_lib.steps.sync.engine import sync

from conftest import _close, assert_exact_copy, open_qdrant, run_step_inprocess


def _qdrant_update(path: Path, cid: str, **changes: Any) -> None:
    with open_qdrant(path) as q:
        old = q.retrieve("alpha_docs", [point_id(cid)], with_payload=True, with_vectors=True)[0]
        payload = dict(old.payload or {})
        if "metadata" in changes:
            payload["metadata"] = {**(payload.get("metadata") or {}), **changes["metadata"]}
        if "document" in changes:
            payload["document"] = changes["document"]
        q.upsert("alpha_docs", [str(old.id)], [old.vector], [payload])


def test_a_missed_partial_update_is_no_conflict(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    rid = migrate_ok()
    # 1. update(metadata) reached Qdrant (the primary) and missed ChromaDB: the wrapper journals it
    _qdrant_update(runbook_env["qdrant"], "a-0005", metadata={"reviewed": True})
    Journal(runbook_env["outputs"] / JOURNAL_FILE_NAME).append(
        collection="alpha_docs",
        operation="update",
        ids=["a-0005"],
        where=None,
        missed="chroma",
        primary="qdrant",
        error="ChromaDB timed out",
    )
    # 2. update(document) reached both stores
    _qdrant_update(runbook_env["qdrant"], "a-0005", document="edited by the app")
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    alpha = client.get_collection("alpha_docs", embedding_function=None)
    vector = alpha.get(ids=["a-0005"], include=["embeddings"])["embeddings"][0]
    alpha.update(ids=["a-0005"], documents=["edited by the app"], embeddings=[vector])
    _close(client)

    _, plan = run_step_inprocess("sync", sync, run_id=rid, direction="reverse")
    alpha = next(c for c in plan.collections if c["collection"] == "alpha_docs")
    assert alpha["conflicts"] == 0 and alpha["qdrant_changes"]["changed"] == 1, alpha
    assert any("dual-write journal says which store missed" in w for w in plan.warnings), plan.warnings

    _, done = run_step_inprocess("sync", sync, run_id=rid, direction="reverse", confirm=True)
    assert done.ok and done.journal_replayed == 1
    document, metadata = chroma_get(runbook_env["chroma"], "alpha_docs", ["a-0005"])["a-0005"]
    assert document == "edited by the app" and metadata["reviewed"] is True
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1120
