"""Failures that leave nothing behind: Ctrl-C, a second driver of the same run, a full outputs disk.

Real `runbook` subprocesses, a real kernel and real papermill; only the full disk is simulated (an ``OSError``
with ``errno.ENOSPC`` raised by the write function), since no full disk is at hand.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from test_runner import make_big_db

from conftest import BIN, run_cli


def _only_run(outputs: Path) -> Path:
    runs = [p for p in outputs.iterdir() if (p / "manifest.json").is_file()]
    assert len(runs) == 1, runs
    return runs[0]


def _manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


@pytest.fixture
def big_source(runbook_env: dict[str, Path]) -> int:
    """Enough records that a migration takes several seconds."""
    return make_big_db(runbook_env["chroma"])


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "runbook"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )


def _wait_until_running(proc: subprocess.Popen[str], outputs: Path, step: str, timeout: float = 120) -> Path:
    """The step's notebook is executing its work: ``begin`` in the kernel has recorded the step as running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for run in outputs.glob("*/manifest.json") if outputs.is_dir() else []:
            try:
                status = json.loads(run.read_text())["steps"].get(step, {}).get("status")
            except ValueError:
                continue
            if status == "running":
                return run.parent
        time.sleep(0.2)
    raise AssertionError(f"{step} never started")


def _assert_interrupted(proc: subprocess.Popen[str], run: Path, step: str, stem: str, presses: int = 1) -> str:
    for _ in range(presses):  # a second Ctrl-C does not wait for the kernel: it ends it
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    # one line about the interrupt, and no traceback (runner, ZMQ or kernel) on the terminal
    for noise in ("Traceback", "zmq", "ZMQ", "Exception ignored", "KeyboardInterrupt", "Task was destroyed"):
        assert noise not in stderr, (noise, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-2] == f"runbook: {step} ...", stderr
    assert "interrupted" in lines[-1] and run.name in lines[-1], stderr
    # the evidence: the notebook as far as it ran, its HTML, the JSON and the manifest say "interrupted"
    nb = nbformat.read(run / f"{stem}.ipynb", as_version=4)
    assert nb.metadata["papermill"]["parameters"]["run_id"] == run.name
    assert (run / f"{stem}.html").stat().st_size > 1000
    result = json.loads((run / f"{stem}.json").read_text())
    assert result["status"] == "interrupted" and result["ok"] is False
    entry = _manifest(run)["steps"][step]
    assert entry["status"] == "interrupted" and entry["exit_code"] == 130
    assert entry["notebook"] == f"{stem}.ipynb" and entry["html"] == f"{stem}.html"
    assert not list(run.glob(".*.partial.ipynb"))
    assert "interrupted" in run_cli("runs").stdout
    return stderr


