"""Rollback (``05_rollback.ipynb``) and backup cleanup on real components.

Real persistent ChromaDB directories, real Qdrant Edge (the engine; the full cycle on local mode too, and the
alias cutover on local mode only: Edge has no aliases), real papermill through the ``runbook`` command. An
embedded target has one user at a time, so every helper closes its store before a step runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from qdrant_client import models

from runbook_lib.chroma.backup import backup_root, create_backup, load_backup
from runbook_lib.errors import BackupError, ConfigError, ExistingCollectionError
from runbook_lib.kernel.step import begin
from runbook_lib.runner import cleanup
from runbook_lib.state.checkpoint import CHECKPOINT
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.rollback import report
from runbook_lib.steps.rollback.engine import rollback

from conftest import _close as close_chroma
from conftest import on_local_mode, open_qdrant, run_cli, run_step_inprocess

MIGRATED = ("alpha_docs", "beta_docs", "gamma_docs")  # empty_docs is skipped (no dimension)


# --- helpers -------------------------------------------------------------------------------------------
def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (all of them, transient SQLite files included)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def siblings(path: Path) -> list[str]:
    """What sits next to the ChromaDB directory (backups, .old-*, .restore-* ...)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


def qdrant_state(path: Path) -> dict[str, Any]:
    with open_qdrant(path) as store:
        names = store.collection_names()
        return {"collections": names, "aliases": store.aliases(), "counts": {n: store.count(n) for n in names}}


def seed_qdrant(path: Path, *, aliases: dict[str, str]) -> None:
    """A collection the migration has nothing to do with, and aliases that exist before the run."""
    with open_qdrant(path) as store:
        store.create_collection("legacy_notes", size=3, distance="Dot")
        ids = [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]
        store.upsert("legacy_notes", ids, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [{"n": 1}, {"n": 2}])
        for alias, collection in aliases.items():
            store.set_alias(alias, collection)


def add_chroma_record(persist_dir: Path, collection: str = "alpha_docs", dim: int = 16) -> None:
    """The app writing to the live ChromaDB after the backup (changes the directory's bytes)."""
    client = chromadb.PersistentClient(path=str(persist_dir))
    try:
        col = client.get_collection(collection, embedding_function=None)
        col.add(ids=["written-after-backup"], embeddings=np.ones((1, dim), dtype=np.float32), documents=["late"])
    finally:
        close_chroma(client)


def chroma_counts(persist_dir: Path) -> dict[str, int]:
    """Counts read from a scratch copy (never open the directory under test in place)."""
    from runbook_lib.chroma.source import ChromaSource
    from runbook_lib.config.settings import ChromaSettings

    with ChromaSource.open(ChromaSettings(persist_dir=persist_dir)) as source:
        return {n: source.count(n) for n in source.collection_names()}


def migrate_ok(**params: Any) -> str:
    step, result = run_step_inprocess("migrate", migrate, **params)
    assert result.ok, result.errors
    return str(step.run.run_id)


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


# --- the full cycle ------------------------------------------------------------------------------------
@pytest.mark.parametrize(  # on both targets (aliases: local mode, standing in for a server; Edge has none)
    ("cutover", "qdrant_kind"), [("plain", "edge"), ("plain", "local"), ("alias", "local")]
)
def test_full_cycle_restores_everything_as_it_was(
    small_source: dict[str, Any], runbook_env: dict[str, Path], cutover: str, qdrant_kind: str
) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    # before the run: an unrelated collection, an unrelated alias, and (alias cutover) the alias the app queries
    pre_aliases = {"notes_live": "legacy_notes"} if qdrant_kind == "local" else {}
    if cutover == "alias":
        pre_aliases["alpha_docs"] = "legacy_notes"
    seed_qdrant(qdrant, aliases=pre_aliases)
    chroma_before = tree_digest(chroma_dir)
    qdrant_before = qdrant_state(qdrant)

    rid = migrate_ok(cutover=cutover)
    during = qdrant_state(qdrant)
    assert len(during["collections"]) == len(qdrant_before["collections"]) + len(MIGRATED)
    if cutover == "alias":
        assert during["aliases"]["alpha_docs"] == f"alpha_docs__{rid}"

    step, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)

    assert result.ok, result.errors
    assert tree_digest(chroma_dir) == chroma_before  # byte-identical to the pre-migration directory
    assert qdrant_state(qdrant) == qdrant_before  # exactly what was there before, the legacy collection included
    assert [n for n in siblings(chroma_dir) if ".old-" in n or ".restore-" in n or ".pre-sync-" in n] == []
    assert result.chroma["mode"] == "keep"  # the live directory stays (nothing to restore, nothing came back)
    assert {r["collection"]: r["count"] for r in result.counts} == {n: s["count"] for n, s in small_source.items()}
    assert not result.counts_compared and all(r["match"] is None for r in result.counts)
    ops = {(a.op, a.name): a.status for a in result.actions}
    if cutover == "alias":
        assert ops[("put back alias", "alpha_docs")] == "done"
        assert ops[("delete alias", "beta_docs")] == "done"
    else:
        assert ops[("delete collection", "alpha_docs")] == "done"
    assert ("leave untouched", "legacy_notes") not in ops  # not the run's: not even considered
    env = read_env_file(Path(result.env_file or ""))
    assert env == {"VECTOR_DB": "chroma", "CHROMA_PERSIST_DIR": str(chroma_dir)}
    filed = json.loads((step.run.dir / "05_rollback.json").read_text())
    assert filed["ok"] is True and filed["status"] == "ok" and filed["confirmed"] is True
    assert filed["qdrant_after"]["aliases"] == pre_aliases


