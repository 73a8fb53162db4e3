"""A collection the migration creates is the run's before it exists: killed right after creating it (before the
run could note anything else), the resumed migration knows it as its own (no "collection exists" refusal, indexing
restored from the checkpoint) and ends with an exact copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from runbook_lib.config.faults import FAULT_EXIT, FAULT_VARIABLE
from runbook_lib.state.checkpoint import CHECKPOINT
from runbook_lib.state.run import Run
from runbook_lib.steps.migrate.engine import migrate

from conftest import assert_exact_copy, run_step_inprocess

TESTS = Path(__file__).parent


def test_a_crash_right_after_creating_a_collection_resumes(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    run = Run.create(runbook_env["outputs"])
    script = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
        "from conftest import run_step_inprocess\n"
        "from runbook_lib.steps.migrate.engine import migrate\n"
        f"run_step_inprocess('migrate', migrate, run_id={run.run_id!r})\n"
    )
    env = {**os.environ, FAULT_VARIABLE: "migrate:collection-created"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == FAULT_EXIT, done.stderr[-3000:]
    states = json.loads((run.state_dir / CHECKPOINT).read_text())["collections"]
    created = [name for name, st in states.items() if st.get("created_by_run")]
    assert len(created) == 1  # recorded before the crash, with the threshold to restore
    assert "indexing_restore" in states[created[0]]

    _, result = run_step_inprocess("migrate", migrate, run_id=run.run_id)
    assert result.ok, result.errors
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1120
