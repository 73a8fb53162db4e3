"""The evidence folder ``outputs/<run_id>/`` (SPEC "Evidence").

A run folder holds the executed notebooks, their HTML, one JSON result per step, ``figures/*.png``
and ``manifest.json``. New run ids are never reused, so one run never overwrites another; secrets
are scrubbed from everything written here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import re
import secrets as _secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python

from runbook_lib.config.paths import project_root
from runbook_lib.config.steps import step_spec
from runbook_lib.errors import ConfigError, OutputsFullError, RunBusyError
from runbook_lib.state.scrub import current_secrets, scrub

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MANIFEST = "manifest.json"
_PACKAGES = ("runbook-lib", "chromadb", "qdrant-client", "papermill", "nbconvert", "numpy", "pandas", "matplotlib")


#: errno values that mean "the outputs disk has no room" (full disk, exhausted quota).
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def outputs_error(path: Path, exc: OSError) -> OutputsFullError | None:
    """The one sentence for a write into the outputs that failed for lack of space (``None`` for other errors)."""
    if exc.errno not in _DISK_FULL:
        return None
    folder = path if path.is_dir() else path.parent
    return OutputsFullError(
        f"Cannot write the run folder {folder}: no space left on its disk; free some space or set RUNBOOK_OUTPUTS "
        "to a disk with room, then run the step again.",
        path=str(path),
    )


@contextlib.contextmanager
def outputs_guard(path: Path) -> Iterator[None]:
    """Turn a full-disk ``OSError`` raised while writing ``path`` into :class:`OutputsFullError`."""
    try:
        yield
    except OSError as exc:
        error = outputs_error(path, exc)
        if error is None:
            raise
        raise error from None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + _secrets.token_hex(2)


def step_stem(step: str) -> str:
    """The file stem the step's notebook, HTML, JSON result and log share (:data:`runbook_lib.config.steps.STEPS`)."""
    return step_spec(step).notebook


def to_jsonable(value: Any) -> Any:
    """Results as plain JSON values: numpy scalars and arrays, paths and sets converted by pydantic-core;
    NaN and infinities become null (JSON has no such numbers)."""
    return to_jsonable_python(value, inf_nan_mode="null", fallback=_fallback)


