"""Rollback of a live migration on real components (SPEC "Live data": no write is lost).

A real persistent ChromaDB directory, Qdrant Edge (the engine; the whole story on local mode too) and the run's
ledger: the app writes to ChromaDB during the migration window (after migrate) and to Qdrant after cutover; the
rollback keeps the live directory, brings every Qdrant-side change back into it, and only then removes what the run
created in Qdrant.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest

from runbook_lib.core.mapping import build_payload, normalise_rows, point_id
from runbook_lib.errors import ConfigError, VerificationFailed
from runbook_lib.state.checkpoint import CHECKPOINT
from runbook_lib.state.run import Run
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.rollback import report
from runbook_lib.steps.rollback.engine import rollback
from runbook_lib.steps.rollback.other_runs import takeovers
from runbook_lib.steps.sync.engine import sync

from conftest import _close, on_both_targets, open_qdrant, run_step_inprocess
from test_rollback import qdrant_state, siblings, tree_digest


# --- the app -----------------------------------------------------------------------------------------------
def migrate_ok(**params: Any) -> str:
    step, result = run_step_inprocess("migrate", migrate, **params)
    assert result.ok, result.errors
    return str(step.run.run_id)


def chroma_writes(chroma_dir: Path) -> None:
    """The app writing to ChromaDB during the migration window: one add, one change, one delete."""
    client = chromadb.PersistentClient(path=str(chroma_dir))
    alpha = client.get_collection("alpha_docs", embedding_function=None)
    alpha.add(ids=["a-app-1"], embeddings=np.full((1, 16), 0.5, dtype=np.float32).tolist(), documents=["app add"])
    alpha.update(
        ids=["a-0005"], documents=["app changed a-0005"], embeddings=np.ones((1, 16), dtype=np.float32).tolist()
    )
    alpha.delete(ids=["a-0010"])
    _close(client)


def qdrant_writes(qdrant_dir: Path) -> None:
    """The app writing to Qdrant after cutover (the SPEC mapping): one add, one change, one delete."""
    vec = normalise_rows(np.random.default_rng(3).normal(size=(1, 16)).astype(np.float32))[0]
    payload = build_payload("a-q-1", "from qdrant", {"src": "q"}, None)
    with open_qdrant(qdrant_dir) as q:
        q.upsert("alpha_docs", [point_id("a-q-1")], [vec], [payload])
        old = q.retrieve("gamma_docs", [point_id("g-0002")], with_payload=True, with_vectors=True)[0]
        changed = dict(old.payload or {})
        changed["metadata"] = {**(changed.get("metadata") or {}), "edited": True}
        q.upsert("gamma_docs", [str(old.id)], [old.vector], [changed])
        q.delete_points("gamma_docs", [point_id("g-0003")])


def chroma_get(chroma_dir: Path, collection: str, ids: list[str]) -> dict[str, Any]:
    """Read records from a scratch copy (the directory under test is never opened in place)."""
    from runbook_lib.chroma.source import ChromaSource
    from runbook_lib.config.settings import ChromaSettings

    with ChromaSource.open(ChromaSettings(persist_dir=chroma_dir)) as source:
        got = source.collection(collection).get(ids=ids, include=["documents", "metadatas"])
        return {i: (d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)}


def assert_every_write_is_in_chroma(chroma_dir: Path, *, chroma_side: bool = True) -> None:
    alpha = chroma_get(chroma_dir, "alpha_docs", ["a-app-1", "a-0005", "a-0010", "a-q-1"])
    if chroma_side:
        assert alpha["a-app-1"][0] == "app add"  # the app's ChromaDB writes stay
        assert alpha["a-0005"][0] == "app changed a-0005"
        assert "a-0010" not in alpha
    assert alpha["a-q-1"] == ("from qdrant", {"src": "q"})  # Qdrant's add came back
    gamma = chroma_get(chroma_dir, "gamma_docs", ["g-0002", "g-0003"])
    assert gamma["g-0002"][1]["edited"] is True  # Qdrant's change came back
    assert "g-0003" not in gamma  # Qdrant's delete came back


# --- the whole story -----------------------------------------------------------------------------------------
@on_both_targets
def test_rollback_keeps_chroma_writes_and_brings_back_every_qdrant_change(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    rid = migrate_ok()
    chroma_writes(chroma_dir)
    qdrant_writes(qdrant)
    live = tree_digest(chroma_dir)
    q_before = qdrant_state(qdrant)
    around = siblings(chroma_dir)

    # the plan: how many records come back from Qdrant; nothing changes
    step, plan = run_step_inprocess("rollback", rollback, run_id=rid)
    assert plan.ok and not plan.confirmed
    assert "3 record(s) come back from Qdrant (1 added, 1 changed, 1 deleted)" in plan.verdict
    back = plan.actions[1]
    assert back.op == "bring back from Qdrant" and back.status == "not done (confirm=False)"
    assert (
        "1 added, 1 changed, 1 deleted" in back.detail and "ChromaDB's own 3 change(s) since then stay" in back.detail
    )
    assert report.bring_back_table(plan).loc["gamma_docs", "Qdrant deleted"] == 1
    assert tree_digest(chroma_dir) == live and qdrant_state(qdrant) == q_before and siblings(chroma_dir) == around
    assert not (step.run.state_dir / "rollback_plan_snapshot").exists()

    step, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)

    assert result.ok, result.errors
    assert result.chroma["mode"] == "keep" and result.kept_old_dir is None and result.restored_from is None
    assert result.brought_back == 3 and result.actions[1].status == "done"
    assert_every_write_is_in_chroma(chroma_dir)
    previous = Path(result.previous_dir or "")  # the staged swap kept the directory it replaced, as it was
    assert previous.name.startswith("chroma_db.pre-sync-") and tree_digest(previous) == live
    assert [n for n in siblings(chroma_dir) if ".old-" in n or ".restore-" in n] == []
    assert qdrant_state(qdrant)["collections"] == []  # removed only after the changes came back
    counts = {r["collection"]: r["count"] for r in result.counts}
    assert counts["alpha_docs"] == 700 + 1 - 1 + 1 and counts["gamma_docs"] == 120 - 1
    assert not result.counts_compared and all(r["match"] is None for r in result.counts)
    assert result.health is not None and result.health["ok"]
    assert (step.run.dir / "rollback.env").read_text().count("VECTOR_DB=chroma") == 1
    filed = json.loads((step.run.dir / "05_rollback.json").read_text())
    assert filed["ok"] and filed["brought_back"] == 3 and filed["reverse_sync"]["totals"]["applied"] == 3
    assert "3 record(s) brought back from Qdrant" in result.verdict and "not compared with the backup" in result.verdict


def test_a_conflict_stops_before_changing_anything_and_on_conflict_target_resolves_it(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    rid = migrate_ok()
    chroma_writes(chroma_dir)
    client = chromadb.PersistentClient(path=str(chroma_dir))
    client.get_collection("gamma_docs", embedding_function=None).update(ids=["g-0002"], metadatas=[{"chroma": 1}])
    _close(client)
    qdrant_writes(qdrant)  # changes g-0002 too: a conflict
    live, q_before, around = tree_digest(chroma_dir), qdrant_state(qdrant), siblings(chroma_dir)

    with pytest.raises(VerificationFailed, match=r"STOPPED before changing anything.*gamma_docs/g-0002"):
        run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)

    assert tree_digest(chroma_dir) == live and siblings(chroma_dir) == around  # ChromaDB untouched
    assert qdrant_state(qdrant) == q_before  # Qdrant untouched
    run_dir = runbook_env["outputs"] / rid
    assert not (run_dir / "rollback.env").exists()
    filed = json.loads((run_dir / "05_rollback.json").read_text())
    assert filed["ok"] is False and filed["blocked"] and filed["reverse_sync"]["totals"]["conflicts"] == 1

    _, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True, on_conflict="target")

    assert result.ok, result.errors
    assert_every_write_is_in_chroma(chroma_dir)  # ChromaDB's own writes stay, Qdrant's come back
    assert chroma_get(chroma_dir, "gamma_docs", ["g-0002"])["g-0002"][1].get("chroma") is None  # Qdrant's won
    assert qdrant_state(qdrant)["collections"] == []


def test_a_missing_directory_is_restored_and_qdrant_changes_come_back_into_it(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    rid = migrate_ok()
    chroma_writes(chroma_dir)
    _, synced = run_step_inprocess("sync", sync, run_id=rid)  # the ChromaDB writes reach Qdrant
    assert synced.totals()["applied"] == 3
    qdrant_writes(qdrant)
    shutil.rmtree(chroma_dir)

    _, plan = run_step_inprocess("rollback", rollback, run_id=rid)
    assert plan.ok and plan.chroma["mode"] == "restore" and "missing" in plan.chroma["note"]
    assert "3 record(s) come back from Qdrant (1 added, 1 changed, 1 deleted)" in plan.verdict
    assert "3 record(s) where the older backup differs" in plan.actions[1].detail
    assert not chroma_dir.exists()

    _, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)

    assert result.ok, result.errors
    assert result.restored_from and result.kept_old_dir is None
    assert result.brought_back == 6  # Qdrant's 3, and the 3 synced ChromaDB writes the older backup lacks
    assert_every_write_is_in_chroma(chroma_dir)
    assert result.previous_dir is None  # the intermediate copy of the backup was removed (the backup stays)
    assert [n for n in siblings(chroma_dir) if ".pre-sync-" in n or ".restore-" in n] == []
    assert not result.counts_compared  # records came back: the counts are not the backup's
    assert qdrant_state(qdrant)["collections"] == []


# --- refusals: before anything changes ---------------------------------------------------------------------
def test_rollback_refuses_a_collection_another_run_replaced(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    first = migrate_ok()
    second = migrate_ok(on_existing="recreate")  # replaces every collection the first run created
    live, q_before = tree_digest(chroma_dir), qdrant_state(qdrant)

    with pytest.raises(ConfigError, match=rf"run {second} has since replaced Qdrant collection 'alpha_docs'"):
        run_step_inprocess("rollback", rollback, run_id=first, confirm=True)
    assert tree_digest(chroma_dir) == live and qdrant_state(qdrant) == q_before

    # rolling the second run back first releases the collections; the first run's rollback then has nothing left
    _, undone = run_step_inprocess("rollback", rollback, run_id=second, confirm=True)
    assert undone.ok, undone.errors
    _, result = run_step_inprocess("rollback", rollback, run_id=first, confirm=True)
    assert result.ok, result.errors
    assert {a.name: a.status for a in result.actions if a.system == "Qdrant"}["alpha_docs"] == "skipped"


def _fake_run(outputs: Path, run_id: str, started: str, entry: dict[str, Any], *, rolled_back: bool = False) -> Run:
    folder = outputs / run_id
    (folder / "state").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"run_id": run_id, "steps": {"migrate": {"started_at": started}}}))
    checkpoint = {"target": "Qdrant local mode at /q", "collections": {"docs": {"target": "docs", **entry}}}
    (folder / "state" / CHECKPOINT).write_text(json.dumps(checkpoint))
    if rolled_back:
        (folder / "05_rollback.json").write_text(json.dumps({"confirmed": True, "ok": True}))
    return Run(run_id, folder)


def test_the_takeover_rule(tmp_path: Path) -> None:
    mine = _fake_run(tmp_path, "r-mine", "2026-01-02T00:00:00+00:00", {"created_by_run": True, "status": "done"})
    checkpoint = json.loads((mine.dir / "state" / CHECKPOINT).read_text())
    replaced = {"created_by_run": True, "replaced_existing": True, "status": "done"}
    _fake_run(tmp_path, "r-earlier", "2026-01-01T00:00:00+00:00", replaced)  # before mine: not a takeover
    _fake_run(tmp_path, "r-undone", "2026-01-03T00:00:00+00:00", replaced, rolled_back=True)  # rolled back since
    _fake_run(tmp_path, "r-resumed", "2026-01-02T00:00:00+00:00", {"created_by_run": False, "status": "copying"})
    _fake_run(tmp_path, "r-untouched", "2026-01-05T00:00:00+00:00", {"created_by_run": False, "status": "pending"})
    found = takeovers(mine, tmp_path, checkpoint, ["docs"])
    assert len(found) == 1 and found[0].startswith("run r-resumed has since written into Qdrant collection 'docs'")
    assert takeovers(mine, tmp_path, checkpoint, ["other"]) == []


def test_rollback_refuses_while_a_process_holds_the_directory_open(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    rid = migrate_ok()
    qdrant_writes(qdrant)
    script = "import sys, time; f = open(sys.argv[1], 'rb'); print('ready', flush=True); time.sleep(120)"
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(chroma_dir / "chroma.sqlite3")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        live, q_before = tree_digest(chroma_dir), qdrant_state(qdrant)

        _, plan = run_step_inprocess("rollback", rollback, run_id=rid)  # the plan only warns
        assert any(f"{holder.pid} (python" in w for w in plan.warnings), plan.warnings
        with pytest.raises(ConfigError, match=rf"is open in another process \({holder.pid} "):
            run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)

        assert tree_digest(chroma_dir) == live and qdrant_state(qdrant) == q_before
    finally:
        holder.kill()
        holder.wait(timeout=30)
    time.sleep(0.1)
    _, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)
    assert result.ok and result.brought_back == 3


def test_start_times_order_runs_within_a_second() -> None:
    """Backups record microseconds: two migrations started in the same second are ordered; a time known only to
    the second is compared at that resolution, where a tie is not "before" (the rollback refuses, not guesses)."""
    from runbook_lib.steps.rollback.other_runs import started_before

    assert started_before("2026-11-30T08:09:12.100000+00:00", "2026-11-30T08:09:12.900000+00:00")
    assert not started_before("2026-11-30T08:09:12.900000+00:00", "2026-11-30T08:09:12.100000+00:00")
    assert not started_before("2026-11-30T08:09:12+00:00", "2026-11-30T08:09:12.900000+00:00")  # a tie
    assert not started_before("2026-11-30T08:09:12.100000+00:00", "2026-11-30T08:09:12+00:00")
    assert started_before("2026-11-30T08:09:11+00:00", "2026-11-30T08:09:12.000001+00:00")
    assert not started_before("", "2026-11-30T08:09:12+00:00") and not started_before("garbled", "also")


def test_what_the_rollback_deletes_is_exported_and_checked_against_the_ledger_first(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    import base64

    from runbook_lib.config.settings import load_settings
    from runbook_lib.core.layouts import Layout
    from runbook_lib.qdrant.connect import open_target
    from runbook_lib.state.ledger import Ledger
    from runbook_lib.steps.rollback.export import export_path, export_points

    rid = migrate_ok()
    run_dir = runbook_env["outputs"] / rid
    settings = load_settings()
    with open_target(settings.qdrant) as target, Ledger.for_run(run_dir / "state") as ledger:
        path = export_path(run_dir, "gamma_docs")
        assert export_points(target, "gamma_docs", path, ledger=ledger, collection="gamma_docs", layout=Layout()) == (
            120,
            0,
        )
        line = json.loads(path.read_text().splitlines()[0])
        assert np.frombuffer(base64.b64decode(line["vector"]), "<f4").shape == (4,) and "chroma_id" in line["payload"]
    qdrant_writes(runbook_env["qdrant"])  # after the "bring-back": one point changed, one deleted in gamma_docs
    with open_target(settings.qdrant) as target, Ledger.for_run(run_dir / "state") as ledger:
        again = export_path(run_dir, "gamma_docs")
        assert again != path and path.is_file()  # an earlier export is never overwritten
        found = export_points(target, "gamma_docs", again, ledger=ledger, collection="gamma_docs", layout=Layout())
        assert found == (119, 2)
        kept = export_points(
            target, "gamma_docs", again, ledger=ledger, collection="gamma_docs", layout=Layout(), allowed={"g-0002"}
        )
        assert kept == (119, 1)
    _, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)
    assert result.ok, result.errors
    lines = {name: len(Path(result.exports[name]).read_text().splitlines()) for name in result.exports}
    assert lines == {"alpha_docs": 701, "beta_docs": 300, "gamma_docs": 119}