@pytest.mark.slow
@on_local_mode  # cutover=alias: Edge has no aliases
def test_full_cycle_through_the_runner(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    seed_qdrant(qdrant, aliases={"notes_live": "legacy_notes"})
    chroma_before = tree_digest(chroma_dir)
    qdrant_before = qdrant_state(qdrant)
    rid = migrate_ok(cutover="alias")

    proc = run_cli("rollback", "--run-id", rid, "-p", "confirm", "true")

    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = runbook_env["outputs"] / rid
    for name in ("05_rollback.ipynb", "05_rollback.html", "05_rollback.json", "rollback.env"):
        assert (run_dir / name).is_file(), name
    filed = json.loads((run_dir / "05_rollback.json").read_text())
    assert filed["ok"] is True and filed["confirmed"] is True
    assert json.loads((run_dir / "manifest.json").read_text())["steps"]["rollback"]["status"] == "ok"
    assert "Rolled back run" in proc.stderr
    assert tree_digest(chroma_dir) == chroma_before
    assert qdrant_state(qdrant) == qdrant_before
    nb = (run_dir / "05_rollback.ipynb").read_text()
    assert "Rolled back run" in nb and "delete collection" in nb and "VECTOR_DB=chroma" in nb


def test_a_changed_directory_is_kept_unless_a_restore_is_asked_for(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    chroma_dir = runbook_env["chroma"]
    rid = migrate_ok()
    backup = load_backup(backup_root(chroma_dir) / rid)
    add_chroma_record(chroma_dir)  # the app kept writing to ChromaDB after the backup
    changed = tree_digest(chroma_dir)

    _, plan = run_step_inprocess("rollback", rollback, run_id=rid)
    assert plan.ok and plan.actions[0].op == "keep directory" and "changed since the backup" in plan.actions[0].detail
    assert tree_digest(chroma_dir) == changed  # plan only: untouched

    _, kept = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)
    assert kept.ok, kept.errors
    assert kept.chroma["mode"] == "keep" and kept.kept_old_dir is None
    assert tree_digest(chroma_dir) == changed  # the app's write stays: not replaced by the older backup
    assert chroma_counts(chroma_dir)["alpha_docs"] == small_source["alpha_docs"]["count"] + 1
    assert [n for n in siblings(chroma_dir) if ".old-" in n or ".restore-" in n] == []

    # restore_from_backup=True: replaced by the verified backup, the changed directory kept beside it
    _, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True, restore_from_backup=True)

    assert result.ok, result.errors
    assert result.actions[0].op == "restore directory" and result.actions[0].status == "done"
    restored = tree_digest(chroma_dir)
    assert restored == {k: v["sha256"] for k, v in backup.manifest["files"].items()}  # exactly the verified backup
    assert chroma_counts(chroma_dir)["alpha_docs"] == small_source["alpha_docs"]["count"]
    old = Path(result.kept_old_dir or "")
    assert old.name.startswith("chroma_db.old-") and tree_digest(old) == changed  # kept, never deleted
    assert [n for n in siblings(chroma_dir) if ".restore-" in n] == []
    assert result.counts_compared and all(r["match"] for r in result.counts)
    assert {r["collection"]: r["backup_count"] for r in result.counts}["alpha_docs"] == 700
    # another directory now: the ledger trusts none of its write sequence numbers (the next sync reads everything)
    from runbook_lib.state.ledger import Ledger

    with Ledger.for_run(runbook_env["outputs"] / rid / "state") as ledger:
        assert ledger.marker("alpha_docs") is None and set(ledger.sequences("alpha_docs").values()) <= {None}

    # running it again finds the directory already restored: no second swap, nothing else set aside
    _, again = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True, restore_from_backup=True)
    assert again.ok and again.chroma["mode"] == "keep" and "restored earlier" in again.chroma["note"]
    assert tree_digest(chroma_dir) == restored
    assert len([n for n in siblings(chroma_dir) if ".old-" in n]) == 1


