"""Crashes at exact points lose nothing: the directory swap (an intent record finished or undone by the next step),
the rollback's Qdrant cleanup (a rerun never reads a half-removed collection as Qdrant's deletions), and a run
folder that lost its checkpoint. A crash is ``RUNBOOK_FAULT=<point>``: the step runs in a child process that
ends with ``os._exit`` at that point (no cleanup runs, as with a kill); ``<point>!raise`` makes it raise there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_rollback_live import (
    assert_every_write_is_in_chroma,
    chroma_get,
    chroma_writes,
    migrate_ok,
    qdrant_writes,
)

from runbook_lib.chroma.writer import intent_path
from runbook_lib.config.faults import FAULT_EXIT, FAULT_VARIABLE
from runbook_lib.errors import ConfigError, SyncError
from runbook_lib.state.checkpoint import CHECKPOINT
from runbook_lib.steps.rollback.engine import rollback
from runbook_lib.steps.sync.engine import sync

from conftest import assert_exact_copy, open_qdrant, run_step_inprocess
from test_rollback import qdrant_state, siblings, tree_digest

TESTS = Path(__file__).parent
STEPS = {
    "sync": "runbook_lib.steps.sync.engine:sync",
    "rollback": "runbook_lib.steps.rollback.engine:rollback",
}


def crash_at(point: str, step: str, **params: Any) -> None:
    """Run ``step`` in a child process that is ended at ``point``; assert that it was."""
    module, fn = STEPS[step].split(":")
    script = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
        "from conftest import run_step_inprocess\n"
        f"from {module} import {fn}\n"
        f"run_step_inprocess({step!r}, {fn}, **{params!r})\n"
    )
    env = {**os.environ, FAULT_VARIABLE: point}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == FAULT_EXIT, done.stderr[-3000:]


def test_a_crash_between_the_renames_is_finished_by_the_next_step(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    chroma_dir = runbook_env["chroma"]
    rid = migrate_ok()
    qdrant_writes(runbook_env["qdrant"])
    crash_at("swap:second-rename", "sync", run_id=rid, direction="reverse", confirm=True)
    assert not chroma_dir.exists() and intent_path(chroma_dir).is_file()  # CHROMA_PERSIST_DIR is missing
    staged = [n for n in siblings(chroma_dir) if ".sync-staging-" in n]
    assert len(staged) == 1
    # the next step finishes the swap first: the staged copy (with Qdrant's changes) is the live directory
    _, forward = run_step_inprocess("sync", sync, run_id=rid)
    assert any("interrupted swap" in w and "finished" in w for w in forward.warnings), forward.warnings
    assert forward.totals()["applied"] == 0 and forward.totals()["conflicts"] == 0, forward.verdict
    assert "3 already equal on both sides" in forward.verdict  # the ledger catches up with the finished swap
    assert not intent_path(chroma_dir).exists() and not (chroma_dir.parent / staged[0]).exists()
    assert chroma_get(chroma_dir, "alpha_docs", ["a-q-1"])["a-q-1"] == ("from qdrant", {"src": "q"})
    assert assert_exact_copy(chroma_dir, runbook_env["qdrant"]) == 1120


def test_a_crash_before_the_first_rename_is_undone(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    chroma_dir = runbook_env["chroma"]
    rid = migrate_ok()
    qdrant_writes(runbook_env["qdrant"])
    live = tree_digest(chroma_dir)
    crash_at("swap:first-rename", "sync", run_id=rid, direction="reverse", confirm=True)
    assert tree_digest(chroma_dir) == live and intent_path(chroma_dir).is_file()
    _, again = run_step_inprocess("sync", sync, run_id=rid, direction="reverse", confirm=True)
    assert any("interrupted swap" in w and "undone" in w for w in again.warnings), again.warnings
    assert again.totals()["applied"] == 3
    assert [n for n in siblings(chroma_dir) if ".sync-staging-" in n or n.endswith(".swap.json")] == []
    assert assert_exact_copy(chroma_dir, runbook_env["qdrant"]) == 1120


def test_a_crash_after_both_renames_leaves_only_the_record_to_clear(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    chroma_dir = runbook_env["chroma"]
    rid = migrate_ok()
    qdrant_writes(runbook_env["qdrant"])
    crash_at("swap:after-renames", "sync", run_id=rid, direction="reverse", confirm=True)
    assert chroma_dir.is_dir() and intent_path(chroma_dir).is_file()
    _, again = run_step_inprocess("sync", sync, run_id=rid, direction="reverse", confirm=True)
    assert any("is the staged copy" in w for w in again.warnings), again.warnings
    assert again.totals()["applied"] == 0 and not intent_path(chroma_dir).exists()
    assert assert_exact_copy(chroma_dir, runbook_env["qdrant"]) == 1120


def test_a_second_rename_that_raises_puts_the_directory_back(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    chroma_dir = runbook_env["chroma"]
    rid = migrate_ok()
    qdrant_writes(runbook_env["qdrant"])
    live = tree_digest(chroma_dir)
    monkeypatch.setenv(FAULT_VARIABLE, "swap:second-rename!raise")
    with pytest.raises(SyncError, match="was put back as it was"):
        run_step_inprocess("sync", sync, run_id=rid, direction="reverse", confirm=True)
    assert tree_digest(chroma_dir) == live and not intent_path(chroma_dir).exists()
    assert [n for n in siblings(chroma_dir) if ".pre-sync-" in n or ".sync-staging-" in n] == []
    monkeypatch.delenv(FAULT_VARIABLE)
    _, again = run_step_inprocess("sync", sync, run_id=rid, direction="reverse", confirm=True)
    assert again.totals()["applied"] == 3


def test_a_rollback_rerun_after_a_crash_in_its_cleanup_deletes_no_chroma_record(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    rid = migrate_ok()
    chroma_writes(chroma_dir)
    qdrant_writes(qdrant)
    crash_at("rollback:collection-deleted", "rollback", run_id=rid, confirm=True)
    gone = sorted({"alpha_docs", "beta_docs", "gamma_docs"} - set(qdrant_state(qdrant)["collections"]))
    assert len(gone) == 1
    checkpoint = json.loads((runbook_env["outputs"] / rid / "state" / CHECKPOINT).read_text())
    assert checkpoint["rollback"]["cleanup_started"] == gone and checkpoint["rollback"]["brought_back_at"]
    # what a crash inside a target's delete can leave: the collection re-created empty
    size, distance = {"alpha_docs": (16, "Cosine"), "beta_docs": (8, "Euclid"), "gamma_docs": (4, "Dot")}[gone[0]]
    with open_qdrant(qdrant) as store:
        store.create_collection(gone[0], size=size, distance=distance)
    _, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)
    assert result.ok, result.errors
    assert any("began in an earlier attempt" in w for w in result.warnings), result.warnings
    assert_every_write_is_in_chroma(chroma_dir)
    counts = {r["collection"]: r["count"] for r in result.counts}
    assert counts == {"alpha_docs": 701, "beta_docs": 300, "gamma_docs": 119, "empty_docs": 0}, counts
    assert qdrant_state(qdrant)["collections"] == []


def test_a_missing_checkpoint_stops_the_rollback_before_anything(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    rid = migrate_ok()
    qdrant_writes(runbook_env["qdrant"])
    path = runbook_env["outputs"] / rid / "state" / CHECKPOINT
    path.unlink()
    before = qdrant_state(runbook_env["qdrant"])
    with pytest.raises(ConfigError, match=f"checkpoint {path} of run {rid} is missing") as info:
        run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)
    assert info.value.exit_code == 2
    assert not (runbook_env["outputs"] / rid / "rollback.env").exists()
    assert qdrant_state(runbook_env["qdrant"]) == before


@pytest.mark.parametrize("point", ["sync:planned", "swap:checks"])
def test_an_app_write_after_the_plan_or_during_the_swap_checks_stops_the_swap(
    point: str, small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app writes the very record Qdrant changed, after the reverse sync planned (before it staged), or while
    the staged copy's integrity is checked: the swap is refused, so Qdrant's version never overwrites that write."""
    import chromadb

    from runbook_lib.config import faults

    from conftest import _close

    chroma_dir = runbook_env["chroma"]
    rid = migrate_ok()
    qdrant_writes(runbook_env["qdrant"])  # changes g-0002 in Qdrant

    def app_write() -> None:
        client = chromadb.PersistentClient(path=str(chroma_dir))
        client.get_collection("gamma_docs", embedding_function=None).update(  # type: ignore[arg-type]
            ids=["g-0002"], metadatas=[{"app": "late write"}]
        )
        _close(client)

    monkeypatch.setitem(faults.ACTIONS, point, app_write)
    with pytest.raises(ConfigError, match=r"changed (since this step's plan read it|while its staged copy)"):
        run_step_inprocess("sync", sync, run_id=rid, direction="reverse", confirm=True)
    assert chroma_get(chroma_dir, "gamma_docs", ["g-0002"])["g-0002"][1]["app"] == "late write"
    assert [n for n in siblings(chroma_dir) if ".sync-staging-" in n or ".pre-sync-" in n] == []
