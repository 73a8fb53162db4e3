"""`runbook cleanup` never deletes, without --force, a backup that a rollback may still need: the backup of the
newest run of a collection still live in Qdrant, or of a run that has not finished; and it says what deleting a
backup means for a rollback. Real run folders (state.run.Run + the checkpoint), real backups, real Qdrant Edge
(local mode where aliases are needed), and once a real migration."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.chroma.backup import backup_root, create_backup
from runbook_lib.runner import cleanup
from runbook_lib.state.checkpoint import CHECKPOINT, Checkpoint
from runbook_lib.state.run import Run
from runbook_lib.steps.migrate.engine import migrate

from conftest import holding_qdrant, on_local_mode, open_qdrant, run_step_inprocess

NOW = datetime.now(UTC)


def _cleanup(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="runbook")
    sub = parser.add_subparsers(dest="command", required=True)
    cleanup.add_parser(sub)
    return cleanup.run(parser.parse_args(["cleanup", *argv]))


def _run(
    env: dict[str, Path],
    days_ago: int,
    *,
    steps: dict[str, str] | None = None,
    migrated: dict[str, tuple[str, str | None]] | None = None,
) -> Run:
    """A run folder made `days_ago`, its step statuses, its migration checkpoint and its real backup."""
    run = Run.create(env["outputs"])
    created = (NOW - timedelta(days=days_ago)).isoformat(timespec="seconds")
    run.update_manifest(created_at=created)
    for step, status in (steps or {"migrate": "ok"}).items():
        run.update_step(step, status=status)
    checkpoint = Checkpoint(run.state_dir / CHECKPOINT)
    for source, (target, alias) in (migrated or {}).items():
        checkpoint.entry(source).update(target=target, alias=alias, status="done", created_by_run=True)
    checkpoint.save()
    backup = create_backup(env["chroma"], run.run_id)
    manifest = json.loads((backup.path / "manifest.json").read_text())
    manifest["created_at"] = created
    (backup.path / "manifest.json").write_text(json.dumps(manifest))
    return run


def _live(env: dict[str, Path], collections: list[str], aliases: dict[str, str] | None = None) -> None:
    with open_qdrant(env["qdrant"]) as store:
        for name in collections:
            store.create_collection(name, size=4, distance="Cosine")
        for alias, collection in (aliases or {}).items():
            store.set_alias(alias, collection)


def _actions(env: dict[str, Path], **kwargs: Any) -> dict[str, str]:
    from runbook_lib.config.settings import load_settings

    settings = load_settings()
    protect = cleanup.protected_backups(cleanup.read_runs(settings.outputs), cleanup.read_live(settings.qdrant))
    plan = cleanup.plan_cleanup(backup_root(env["chroma"]), timedelta(days=7), protect=protect, now=NOW, **kwargs)
    return {b.name: b.action for b in plan}


@on_local_mode  # aliases (Edge has none)
def test_the_newest_run_of_a_live_collection_keeps_its_backup(
    small_source: dict[str, Any], runbook_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    env = runbook_env
    gone = _run(env, 30, migrated={"gamma_docs": ("gamma_docs", None)})  # rolled back: not in Qdrant any more
    older = _run(env, 20, migrated={"alpha_docs": ("alpha_docs", None)})  # replaced by a newer run of alpha_docs
    newest_alpha = _run(env, 15, migrated={"alpha_docs": ("alpha_docs", None)})
    aliased = _run(env, 12, migrated={"beta_docs": ("beta_docs__v2", "beta_docs")})
    moved = _run(env, 11, migrated={"empty_docs": ("empty_docs__v1", "empty_docs")})  # alias moved elsewhere
    latest = _run(env, 10, migrated={"gamma_docs": ("gamma_docs__v3", "gamma_docs")})  # rolled back too
    _live(
        env,
        ["alpha_docs", "beta_docs__v2", "empty_docs__v2"],
        {"beta_docs": "beta_docs__v2", "empty_docs": "empty_docs__v2"},
    )

    actions = _actions(env)
    assert actions[newest_alpha.run_id].startswith("keep: newest run of 'alpha_docs', live in Qdrant")
    assert actions[aliased.run_id].startswith("keep: newest run of 'beta_docs', live in Qdrant")
    assert actions[latest.run_id].startswith("keep: newest verified backup")
    for run in (gone, older, moved):
        assert actions[run.run_id] == "delete", (run.run_id, actions)

    assert _cleanup("--older-than", "7d", "--yes") == 0
    out = capsys.readouterr().out
    assert "A deleted backup cannot be restored" in out and "can then only keep what is still in the live" in out
    assert "--force to delete it" in out
    root = backup_root(env["chroma"])
    assert sorted(p.name for p in root.iterdir()) == sorted([newest_alpha.run_id, aliased.run_id, latest.run_id])

    assert _cleanup("--older-than", "7d", "--yes", "--force") == 0
    assert list(root.iterdir()) == []


def test_unfinished_runs_keep_their_backup(
    small_source: dict[str, Any], runbook_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    env = runbook_env
    running = _run(env, 40, steps={"migrate": "running"})  # killed mid-migration: may be resumed
    failed = _run(env, 35, steps={"migrate": "failed"})
    unverified = _run(env, 30, steps={"migrate": "ok", "verify": "failed"})
    unreadable = _run(env, 25)
    (unreadable.dir / "manifest.json").write_text("{ not json")
    done = _run(env, 20)  # finished, nothing of it live
    newest = _run(env, 10)
    partial = backup_root(env["chroma"]) / f"{running.run_id}.partial"  # its interrupted second backup attempt
    (partial / "data").mkdir(parents=True)
    stamp = (NOW - timedelta(days=39)).timestamp()
    os.utime(partial, (stamp, stamp))

    actions = _actions(env)
    assert actions[running.run_id] == "keep: run not finished (migrate running) (--force to delete it)"
    assert actions[failed.run_id] == "keep: run not finished (migrate failed) (--force to delete it)"
    assert actions[unverified.run_id] == "keep: run not finished (verify failed) (--force to delete it)"
    assert actions[unreadable.run_id] == "keep: run manifest unreadable (--force to delete it)"
    assert actions[partial.name] == actions[running.run_id]  # a backup in progress of an unfinished run
    assert actions[done.run_id] == "delete"
    assert actions[newest.run_id].startswith("keep: newest verified backup")

    assert _cleanup("--older-than", "7d") == 0  # a listing deletes nothing, and says what deleting would mean
    out = capsys.readouterr().out
    assert "would be deleted" in out and "A deleted backup cannot be restored" in out and done.run_id in out
    assert (backup_root(env["chroma"]) / done.run_id).exists()
    assert _cleanup("--older-than", "7d", "--yes") == 0
    kept = {p.name for p in backup_root(env["chroma"]).iterdir()}
    assert kept == {running.run_id, partial.name, failed.run_id, unverified.run_id, unreadable.run_id, newest.run_id}
    assert _cleanup("--older-than", "7d", "--yes", "--force") == 0
    assert list(backup_root(env["chroma"]).iterdir()) == []
    assert not partial.exists()


@on_local_mode  # a held folder: local mode cannot be read at all; Edge lists its shards while another holds them
def test_when_qdrant_cannot_be_read_every_migrating_run_keeps_its_backup(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    env = runbook_env
    first = _run(env, 20, migrated={"alpha_docs": ("alpha_docs", None)})
    second = _run(env, 15, migrated={"alpha_docs": ("alpha_docs", None)})
    nothing = _run(env, 12)
    _live(env, ["alpha_docs"])
    with holding_qdrant(env["qdrant"]):  # another process holding the target's lock, just the same
        actions = _actions(env)
    for run in (first, second):
        assert actions[run.run_id].startswith("keep: Qdrant could not be read"), actions
    assert actions[nothing.run_id].startswith("keep: newest verified backup")


def test_after_real_migrations_only_the_newest_live_run_is_kept(
    small_source: dict[str, Any], runbook_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    env = runbook_env
    first, result = run_step_inprocess("migrate", migrate)
    assert result.ok
    second, result = run_step_inprocess("migrate", migrate, on_existing="recreate")
    assert result.ok
    for step, hours in ((first, 2), (second, 1)):  # a real run folder and backup, dated back
        created = (NOW - timedelta(hours=hours)).isoformat(timespec="seconds")
        step.run.update_manifest(created_at=created)
        manifest_path = backup_root(env["chroma"]) / step.run.run_id / "manifest.json"
        manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "created_at": created}))
    # a newer backup whose run has finished and whose collections are not in Qdrant: the newest verified one
    third = _run(env, 0)

    assert _cleanup("--older-than", "0s", "--yes") == 0
    out = capsys.readouterr().out
    kept = {p.name for p in backup_root(env["chroma"]).iterdir()}
    assert kept == {second.run.run_id, third.run_id}, out
    assert "newest run of 'alpha_docs', 'beta_docs', 'gamma_docs', live in Qdrant" in out


# --- what syncs and rollbacks leave beside the directory ------------------------------------------------------------
def _aged(path: Path, days: int) -> Path:
    stamp = (NOW - timedelta(days=days)).timestamp()
    for p in [*path.rglob("*"), path]:
        os.utime(p, (stamp, stamp))
    return path


def test_leftovers_of_syncs_and_rollbacks_are_listed_and_removable(
    small_source: dict[str, Any], runbook_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A killed reverse sync's full-size staged copy, the directory a sync replaced, one a rollback set aside and a
    rollback export: listed with their size, deleted with --yes when old enough; the newest replaced directory stays
    unless --force, and a staged copy stays, even with --force, while a run is being driven."""
    import subprocess
    import sys

    from test_crash_safety import crash_at
    from test_rollback_live import migrate_ok, qdrant_writes

    from runbook_lib.steps.sync.engine import sync

    chroma_dir = runbook_env["chroma"]
    rid = migrate_ok()
    qdrant_writes(runbook_env["qdrant"])
    crash_at("swap:checks", "sync", run_id=rid, direction="reverse", confirm=True)  # killed before the swap
    _, done = run_step_inprocess("sync", sync, run_id=rid, direction="reverse", confirm=True)
    assert done.totals()["applied"] == 3
    staged = [p for p in chroma_dir.parent.iterdir() if ".sync-staging-" in p.name]
    replaced = [p for p in chroma_dir.parent.iterdir() if ".pre-sync-" in p.name]
    assert len(staged) == 1 and len(replaced) == 1
    old = chroma_dir.with_name(f"{chroma_dir.name}.old-20200101T000000Z")
    (old / "x").mkdir(parents=True)
    (old / "x" / "chroma.sqlite3").write_bytes(b"\0" * 4096)
    export = runbook_env["outputs"] / rid / "rollback_export"
    export.mkdir()
    (export / "alpha_docs.jsonl").write_text("{}\n")
    for path in (*staged, old, export):
        _aged(path, 10)
    _aged(replaced[0], 9)  # the newest directory a swap replaced

    assert _cleanup("--older-than", "7d") == 0
    out = capsys.readouterr().out
    for path in (*staged, *replaced, old, export):
        assert str(path) in out, out
    assert "staged copy of a reverse sync" in out and "MB" in out and "would be deleted" in out
    assert all(p.exists() for p in (*staged, *replaced, old, export))  # listing deletes nothing

    # a run being driven (its lock held by another process): its staged copy may be in use, never deleted
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); "
            "print('held', flush=True); sys.stdin.read()",
            str(runbook_env["outputs"] / rid / ".run.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert _cleanup("--older-than", "7d", "--yes", "--force") == 0
        out = capsys.readouterr().out
        assert f"run {rid} is running now" in out
        assert staged[0].exists() and export.exists() and not old.exists() and not replaced[0].exists()
    finally:
        holder.communicate("")
    assert _cleanup("--older-than", "7d", "--yes") == 0
    assert not staged[0].exists() and not export.exists()
    assert chroma_dir.is_dir()


def test_the_newest_replaced_directory_is_kept_unless_forced(runbook_env: dict[str, Path]) -> None:
    chroma_dir = runbook_env["chroma"]
    chroma_dir.mkdir(parents=True)
    older = _aged(_mkdir(chroma_dir.with_name(f"{chroma_dir.name}.pre-sync-1")), 12)
    newer = _aged(_mkdir(chroma_dir.with_name(f"{chroma_dir.name}.old-2")), 10)
    actions = {i.path: i.action for i in cleanup.plan_leftovers(chroma_dir, runbook_env["outputs"], timedelta(days=7))}
    assert actions[older] == "delete" and actions[newer].startswith("keep: the newest directory a swap replaced")
    forced = cleanup.plan_leftovers(chroma_dir, runbook_env["outputs"], timedelta(days=7), force=True)
    assert all(i.delete for i in forced)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    (path / "f").write_bytes(b"1")
    return path