def test_restore_recreates_a_deleted_directory(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    chroma_dir = runbook_env["chroma"]
    rid = migrate_ok()
    shutil.rmtree(chroma_dir)

    _, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)

    assert result.ok, result.errors
    assert result.chroma["mode"] == "restore" and result.kept_old_dir is None
    assert chroma_counts(chroma_dir) == {n: s["count"] for n, s in small_source.items()}
    assert result.counts_compared and all(r["match"] for r in result.counts)  # restored, nothing came back


# --- without confirm -------------------------------------------------------------------------------------
@on_local_mode  # cutover=alias: Edge has no aliases
def test_without_confirm_nothing_changes(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    rid = migrate_ok(cutover="alias")
    add_chroma_record(chroma_dir)  # the app wrote to ChromaDB: the directory is kept (no restore)
    chroma_before = tree_digest(chroma_dir)
    qdrant_before = qdrant_state(qdrant)
    siblings_before = siblings(chroma_dir)

    step, result = run_step_inprocess("rollback", rollback, run_id=rid)

    assert result.ok and not result.confirmed
    assert "nothing changed" in result.verdict and "confirm=True" in result.verdict
    assert tree_digest(chroma_dir) == chroma_before
    assert qdrant_state(qdrant) == qdrant_before
    assert siblings(chroma_dir) == siblings_before
    assert not (step.run.dir / "rollback.env").exists()
    planned = [a for a in result.actions if a.is_change]
    assert result.actions[0].op == "keep directory"
    assert len(planned) == 2 * len(MIGRATED)  # an alias and a collection per migrated collection
    assert all(a.status == "not done (confirm=False)" for a in planned)
    assert report.plan_table(result).shape[0] == len(result.actions)


# --- a run that failed halfway ---------------------------------------------------------------------------
def test_rollback_of_a_run_that_failed_halfway(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    # gamma_docs already exists in Qdrant (another app's)
    with open_qdrant(qdrant) as store:
        store.create_collection("gamma_docs", size=4, distance="Dot")
        store.upsert("gamma_docs", [str(uuid.UUID(int=7))], [[0.1, 0.2, 0.3, 0.4]], [{"own": 1}])
    chroma_before = tree_digest(chroma_dir)
    qdrant_before = qdrant_state(qdrant)

    # a foreign collection is now refused before anything is written (preflight): the run that failed halfway is
    # one killed while copying beta_docs, before it reached gamma_docs
    with pytest.raises(ExistingCollectionError):
        begin("migrate").execute(migrate)
    assert qdrant_state(qdrant) == qdrant_before
    step = begin("migrate", collections="alpha_docs,beta_docs")
    step.execute(migrate)
    rid = step.run.run_id
    # beta_docs was killed while copying: checkpoint says "copying" at record 128, Qdrant holds part of it
    path = step.run.state_dir / CHECKPOINT
    state = json.loads(path.read_text())
    assert state["collections"]["alpha_docs"]["status"] == "done"
    state["planned"] = ["alpha_docs", "beta_docs", "gamma_docs"]
    state["collections"]["beta_docs"].update(status="copying", records_done=128)
    path.write_text(json.dumps(state))
    with open_qdrant(qdrant) as store:
        store.delete_points(
            "beta_docs",
            query_filter=models.Filter(must=[models.FieldCondition(key="metadata.i", range=models.Range(gte=128))]),
        )
        assert store.count("beta_docs") < 300
    statuses = {n: s.get("status") for n, s in state["collections"].items()}
    assert statuses["beta_docs"] == "copying" and statuses.get("gamma_docs") in (None, "pending")

    _, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)

    assert result.ok, result.errors
    assert tree_digest(chroma_dir) == chroma_before
    after = qdrant_state(qdrant)
    assert after == qdrant_before  # alpha and beta gone, the pre-existing gamma_docs untouched (1 point)
    assert after["counts"]["gamma_docs"] == 1
    done = {a.name for a in result.actions if a.op == "delete collection" and a.status == "done"}
    assert done == {"alpha_docs", "beta_docs"}


# --- a bad backup stops it before anything changes --------------------------------------------------------
def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.slow
@on_local_mode  # cutover=alias: Edge has no aliases
def test_tampered_backup_is_refused_through_the_runner(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    rid = migrate_ok(cutover="alias")
    data = backup_root(chroma_dir) / rid / "data"
    victim = next(p for p in sorted(data.rglob("data_level0.bin")))
    _flip_one_byte(victim)
    chroma_before = tree_digest(chroma_dir)
    qdrant_before = qdrant_state(qdrant)
    siblings_before = siblings(chroma_dir)

    proc = run_cli("rollback", "--run-id", rid, "-p", "confirm", "true")

    assert proc.returncode in (1, 2), proc.stderr[-3000:]
    assert "BackupError" in proc.stderr and "stopped before changing anything" in proc.stderr
    assert f"{victim.relative_to(data).as_posix()}: checksum differs" in proc.stderr
    assert tree_digest(chroma_dir) == chroma_before
    assert qdrant_state(qdrant) == qdrant_before
    assert siblings(chroma_dir) == siblings_before
    run_dir = runbook_env["outputs"] / rid
    assert not (run_dir / "rollback.env").exists()
    filed = json.loads((run_dir / "05_rollback.json").read_text())
    assert filed["ok"] is False and "checksum" in filed["error"]
    assert (run_dir / "05_rollback.ipynb").is_file()  # the failed notebook is filed with its error cell


def test_missing_backup_is_refused(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    rid = migrate_ok()
    shutil.rmtree(backup_root(chroma_dir) / rid)
    qdrant_before = qdrant_state(qdrant)

    with pytest.raises(BackupError) as err:
        run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)

    message = str(err.value)
    assert "stopped before changing anything" in message and "missing" in message
    assert message.count(". ") == 0  # one sentence
    assert qdrant_state(qdrant) == qdrant_before


def test_restore_chroma_false_skips_the_backup_and_still_cleans_qdrant(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    chroma_dir, qdrant = runbook_env["chroma"], runbook_env["qdrant"]
    rid = migrate_ok()
    _flip_one_byte(backup_root(chroma_dir) / rid / "data" / "chroma.sqlite3")
    before = tree_digest(chroma_dir)

    _, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True, restore_chroma=False)

    assert result.ok, result.errors
    assert result.chroma["mode"] == "skipped"
    assert tree_digest(chroma_dir) == before
    assert qdrant_state(qdrant)["collections"] == []


# --- settings that do not fit -------------------------------------------------------------------------
def test_rollback_needs_a_run_id(runbook_env: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="pass the run id of the migration to undo"):
        begin("rollback", run_id="", confirm=True)
    assert not runbook_env["outputs"].exists() or list(runbook_env["outputs"].iterdir()) == []


def test_rollback_of_a_run_without_migration(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    from runbook_lib.steps.dry_run.engine import dry_run

    step, _ = run_step_inprocess("dry-run", dry_run)
    with pytest.raises(ConfigError, match="no migrate step"):
        run_step_inprocess("rollback", rollback, run_id=step.run.run_id, confirm=True)


def test_rollback_refuses_another_qdrant(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rid = migrate_ok()
    monkeypatch.setenv("QDRANT_EDGE_PATH", str(tmp_path / "another_qdrant"))
    with pytest.raises(ConfigError, match="migrated into"):
        run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)
    assert qdrant_state(runbook_env["qdrant"])["collections"] == list(MIGRATED)


# --- a Chroma server source: no file backup ---------------------------------------------------------------
@pytest.mark.server
def test_rollback_of_a_server_migration(server_env: dict[str, Any]) -> None:
    qdrant = server_env["qdrant"]
    rid = migrate_ok()
    assert qdrant_state(qdrant)["collections"] == ["srv_cosine", "srv_l2"]

    step, result = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)

    assert result.ok, result.errors
    assert result.chroma["mode"] == "skipped" and "Chroma server" in result.chroma["note"]
    assert result.reverse_sync is not None and result.brought_back == 0  # nothing changed in Qdrant
    assert result.actions[0].status == "skipped"
    assert qdrant_state(qdrant)["collections"] == []
    assert result.health is not None and result.health["ok"]
    assert {n: c["count"] for n, c in result.health["collections"].items()} == {"srv_cosine": 250, "srv_l2": 90}
    env = read_env_file(step.run.dir / "rollback.env")
    assert env["VECTOR_DB"] == "chroma" and env["CHROMA_HOST"] == "127.0.0.1"
    assert env["CHROMA_DATABASE"] == server_env["database"] and "CHROMA_PERSIST_DIR" not in env
    assert not any("TOKEN" in k or "KEY" in k for k in env)


# --- cleanup of old backups ---------------------------------------------------------------------------
def _make_backup(persist_dir: Path, run_id: str, age: timedelta) -> Path:
    backup = create_backup(persist_dir, run_id)
    manifest = json.loads((backup.path / "manifest.json").read_text())
    manifest["created_at"] = (datetime.now(UTC) - age).isoformat(timespec="seconds")
    (backup.path / "manifest.json").write_text(json.dumps(manifest))
    return backup.path


def _cleanup(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="runbook")
    sub = parser.add_subparsers(dest="command", required=True)
    cleanup.add_parser(sub)
    return cleanup.run(parser.parse_args(["cleanup", *argv]))


def test_cleanup_lists_then_deletes_old_backups(
    small_source: dict[str, Any], runbook_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    chroma_dir = runbook_env["chroma"]
    old1 = _make_backup(chroma_dir, "run-old-1", timedelta(days=10))
    old2 = _make_backup(chroma_dir, "run-old-2", timedelta(days=8))
    new = _make_backup(chroma_dir, "run-new", timedelta(hours=1))
    partial = backup_root(chroma_dir) / "run-killed.partial"
    (partial / "data").mkdir(parents=True)
    (partial / "data" / "chroma.sqlite3").write_bytes(b"half")
    stamp = (datetime.now(UTC) - timedelta(days=9)).timestamp()
    os.utime(partial, (stamp, stamp))

    assert _cleanup("--older-than", "7d") == 0
    out = capsys.readouterr().out
    assert "run-old-1" in out and "run-old-2" in out and "run-killed.partial" in out
    assert "3 backup(s)" in out and "--yes" in out
    assert old1.exists() and old2.exists() and partial.exists()  # listing deletes nothing

    assert _cleanup("--older-than", "7d", "--yes") == 0
    assert not old1.exists() and not old2.exists() and not partial.exists()
    assert new.exists()
    assert "Deleted 3 backup(s)" in capsys.readouterr().out


def test_cleanup_keeps_the_newest_verified_backup_unless_forced(
    small_source: dict[str, Any], runbook_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    chroma_dir = runbook_env["chroma"]
    oldest = _make_backup(chroma_dir, "run-a", timedelta(days=12))
    verified = _make_backup(chroma_dir, "run-b", timedelta(days=10))
    corrupt = _make_backup(chroma_dir, "run-c", timedelta(days=9))  # the newest, but it fails verification
    _flip_one_byte(corrupt / "data" / "chroma.sqlite3")

    assert _cleanup("--older-than", "7d", "--yes") == 0
    out = capsys.readouterr().out
    assert "newest verified backup" in out and "corrupt" in out
    assert not oldest.exists() and not corrupt.exists()
    assert verified.exists()  # every backup is older than 7d, yet the newest verified one stays

    assert _cleanup("--older-than", "7d") == 0
    assert "Nothing to delete" in capsys.readouterr().out
    assert _cleanup("--older-than", "7d", "--yes", "--force") == 0
    assert not verified.exists()


def test_cleanup_durations(runbook_env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cleanup.parse_duration("7d") == timedelta(days=7)
    assert cleanup.parse_duration("12h") == timedelta(hours=12)
    assert cleanup.parse_duration("30m") == timedelta(minutes=30)
    with pytest.raises(SystemExit) as exc:
        _cleanup("--older-than", "7 days")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'7 days' is not a duration" in err and "7d, 12h or 30m" in err
    assert cleanup.run(argparse.Namespace(older_than="soon", yes=True, force=False)) == 2
    assert "not a duration" in capsys.readouterr().err
    assert cleanup.run(argparse.Namespace(older_than="7d", yes=False, force=False)) == 0
    assert "No backups under" in capsys.readouterr().out
