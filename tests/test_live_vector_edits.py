"""The sync's Qdrant-side change detector cannot miss an edit verify would report (a component more than 1e-6 away):
the 8-number sketch compared within 1e-5 missed most small edits of 1536-d unit vectors. A float32 ulp of
re-normalisation (what a Qdrant server may do) is still no change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from test_rollback_live import migrate_ok

from runbook_lib.core.fingerprint import CLOSE, SAME, compare_sketches, sketches
from runbook_lib.core.mapping import normalise_rows, point_id
from runbook_lib.steps.sync.engine import sync

from conftest import open_qdrant, run_step_inprocess


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    return normalise_rows(np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32))


def test_every_edit_verify_would_report_is_a_change_or_a_close_call() -> None:
    """A sketch never says "same vector" of vectors verify tells apart: it says the same, or close (the sync then
    compares the full vectors), or different."""
    rng = np.random.default_rng(7)
    before = _unit(300, 1536, 1)
    after = before.copy()
    cols = rng.integers(0, 1536, size=300)
    after[np.arange(300), cols] += rng.choice([-1, 1], size=300) * rng.uniform(1.05e-6, 3e-4, size=300)
    assert (np.abs(after - before).max(axis=1) > 1e-6).all()  # verify reports every one of them
    a, b = sketches(before), sketches(after)
    assert [i for i in range(300) if compare_sketches(a[i], b[i]) == SAME] == []
    assert all(compare_sketches(a[i], a[i]) == SAME for i in range(300))
    legacy = [s[:32] for s in a]  # a ledger written before the digest: never "same", at best close
    assert all(compare_sketches(legacy[i], a[i]) == CLOSE for i in range(300))


def test_a_small_vector_edit_in_qdrant_is_seen_by_the_sync(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    rid = migrate_ok()
    with open_qdrant(runbook_env["qdrant"]) as q:
        old = q.retrieve("alpha_docs", [point_id("a-0007")], with_payload=True, with_vectors=True)[0]
        vec = np.asarray(old.vector, dtype=np.float32)
        vec[3] += 5e-6  # verify would report it (> 1e-6); the old sketch moved by ~1e-6, inside its 1e-5
        q.upsert("alpha_docs", [str(old.id)], [vec], [old.payload])
        stored = np.asarray(q.retrieve("alpha_docs", [str(old.id)], with_vectors=True)[0].vector)
        assert np.abs(stored - np.asarray(old.vector)).max() > 1e-6
    _, plan = run_step_inprocess("sync", sync, run_id=rid, direction="reverse")
    alpha = next(c for c in plan.collections if c["collection"] == "alpha_docs")
    assert alpha["qdrant_changes"]["changed"] == 1 and alpha["conflicts"] == 0, alpha


def test_a_ledger_of_projections_only_is_compared_in_full_once(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    """A ledger written before the digest (32-byte sketches): every point is a close call, compared in full with
    ChromaDB, found unchanged, and its sketch refreshed, so the next sync compares digests."""
    import sqlite3

    from runbook_lib.state.ledger import LEDGER

    rid = migrate_ok()
    ledger = runbook_env["outputs"] / rid / "state" / LEDGER
    with sqlite3.connect(ledger) as db:
        db.execute("UPDATE records SET sketch = substr(sketch, 1, 32)")
    _, first = run_step_inprocess("sync", sync, run_id=rid)
    assert first.ok and first.totals()["conflicts"] == 0 and "IN SYNC" in first.verdict, first.verdict
    with sqlite3.connect(ledger) as db:
        lengths = {row[0] for row in db.execute("SELECT DISTINCT length(sketch) FROM records")}
    assert lengths == {48}
