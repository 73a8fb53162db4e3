"""The sync step on real components: a persistent ChromaDB directory, Qdrant Edge (the engine; the forward sync
on local mode too, ``@on_both_targets``), the run's ledger. An app adds, changes and deletes records on both sides
around each step; sync carries every change over (including deletions and changes of uri and of metadata types),
stops before writing on a conflict, and a killed sync resumes exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest

from runbook_lib.core.mapping import build_payload, normalise_rows, point_id
from runbook_lib.errors import ConfigError, VerificationFailed
from runbook_lib.state.ledger import Ledger
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.sync import apply as sync_apply
from runbook_lib.steps.sync.engine import sync

from conftest import _close, assert_exact_copy, holding_qdrant, on_both_targets, open_qdrant, run_step_inprocess


def _migrate() -> str:
    step, result = run_step_inprocess("migrate", migrate)
    assert result.ok
    return step.run.run_id


def chroma_app_writes(chroma_dir: Path) -> dict[str, Any]:
    """What a live app does to ChromaDB after the migration's snapshot."""
    client = chromadb.PersistentClient(path=str(chroma_dir))
    alpha = client.get_collection("alpha_docs", embedding_function=None)
    beta = client.get_collection("beta_docs", embedding_function=None)
    rng = np.random.default_rng(7)
    alpha.add(
        ids=["a-new-1", "a-new-2"],
        embeddings=rng.normal(size=(2, 16)).tolist(),
        documents=["n1", None],
        metadatas=[{"k": 1}, None],
        uris=["s3://x/new1", None],
    )
    alpha.update(ids=["a-0005"], embeddings=rng.normal(size=(1, 16)).tolist())  # vector only
    alpha.update(ids=["a-0007"], metadatas=[{"i": 7.0, "half": 3.5, "even": False, "tag": "t2"}])  # int -> float
    beta.update(ids=["b-0003"], uris=["s3://moved/3.txt"])  # uri changed
    beta.update(ids=["b-0004"], documents=["rewritten"], embeddings=rng.normal(size=(1, 8)).tolist())
    alpha.delete(ids=["a-0010", "a-0011"])
    beta.delete(ids=["b-0100"])
    _close(client)
    return {"added": 2, "changed": 4, "deleted": 3}


def qdrant_app_writes(qdrant_dir: Path) -> None:
    """What the app does to Qdrant after cutover (the SPEC mapping, as the wrapper writes it)."""
    rng = np.random.default_rng(11)
    vec = normalise_rows(rng.normal(size=(1, 16)).astype(np.float32))[0]
    with open_qdrant(qdrant_dir) as q:
        q.upsert("alpha_docs", [point_id("a-q-1")], [vec], [build_payload("a-q-1", "from qdrant", {"src": "q"}, None)])
        old = q.retrieve("gamma_docs", [point_id("g-0002")], with_payload=True, with_vectors=True)[0]
        payload = dict(old.payload or {})
        payload["metadata"] = {**(payload.get("metadata") or {}), "edited": True}
        q.upsert("gamma_docs", [str(old.id)], [old.vector], [payload])
        q.delete_points("gamma_docs", [point_id("g-0003")])