def _assert_kernels_gone() -> None:
    """The kernel the runner started does not outlive the interrupted step (found by its environment)."""
    mine = f"QDRANT_EDGE_PATH={os.environ['QDRANT_EDGE_PATH']}".encode()
    deadline = time.monotonic() + 20
    alive: list[int] = []
    while time.monotonic() < deadline:
        alive = []
        for proc in Path("/proc").iterdir():
            try:
                if b"kernel_launcher" in (proc / "cmdline").read_bytes() and mine in (proc / "environ").read_bytes():
                    alive.append(int(proc.name))
            except (OSError, ValueError):
                continue
        if not alive:
            return
        time.sleep(0.5)
    raise AssertionError(f"kernel processes still running: {alive}")


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_migrate_files_the_step_as_interrupted(
    big_source: int, runbook_env: dict[str, Path], presses: int
) -> None:
    proc = _start("migrate", "-p", "batch_size", "128")
    run = _wait_until_running(proc, runbook_env["outputs"], "migrate")
    time.sleep(2)  # inside step.execute(migrate): backing up or copying
    _assert_interrupted(proc, run, "migrate", "02_migrate", presses)
    if presses == 1:  # the running cell stopped the way Jupyter's stop button stops it, and says so
        nb = nbformat.read(run / "02_migrate.ipynb", as_version=4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert [e["ename"] for e in errors] == ["KeyboardInterrupt"]
    _assert_kernels_gone()


def test_ctrl_c_during_monitor_watch_keeps_what_was_measured(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    migrated = run_cli("migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    run = _only_run(runbook_env["outputs"])
    proc = _start(
        "monitor", "--run-id", run.name, "-p", "duration_s", "60", "-p", "interval_s", "1", "-p", "concurrency", ""
    )
    _wait_until_running(proc, runbook_env["outputs"], "monitor")
    time.sleep(3)
    _assert_interrupted(proc, run, "monitor", "04_monitor")
    result = json.loads((run / "04_monitor.json").read_text())
    assert result["interrupted"]  # the monitor stopped on its own and filed what it measured
    assert _manifest(run)["steps"]["migrate"]["status"] == "ok"  # the earlier step's record is untouched


def test_interrupting_step_execute_in_a_notebook_files_interrupted(small_source: dict[str, Any]) -> None:
    """Jupyter's stop button raises KeyboardInterrupt inside ``step.execute``: the result is filed, not lost."""
    from runbook_lib.kernel.step import begin

    step = begin("dry-run")

    def stopped(_: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        step.execute(stopped)
    result = json.loads(step.run.result_path("dry-run").read_text())
    assert result["status"] == "interrupted" and result["ok"] is False
    assert _manifest(step.run.dir)["steps"]["dry-run"]["status"] == "interrupted"


# --- one run, one driver ----------------------------------------------------------------------------
def test_a_second_driver_of_the_same_run_is_refused_and_marks_nothing(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    from runbook_lib.state.run import Run

    run = Run.create(runbook_env["outputs"])
    before = (run.dir / "manifest.json").read_bytes()
    with run.driving():  # another process is running a step of this run
        done = run_cli("verify", "--run-id", run.run_id)
        again = run_cli("all", "--run-id", run.run_id)
    for refused in (done, again):
        assert refused.returncode == 2, refused.stderr
        assert "Traceback" not in refused.stderr
        errors = [line for line in refused.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and run.run_id in errors[0] and "another process" in errors[0], refused.stderr
    # nothing was marked: no step in the manifest, no result, nothing set aside
    assert (run.dir / "manifest.json").read_bytes() == before
    assert not list(run.dir.glob("0*")) and not (run.dir / "attempts").exists()
    # once the lock is free, the same run can be driven again (the lock is re-entrant within a process)
    with run.driving(), run.driving():
        pass


def test_a_notebook_opened_outside_the_runner_holds_the_run_too(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    """A step begun in a notebook kernel (JupyterLab, no runner) holds the run from ``begin`` to the end of
    ``execute``: the runner refuses the run meanwhile, and another notebook's ``begin`` too, before marking
    anything; afterwards the run is free again."""
    import subprocess
    import sys
    import textwrap

    from runbook_lib.kernel.step import begin
    from runbook_lib.steps.dry_run.engine import dry_run

    first = begin("dry-run")  # this process plays the notebook in JupyterLab
    run_id = first.run.run_id
    refused = run_cli("verify", "--run-id", run_id)
    assert refused.returncode == 2 and "another process" in refused.stderr, refused.stderr[-2000:]
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            from runbook_lib.kernel.step import begin
            begin("verify", run_id={run_id!r})
        """),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert other.returncode != 0 and "RunBusyError" in other.stderr and "another process" in other.stderr
    assert "verify" not in _manifest(first.run.dir)["steps"]  # the refused begin recorded nothing
    first = begin("dry-run", run_id=run_id)  # the notebook's first cell run again: same process, held once
    first.execute(dry_run)  # the step ends: the run is free for the runner
    freed = run_cli("dry-run", "--run-id", run_id)
    assert freed.returncode == 0, freed.stderr[-2000:]


# --- a full outputs disk ------------------------------------------------------------------------------
def _disk_full(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


def _assert_one_sentence(code: int, err: str, folder: Path) -> None:
    assert code in (1, 2), err
    assert "Traceback" not in err and "Errno" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("runbook: error:")]
    assert len(errors) == 1, err
    assert str(folder) in errors[0] and "RUNBOOK_OUTPUTS" in errors[0] and "no space left" in errors[0], err


def _assert_nothing_truncated(outputs: Path) -> None:
    for path in outputs.rglob("*"):
        if path.suffix == ".json":
            assert path.stat().st_size > 0 and json.loads(path.read_text()), path
        if path.suffix == ".ipynb":
            nbformat.read(path, as_version=4)  # a whole notebook, or no file at all
        assert not path.name.endswith(".tmp"), path


def test_full_disk_when_a_result_is_written(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook_lib.state import run as state_run
    from runbook_lib.state.run import OutputsFullError, Run, write_json

    run = Run.create(runbook_env["outputs"])
    good = run.result_path("verify")
    write_json(good, {"status": "ok"})

    def half_then_full(path: Any, *args: Any, **kwargs: Any) -> Any:
        fh = open(path, *args, **kwargs)  # noqa: SIM115 - the file the write goes to, cut short below
        real_write = fh.write

        def write(text: str) -> int:
            real_write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        fh.write = write
        return fh

    monkeypatch.setattr(state_run, "open", half_then_full, raising=False)
    with pytest.raises(OutputsFullError) as caught:
        write_json(good, {"status": "failed", "much": "x" * 10_000})
    assert str(run.dir) in str(caught.value) and "RUNBOOK_OUTPUTS" in str(caught.value)
    assert json.loads(good.read_text()) == {"status": "ok"}  # the earlier file is intact
    assert sorted(p.name for p in run.dir.iterdir() if p.name.endswith(".tmp")) == []

    # a new run folder on a full disk: one sentence from the command, nothing that looks like a run
    from runbook_lib import cli

    code = cli.main(["dry-run"])
    _assert_nothing_truncated(runbook_env["outputs"])
    assert code in (1, 2)


def test_full_disk_while_papermill_writes_the_notebook(
    small_source: dict[str, Any],
    runbook_env: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """papermill rewrites the executed notebook after every cell; the disk fills up part-way through."""
    from papermill.iorw import LocalHandler

    from runbook_lib import cli

    real_write = LocalHandler.write
    writes = {"n": 0}

    def write(self: Any, buf: str, path: str) -> Any:
        writes["n"] += 1
        if writes["n"] <= 4:
            return real_write(self, buf, path)
        Path(path).write_text(buf[: len(buf) // 3])  # what a full disk leaves: the start of the file
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(LocalHandler, "write", write)
    code = cli.main(["dry-run"])
    err = capsys.readouterr().err
    run = _only_run(runbook_env["outputs"])
    assert writes["n"] > 4
    _assert_one_sentence(code, err, run)
    _assert_nothing_truncated(runbook_env["outputs"])
    assert not (run / "01_dry_run.ipynb").exists() and not list(run.glob(".*.partial.ipynb"))
    assert _manifest(run)["steps"]["dry-run"]["status"] == "failed"


def test_full_disk_when_the_run_folder_is_created(
    small_source: dict[str, Any],
    runbook_env: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from runbook_lib import cli
    from runbook_lib.state import run as state_run

    monkeypatch.setattr(state_run, "open", _disk_full, raising=False)
    code = cli.main(["dry-run"])
    err = capsys.readouterr().err
    _assert_one_sentence(code, err, _only_run_dir(runbook_env["outputs"]))
    _assert_nothing_truncated(runbook_env["outputs"])


def _only_run_dir(outputs: Path) -> Path:
    runs = [p for p in outputs.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_full_disk_inside_the_kernel(
    small_source: dict[str, Any], runbook_env: dict[str, Path], tmp_path: Path
) -> None:
    """The step's own result write (in the kernel) meets a full disk: one sentence, exit 1, nothing truncated."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import builtins, errno, os\n"
        "_open = builtins.open\n"
        "def _full(file, *args, **kwargs):\n"
        "    if '01_dry_run.json' in os.fspath(file) if isinstance(file, (str, os.PathLike)) else False:\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device', os.fspath(file))\n"
        "    return _open(file, *args, **kwargs)\n"
        "builtins.open = _full\n"
    )
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    done = run_cli("dry-run", env={"PYTHONPATH": path})
    run = _only_run(runbook_env["outputs"])
    _assert_one_sentence(done.returncode, done.stderr, run)
    _assert_nothing_truncated(runbook_env["outputs"])
    assert not (run / "01_dry_run.json").exists()
    nb = nbformat.read(run / "01_dry_run.ipynb", as_version=4)  # the failed notebook is filed, whole
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[-1]["ename"] == "OutputsFullError"
    assert _manifest(run)["steps"]["dry-run"]["status"] == "failed"
