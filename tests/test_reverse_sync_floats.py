"""The reverse sync writes Qdrant's float metadata into ChromaDB so that Chroma stores exactly Qdrant's value.

chromadb 1.5 stores a float written to it through a parser that lands about one value in ten 1 ulp away
(:mod:`runbook_lib.core.chroma_floats`), and is not idempotent: about 3 % of the values it returns move again
when written back. Qdrant holds the values Chroma stored (the migration copied them) or the app's, so writing them
back as they are made the read-back check see "other values than were written" and the next sync a difference.
Real chromadb, the real sync step, qdrant-client's local mode.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import chromadb

from runbook_lib.core.chroma_floats import (
    chroma_float,
    chroma_metadata,
    chroma_preimage,
    metadata_chroma_reads_back,
    metadata_chroma_stores_as,
)
from runbook_lib.core.mapping import point_id
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.sync.engine import sync

from conftest import _close, assert_exact_copy, open_qdrant, run_step_inprocess


def _drifting(n: int) -> list[float]:
    """Values chromadb returns (``chroma_float`` of something) that it would store 1 ulp away if written again."""
    rng, found = random.Random(20), []
    while len(found) < n:
        stored = chroma_float(rng.random() * 10 ** rng.randint(-5, 5))
        if chroma_float(stored) != stored:
            found.append(stored)
    return found


def test_the_rules_are_what_chromadb_does() -> None:
    values = _drifting(20)
    for v in values:
        assert chroma_float(chroma_preimage(v)) == v
    meta = {"v": values[0], "l": [values[1], 2, "s"], "i": 3}
    assert chroma_metadata(metadata_chroma_stores_as(meta)) == meta
    assert metadata_chroma_reads_back(meta) == meta
    assert metadata_chroma_reads_back(None) is None


def test_floats_come_back_from_qdrant_exactly(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    step, result = run_step_inprocess("migrate", migrate)
    assert result.ok
    run_id = step.run.run_id
    values = _drifting(24)
    ids = [f"b-{i:04d}" for i in range(1, 25)]
    with open_qdrant(runbook_env["qdrant"]) as q:  # the app, after cutover, writes floats into Qdrant
        old = {str(p.id): p.payload for p in q.retrieve("beta_docs", [point_id(c) for c in ids], with_payload=True)}
        q.overwrite_payloads(
            "beta_docs",
            {
                point_id(cid): {**old[point_id(cid)], "metadata": {"v": value, "pair": [value, 1.5], "tag": "q"}}
                for cid, value in zip(ids, values, strict=True)
            },
        )
        # what Qdrant holds: local mode keeps the written value; the engine (Edge 0.9.0) keeps about 1 in 10 float64
        # payload values 1 ulp away from what was written (measured: README "Where local mode stops")
        held = {str(p.id): p.payload["metadata"]["v"] for p in q.retrieve("beta_docs", list(old), with_payload=True)}
    values = [held[point_id(cid)] for cid in ids]
    _, reverse = run_step_inprocess("sync", sync, run_id=run_id, direction="reverse", confirm=True)
    assert reverse.totals()["applied"] == len(ids), reverse.collections
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    got = client.get_collection("beta_docs").get(ids=ids, include=["metadatas"])
    _close(client)
    back = dict(zip(got["ids"], got["metadatas"], strict=True))
    assert [back[i]["v"] for i in ids] == values  # exactly Qdrant's value, not 1 ulp away
    assert [back[i]["pair"] for i in ids] == [[v, 1.5] for v in values]
    assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"])
    _, again = run_step_inprocess("sync", sync, run_id=run_id)
    assert again.verdict.startswith("IN SYNC"), again.verdict