def test_migration_fills_the_ledger_in_its_copy_pass(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    run_id = _migrate()
    with Ledger.for_run(runbook_env["outputs"] / run_id / "state") as ledger:
        assert {n: ledger.count(n) for n in ("alpha_docs", "beta_docs", "gamma_docs")} == {
            "alpha_docs": 700,
            "beta_docs": 300,
            "gamma_docs": 120,
        }
    # nothing changed: a sync says so and writes nothing
    _, result = run_step_inprocess("sync", sync, run_id=run_id)
    assert result.verdict.startswith("IN SYNC") and result.totals()["applied"] == 0


@on_both_targets
def test_forward_sync_carries_every_source_change(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    run_id = _migrate()
    chroma_app_writes(runbook_env["chroma"])
    _, result = run_step_inprocess("sync", sync, run_id=run_id)
    t = result.totals()
    assert t["source"] == 9 and t["qdrant"] == 0 and t["conflicts"] == 0 and t["applied"] == 9, result.collections
    by = {c["collection"]: c for c in result.collections}
    assert by["alpha_docs"]["source_changes"] == {"added": 2, "changed": 2, "deleted": 2}
    assert by["beta_docs"]["source_changes"] == {"added": 0, "changed": 2, "deleted": 1}
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1120 + 2 - 3
    # idempotent: again, nothing to do
    _, again = run_step_inprocess("sync", sync, run_id=run_id)
    assert again.verdict.startswith("IN SYNC"), again.verdict


def test_qdrant_side_changes_stop_a_forward_sync_and_come_back_with_reverse(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    run_id = _migrate()
    qdrant_app_writes(runbook_env["qdrant"])
    with pytest.raises(VerificationFailed, match="changed in Qdrant"):
        run_step_inprocess("sync", sync, run_id=run_id)
    # reverse without confirm: the plan only
    before = sorted(p.name for p in runbook_env["chroma"].parent.iterdir())
    _, plan = run_step_inprocess("sync", sync, run_id=run_id, direction="reverse")
    assert plan.plan_only and plan.totals()["qdrant"] == 3
    assert sorted(p.name for p in runbook_env["chroma"].parent.iterdir()) == before
    _, done = run_step_inprocess("sync", sync, run_id=run_id, direction="reverse", confirm=True)
    assert done.totals()["applied"] == 3 and done.previous_dir and Path(done.previous_dir).is_dir()
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    got = client.get_collection("alpha_docs").get(ids=["a-q-1"], include=["documents", "metadatas"])
    assert got["documents"] == ["from qdrant"] and got["metadatas"] == [{"src": "q"}]
    gamma = client.get_collection("gamma_docs")
    assert gamma.get(ids=["g-0003"])["ids"] == []
    assert gamma.get(ids=["g-0002"], include=["metadatas"])["metadatas"][0]["edited"] is True
    _close(client)
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1120
    _, again = run_step_inprocess("sync", sync, run_id=run_id)
    assert again.verdict.startswith("IN SYNC"), again.verdict


def test_a_conflict_stops_before_writing_unless_a_side_is_chosen(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    run_id = _migrate()
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    client.get_collection("gamma_docs", embedding_function=None).update(ids=["g-0002"], metadatas=[{"chroma_edit": 1}])
    _close(client)
    qdrant_app_writes(runbook_env["qdrant"])  # edits g-0002 too
    with pytest.raises(VerificationFailed, match=r"changed on both sides.*gamma_docs/g-0002"):
        run_step_inprocess("sync", sync, run_id=run_id, on_conflict="stop")
    with open_qdrant(runbook_env["qdrant"]) as q:
        assert q.retrieve("gamma_docs", [point_id("g-0002")])[0].payload["metadata"]["edited"] is True  # untouched
    _, result = run_step_inprocess("sync", sync, run_id=run_id, on_conflict="source")
    assert result.totals()["conflicts"] == 1
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1120


def test_a_killed_sync_resumes_exactly(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _migrate()
    chroma_app_writes(runbook_env["chroma"])
    real = sync_apply.to_qdrant
    calls = {"n": 0}

    def dies_after_the_first_collection(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process is stopped part-way
        real(*args, **kwargs)

    monkeypatch.setattr(sync_apply, "to_qdrant", dies_after_the_first_collection)
    with pytest.raises(KeyboardInterrupt):
        run_step_inprocess("sync", sync, run_id=run_id)
    monkeypatch.setattr(sync_apply, "to_qdrant", real)
    _, resumed = run_step_inprocess("sync", sync, run_id=run_id)
    by = {c["collection"]: c for c in resumed.collections}
    # alpha_docs was written (and its ledger updated) before the kill: nothing left to do there
    assert by["alpha_docs"]["source_changes"] == {"added": 0, "changed": 0, "deleted": 0}
    assert by["alpha_docs"]["applied"] == 0 and by["alpha_docs"]["in_step"] == 0
    # beta_docs had not started: exactly its changes are written now
    assert by["beta_docs"]["source_changes"] == {"added": 0, "changed": 2, "deleted": 1}
    assert by["beta_docs"]["applied"] == 3
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1119


def test_sync_needs_a_migrated_run(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    step, _ = run_step_inprocess("dry-run", __import__("runbook_lib.steps.dry_run.engine", fromlist=["x"]).dry_run)
    with pytest.raises(ConfigError, match="has no migration to synchronise"):
        run_step_inprocess("sync", sync, run_id=step.run.run_id)
    with pytest.raises(ConfigError, match="pass its run id"):
        run_step_inprocess("sync", sync)


def test_verify_after_a_sync_checks_the_source_as_of_that_sync(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    from runbook_lib.steps.verify.engine import verify

    run_id = _migrate()
    chroma_app_writes(runbook_env["chroma"])
    with pytest.raises(VerificationFailed):  # the live source moved on since the backup
        run_step_inprocess("verify", verify, run_id=run_id)
    run_step_inprocess("sync", sync, run_id=run_id)
    _, result = run_step_inprocess("verify", verify, run_id=run_id)
    assert result.ok and "as of the run's last sync" in result.source_read, result.verdict
    assert result.total_records == 1119
    # the app writes again after the sync: verify says so (and names the fix)
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    client.get_collection("beta_docs", embedding_function=None).delete(ids=["b-0200"])
    _close(client)
    with pytest.raises(VerificationFailed, match="changed since the last sync"):
        run_step_inprocess("verify", verify, run_id=run_id)


def test_the_next_sync_replays_the_dual_write_journal(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """VECTOR_DB=dual before cutover: a write Qdrant missed (its folder held by another process's client) is
    journaled; the next sync carries it over and clears the journal."""
    import os

    from runbook_lib.app import VectorDBClient
    from runbook_lib.app.journal import Journal

    run_id = _migrate()
    monkeypatch.setenv("VECTOR_DB", "dual")
    monkeypatch.setenv("VECTOR_DB_READ", "chroma")
    # Qdrant's folder is locked: the secondary fails
    with holding_qdrant(runbook_env["qdrant"]), VectorDBClient(os.environ) as app:
        app.add("beta_docs", ids=["b-dual-1"], embeddings=[[0.5] * 8], documents=["written while Qdrant was away"])
        assert app.journal_backlog() == 1
    journal = Journal(runbook_env["outputs"] / "dual_write_journal.jsonl")
    assert [e.ids for e in journal.pending()] == [["b-dual-1"]]
    _, result = run_step_inprocess("sync", sync, run_id=run_id)
    assert result.journal_replayed == 1 and journal.pending() == []
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1121


def test_a_plan_only_sync_leaves_the_last_sync_snapshot_alone(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    import json

    from runbook_lib.chroma.files import checksum_tree

    run_id = _migrate()
    run_step_inprocess("sync", sync, run_id=run_id)
    state = runbook_env["outputs"] / run_id / "state"
    before = checksum_tree(state / "sync_snapshot")
    synced = json.loads((state / "migrate_checkpoint.json").read_text())["sync"]
    qdrant_app_writes(runbook_env["qdrant"])
    _, plan = run_step_inprocess("sync", sync, run_id=run_id, direction="reverse")
    assert plan.plan_only
    assert checksum_tree(state / "sync_snapshot") == before
    assert json.loads((state / "migrate_checkpoint.json").read_text())["sync"] == synced
    assert not (state / "sync_snapshot.candidate").exists()


@pytest.mark.server
def test_sync_both_ways_with_a_chroma_server_source(server_env: dict[str, Any]) -> None:
    """The same guarantees with a `chroma run` server: forward carries the app's server writes (including a
    deletion and a metadata type change) into Qdrant; reverse writes Qdrant's changes straight into the server."""
    import os

    run_id = _migrate()
    client = chromadb.HttpClient(
        host=os.environ["CHROMA_HOST"], port=int(os.environ["CHROMA_PORT"]), database=server_env["database"]
    )
    col = client.get_collection("srv_cosine", embedding_function=None)  # type: ignore[arg-type]
    col.add(
        ids=["s-new"],
        embeddings=[[0.25] * 12],
        documents=["added on the server"],
        metadatas=[{"n": -1}],
        uris=["s3://server/new"],
    )
    col.update(ids=["s3"], metadatas=[{"n": 3.0, "ok": True}])
    col.delete(ids=["s4"])
    _, forward = run_step_inprocess("sync", sync, run_id=run_id)
    assert forward.totals()["applied"] == 3, forward.collections
    with open_qdrant(server_env["qdrant"]) as q:
        assert q.count("srv_cosine") == 250
        point = q.retrieve("srv_cosine", [point_id("s3")])[0]
        assert type(point.payload["metadata"]["n"]) is float and not q.retrieve("srv_cosine", [point_id("s4")])
        q.upsert("srv_l2", [point_id("q-1")], [[1.0] * 6], [build_payload("q-1", "from qdrant", {"k": 1}, None)])
        cleared = q.retrieve("srv_cosine", [point_id("s-new")], with_payload=True, with_vectors=True)[0]
        assert cleared.payload["uri"] == "s3://server/new"
        # the app clears the uri in Qdrant: the server's record loses it too
        q.upsert("srv_cosine", [str(cleared.id)], [cleared.vector], [build_payload("s-new", "d", {}, None)])
    _, reverse = run_step_inprocess("sync", sync, run_id=run_id, direction="reverse", confirm=True)
    assert reverse.totals()["applied"] == 2 and reverse.previous_dir is None
    got = client.get_collection("srv_l2", embedding_function=None).get(ids=["q-1"], include=["documents", "metadatas"])  # type: ignore[arg-type]
    assert got["documents"] == ["from qdrant"] and got["metadatas"] == [{"k": 1}]
    new = col.get(ids=["s-new"], include=["documents", "metadatas", "uris"])
    assert new["documents"] == ["d"] and new["metadatas"] == [None] and new["uris"] == [None], new
    _, again = run_step_inprocess("sync", sync, run_id=run_id)
    assert again.verdict.startswith("IN SYNC"), again.verdict


def test_sync_carries_awkward_records_both_ways(runbook_env: dict[str, Path]) -> None:
    """The awkward data (unicode and control-character ids, a 2,000-character id, shadowing metadata keys, 1 vs 1.0 vs
    True, a zero vector, list metadata, empty and missing documents): changes to such records, on either side,
    arrive exactly."""
    from data_builders import LONG_ID, create_awkward_db

    create_awkward_db(runbook_env["chroma"])
    run_id = _migrate()
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    col = client.get_collection("awkward_cosine", embedding_function=None)  # type: ignore[arg-type]
    col.update(ids=["tab\tand\nnewline"], metadatas=[{"ok": True, "value": 1.0}])  # bool flips, 1.0 arrives
    col.update(ids=["zero-vector"], embeddings=[[0.0, 0.0, 1.0]])
    col.delete(ids=[LONG_ID])
    col.add(ids=["新しい-🚀"], embeddings=[[0.3, -0.2, 0.1]], documents=[""], metadatas=[{"document": "shadow"}])
    _close(client)
    _, forward = run_step_inprocess("sync", sync, run_id=run_id)
    assert forward.totals()["applied"] == 4, forward.collections
    assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"])
    # the app, after cutover, edits an awkward record in Qdrant; the reverse sync brings it back exactly
    with open_qdrant(runbook_env["qdrant"]) as q:
        old = q.retrieve("awkward_cosine", [point_id("émoji-🚀")], with_payload=True, with_vectors=True)[0]
        payload = dict(old.payload or {})
        payload["metadata"] = {"tags": ["🚀"], "n": 2**53 + 1, "chroma_id": "not the id"}
        q.upsert("awkward_cosine", [str(old.id)], [old.vector], [payload])
    _, reverse = run_step_inprocess("sync", sync, run_id=run_id, direction="reverse", confirm=True)
    assert reverse.totals()["applied"] == 1, reverse.collections
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    got = client.get_collection("awkward_cosine").get(ids=["émoji-🚀"], include=["metadatas"])["metadatas"][0]
    _close(client)
    assert got == {"tags": ["🚀"], "n": 2**53 + 1, "chroma_id": "not the id"} and type(got["n"]) is int
    assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"])
    _, again = run_step_inprocess("sync", sync, run_id=run_id)
    assert again.verdict.startswith("IN SYNC"), again.verdict


def test_a_winner_the_direction_cannot_write_and_a_damaged_ledger_are_refused(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    run_id = _migrate()
    qdrant_app_writes(runbook_env["qdrant"])
    for direction, winner in (("forward", "target"), ("reverse", "source")):
        with pytest.raises(ConfigError, match=f"on_conflict={winner} keeps .* cannot carry") as info:
            run_step_inprocess("sync", sync, run_id=run_id, direction=direction, on_conflict=winner, confirm=True)
        assert info.value.exit_code == 2
    ledger = runbook_env["outputs"] / run_id / "state" / "ledger.sqlite"
    whole = ledger.read_bytes()
    for damaged in (whole[: len(whole) // 2], b"not a database " * 64):
        ledger.write_bytes(damaged)
        with pytest.raises(ConfigError, match=f"ledger {ledger} cannot be read"):
            run_step_inprocess("sync", sync, run_id=run_id)
    ledger.unlink()
    with pytest.raises(ConfigError, match=f"ledger {ledger} is missing"):
        run_step_inprocess("sync", sync, run_id=run_id)
    assert not ledger.exists()  # refused, not re-created empty
