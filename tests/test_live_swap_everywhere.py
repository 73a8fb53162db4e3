"""Every step, and ``runbook cleanup``, starts by finishing a directory swap that a crash interrupted: a dry run or
monitor after a reverse sync killed between the two renames finds CHROMA_PERSIST_DIR in place (never "missing"),
and says so in its filed result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_cleanup import _cleanup
from test_crash_safety import crash_at
from test_rollback_live import migrate_ok, qdrant_writes

from runbook_lib.chroma.writer import intent_path
from runbook_lib.steps.dry_run.engine import dry_run

from conftest import assert_exact_copy, run_step_inprocess


def _swap_interrupted(env: dict[str, Path]) -> str:
    rid = migrate_ok()
    qdrant_writes(env["qdrant"])
    crash_at("swap:second-rename", "sync", run_id=rid, direction="reverse", confirm=True)
    assert not env["chroma"].exists() and intent_path(env["chroma"]).is_file()  # CHROMA_PERSIST_DIR is missing
    return rid


def test_a_dry_run_finishes_an_interrupted_swap_first(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    _swap_interrupted(runbook_env)
    step, result = run_step_inprocess("dry-run", dry_run)
    assert runbook_env["chroma"].is_dir() and not intent_path(runbook_env["chroma"]).exists()
    assert any("interrupted swap" in w and "finished" in w for w in result.warnings), result.warnings
    filed = json.loads(step.run.result_path("dry-run").read_text())
    assert any("interrupted swap" in w for w in filed["warnings"]), filed
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1120  # Qdrant's writes are in ChromaDB


def test_cleanup_finishes_an_interrupted_swap_first(
    small_source: dict[str, Any], runbook_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _swap_interrupted(runbook_env)
    assert _cleanup() == 0
    assert "interrupted swap" in capsys.readouterr().out
    assert runbook_env["chroma"].is_dir() and not intent_path(runbook_env["chroma"]).exists()


def test_a_swap_another_live_process_is_doing_is_left_alone(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    """The record names a process still running on this machine (here: pid 1 as it is now): no step touches it."""
    from runbook_lib.chroma.writer import _process_started, recover_swap
    from runbook_lib.errors import ConfigError

    chroma_dir = runbook_env["chroma"]
    staged = chroma_dir.with_name("chroma_db.sync-staging-x")
    staged.mkdir()
    import socket

    record = {
        "live": str(chroma_dir),
        "staged": str(staged),
        "previous": None,
        "pid": 1,
        "host": socket.gethostname(),
        "process_started": _process_started(1),
    }
    intent_path(chroma_dir).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"is swapping .* right now"):
        recover_swap(chroma_dir)
    assert staged.is_dir() and intent_path(chroma_dir).is_file()