def _fallback(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def write_text_scrubbed(path: Path, text: str) -> None:
    """Write ``text`` without secrets, atomically: a temporary file, flushed to disk, then renamed over ``path``,
    so a full disk or a kill never leaves a truncated file that looks valid."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with outputs_guard(path):
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(scrub(text, current_secrets()))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_text_scrubbed(path, json.dumps(to_jsonable(data), indent=2, sort_keys=False, ensure_ascii=False))


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclass(frozen=True)
class Run:
    """One run folder."""

    run_id: str
    dir: Path

    # --- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, outputs: Path) -> Run:
        with outputs_guard(outputs):
            outputs.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            run_id = new_run_id()
            try:
                with outputs_guard(outputs):
                    (outputs / run_id).mkdir()
            except FileExistsError:
                continue
            run = cls(run_id, outputs / run_id)
            run._write_manifest(
                {
                    "run_id": run_id,
                    "created_at": utc_now(),
                    "git_commit": git_commit(),
                    "packages": package_versions(),
                    "python_executable": sys.executable,
                    "host": platform.node(),
                    "settings": {},
                    "steps": {},
                }
            )
            return run
        raise ConfigError(f"Could not create a new run folder under {outputs}.")  # pragma: no cover

    @classmethod
    def open(cls, outputs: Path, run_id: str) -> Run:
        if not RUN_ID_PATTERN.match(run_id):
            raise ConfigError(f"Run id {run_id!r} is not valid: use letters, digits, '.', '_' and '-' only.")
        path = outputs / run_id
        if not (path / MANIFEST).is_file():
            known = sorted(p.name for p in outputs.iterdir() if (p / MANIFEST).is_file()) if outputs.is_dir() else []
            hint = f" (runs there: {', '.join(known[-5:])})" if known else ""
            raise ConfigError(
                f"There is no run {run_id!r} under {outputs}{hint}: leave run_id empty to start a new run, "
                "or check RUNBOOK_OUTPUTS."
            )
        return cls(run_id, path)

    @classmethod
    def open_or_create(cls, outputs: Path, run_id: str | None) -> Run:
        return cls.open(outputs, run_id) if run_id else cls.create(outputs)

    # --- layout --------------------------------------------------------------------------------
    @property
    def figures_dir(self) -> Path:
        path = self.dir / "figures"
        path.mkdir(exist_ok=True)
        return path

    @property
    def state_dir(self) -> Path:
        path = self.dir / "state"
        path.mkdir(exist_ok=True)
        return path

    def result_path(self, step: str) -> Path:
        return self.dir / f"{step_stem(step)}.json"

    def read_result(self, step: str) -> dict[str, Any] | None:
        path = self.result_path(step)
        return json.loads(path.read_text()) if path.is_file() else None

    # --- one driver at a time ---------------------------------------------------------------------
    @contextlib.contextmanager
    def driving(self) -> Iterator[None]:
        """Hold the run's lock (``.run.lock``) while a process drives one of its steps; re-entrant in a process.

        Taken without waiting: a second process driving the same run gets :class:`RunBusyError` before it
        changes anything (no manifest entry, no result set aside)."""
        from filelock import FileLock, Timeout

        key = str(self.dir.resolve())
        lock = _DRIVING.get(key)
        if lock is None:
            lock = _DRIVING[key] = FileLock(self.dir / ".run.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunBusyError(
                f"Run {self.run_id} is being driven by another process right now (its lock {self.dir / '.run.lock'} "
                "is held by a `runbook` command, or by a notebook kernel whose step has begun): wait for that step to "
                "finish (or shut that notebook's kernel down), or start a new run without --run-id.",
                run_id=self.run_id,
            ) from None
        try:
            yield
        finally:
            lock.release()

    def hold_driving(self) -> Callable[[], None]:
        """Take the run's lock for a step driven from a notebook (begin .. end of execute) and return what releases
        it; a no-op when the runner that started this kernel already holds it (``RUNBOOK_DRIVEN_RUN``)."""
        key = str(self.dir.resolve())
        if os.environ.get(DRIVEN_RUN_ENV) == key:
            return _nothing
        if key not in _HELD_BY_STEP:  # a cell with ``begin`` run twice holds it once
            with self.driving():  # RunBusyError here: nothing was recorded yet
                _DRIVING[key].acquire(timeout=0)  # held past this block, until the step ends
            _HELD_BY_STEP.add(key)

        def release() -> None:
            if key in _HELD_BY_STEP:
                _HELD_BY_STEP.discard(key)
                _DRIVING[key].release()

        return release

    # --- manifest ------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.dir / MANIFEST).read_text())

    def _write_manifest(self, data: dict[str, Any]) -> None:
        write_json(self.dir / MANIFEST, data)

    def _manifest_lock(self) -> Any:
        """Held around every read-modify-write of the manifest: the runner and the kernel both update it."""
        from filelock import FileLock  # the runbook layer's; imported here so `runbook` can say it is missing

        return FileLock(self.dir / f".{MANIFEST}.lock", timeout=60)

    def update_manifest(self, **fields: Any) -> None:
        with self._manifest_lock():
            data = self.manifest()
            data.update(fields)
            self._write_manifest(data)

    def update_step(self, step: str, **fields: Any) -> None:
        with self._manifest_lock():
            data = self.manifest()
            entry = data.setdefault("steps", {}).setdefault(step, {})
            entry.update(to_jsonable(fields))
            self._write_manifest(data)


_DRIVING: dict[str, Any] = {}
#: Set by the runner for the kernel it starts: the run folder whose lock the runner already holds for it.
DRIVEN_RUN_ENV = "RUNBOOK_DRIVEN_RUN"
#: Runs whose lock a step begun in this process holds (released when that step's ``execute`` ends).
_HELD_BY_STEP: set[str] = set()


def _nothing() -> None:
    return None


def list_runs(outputs: Path) -> list[dict[str, Any]]:
    """Every run under ``outputs`` with its overall status (newest first)."""
    runs: list[dict[str, Any]] = []
    if not outputs.is_dir():
        return runs
    for path in sorted(outputs.iterdir(), reverse=True):
        manifest = path / MANIFEST
        if not manifest.is_file():
            continue
        try:
            data = json.loads(manifest.read_text())
        except ValueError:
            runs.append({"run_id": path.name, "status": "unreadable manifest", "steps": ""})
            continue
        steps = data.get("steps", {})
        statuses = [s.get("status", "?") for s in steps.values()]
        if not statuses:
            status = "empty"
        elif "failed" in statuses:
            status = "failed"
        elif "interrupted" in statuses:
            status = "interrupted"
        elif "running" in statuses:
            status = "incomplete"
        else:
            status = "ok"
        runs.append(
            {
                "run_id": data.get("run_id", path.name),
                "created_at": data.get("created_at"),
                "status": status,
                "steps": ", ".join(f"{k}:{v.get('status', '?')}" for k, v in steps.items()),
            }
        )
    return runs
