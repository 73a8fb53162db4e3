"""Execute a step's notebook with papermill and file it as evidence under ``outputs/<run_id>/``.

The kernel is the interpreter running this code (not whatever ``python3`` kernel a machine has
registered): a private kernelspec pointing at ``sys.executable`` is put first on ``JUPYTER_PATH``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook_lib.chroma import scratch
from runbook_lib.config.paths import notebooks_dir, project_root
from runbook_lib.config.steps import step_spec
from runbook_lib.errors import ConfigError
from runbook_lib.runner.interrupt import EXIT_INTERRUPTED, Interrupt, StepInterrupted
from runbook_lib.state.run import (
    DRIVEN_RUN_ENV,
    OutputsFullError,
    Run,
    outputs_error,
    outputs_guard,
    step_stem,
    utc_now,
    write_json,
    write_text_scrubbed,
)
from runbook_lib.state.scrub import current_secrets, scrub

log = logging.getLogger("runbook.runner")

KERNEL_NAME = "python3"


@dataclass
class StepOutcome:
    step: str
    exit_code: int
    message: str
    notebook: Path | None
    html: Path | None
    log: Path | None = None


def notebook_for(step: str) -> Path:
    path = notebooks_dir() / f"{step_stem(step)}.ipynb"
    if not path.is_file():
        raise ConfigError(f"The notebook for step {step!r} is missing: expected {path}.")
    return path


def notebook_parameters(step: str) -> dict[str, dict[str, Any]]:
    """name -> {"type", "default", "help"} from the notebook's parameters cell (papermill's inspection)."""
    import papermill

    quiet = logging.getLogger("papermill")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its "Input Notebook: ..." line is noise before a run even starts
    try:
        found = papermill.inspect_notebook(str(notebook_for(step)))
    finally:
        quiet.setLevel(level)
    return {
        name: {"type": p["inferred_type_name"], "default": p["default"], "help": p["help"]} for name, p in found.items()
    }


_NOTEBOOK_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


def coerce_parameters(
    step: str, raw: dict[str, Any], *, strict: bool = True, run_id: str | None = None
) -> dict[str, Any]:
    """Check names against the notebook's parameters cell, convert CLI strings to the declared types (pydantic,
    strict about bools and ints), then validate the whole set with the step's own model -- all before a run
    folder exists, so a bad ``-p`` is one sentence and exit 2 with nothing written."""
    from pydantic import TypeAdapter, ValidationError

    from runbook_lib.kernel.step import param_error

    declared = notebook_parameters(step)
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in declared:
            if strict:
                raise ConfigError(
                    f"Unknown parameter {name!r} for step {step}: its parameters are {', '.join(declared)}."
                )
            continue
        kind = declared[name]["type"].replace("Optional[", "").rstrip("]")
        target = _NOTEBOOK_TYPES.get(kind)
        if target is None:
            out[name] = value
            continue
        try:
            out[name] = TypeAdapter(target).validate_python(value, strict=not isinstance(value, str))
        except ValidationError:
            if target is float and isinstance(value, int) and not isinstance(value, bool):
                out[name] = float(value)
                continue
            raise ConfigError(f"Parameter {name} expects {kind}, got {value!r}.") from None
    try:
        step_spec(step).params.model_validate({**out, "run_id": run_id or ""})
    except ValidationError as exc:
        raise param_error(step, exc) from None
    return out


def _kernel_dir() -> Path:
    """A JUPYTER_PATH entry whose ``python3`` kernel is this interpreter (ipykernel's own kernelspec writer)."""
    from ipykernel.kernelspec import write_kernel_spec

    root = Path(tempfile.mkdtemp(prefix="runbook-kernel-"))
    scratch.claim(root)  # a run killed with -9 leaves it behind; the next run removes it (its owner is dead)
    write_kernel_spec(
        root / "kernels" / KERNEL_NAME,
        overrides={
            "display_name": "Python 3 (runbook)",
            "metadata": {"debugger": False},
            # the kernel process's own stderr (ZMQ and kernel warnings) goes to the step's log, not the terminal
            "argv": [
                sys.executable,
                "-Xfrozen_modules=off",
                "-m",
                "runbook_lib.runner.kernel_launcher",
                "-f",
                "{connection_file}",
            ],
        },
    )
    return root


#: Loggers whose chatter (papermill's "Executing Cell 4", kernel and nbconvert notices, library warnings) goes to
#: the step's log file in the run folder instead of the terminal.
QUIET_LOGGERS = ("papermill", "traitlets", "jupyter_client", "nbclient", "nbconvert", "asyncio", "py.warnings")


def step_log_path(run: Run, step: str) -> Path:
    """``logs/NN_step.log`` in the run folder: everything the notebook's execution printed, for a failure's story."""
    folder = run.dir / "logs"
    folder.mkdir(exist_ok=True)
    return folder / f"{step_stem(step)}.log"


class _LogFile(logging.FileHandler):
    """The step's log file; a line that cannot be written (a full disk) is dropped, not printed as a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Send :data:`QUIET_LOGGERS` (and Python warnings) to ``path`` only, for the duration of the block."""
    handler = _LogFile(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = []
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, logger.level))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for logger, propagate, level in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)
        handler.close()


def _set_aside(path: Path, *, name: str | None = None) -> None:
    """Keep an earlier attempt of the same step in ``attempts/`` (as ``<stem>.<time><suffix>`` of ``name``, default
    the file's own name) instead of overwriting it."""
    if path.exists():
        stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y%m%dT%H%M%SZ")
        attempts = path.parent / "attempts"
        attempts.mkdir(exist_ok=True)
        kept = Path(name or path.name)
        shutil.move(str(path), attempts / f"{kept.stem}.{stamp}{kept.suffix}")


def export_html(notebook: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    html = notebook.with_suffix(".html")
    write_text_scrubbed(html, _with_alt_text(body, nb))  # atomic: never a truncated page under the real name
    return html


def _with_alt_text(body: str, nb: Any) -> str:
    """Give every chart in the HTML the alt text its output carries (nbconvert's template does not use it)."""
    from bs4 import BeautifulSoup

    alts = {
        output["data"]["image/png"].strip()[:256]: output["metadata"]["image/png"]["alt"]
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {}) and output.get("metadata", {}).get("image/png", {}).get("alt")
    }
    if not alts:
        return body
    soup = BeautifulSoup(body, features="html.parser")
    for img in soup.select('img[src^="data:image/png;base64,"]'):
        alt = alts.get(img["src"].split(",", 1)[1].strip()[:256])
        if alt:
            img["alt"] = alt
    return str(soup)


def scrub_run_folder(run: Run) -> list[str]:
    """Replace any secret value found in a text file of the run folder; return the files changed."""
    secrets = current_secrets()
    changed: list[str] = []
    if not secrets:
        return changed
    for path in run.dir.rglob("*"):
        if not path.is_file() or path.suffix not in (".ipynb", ".html", ".json", ".log", ".txt", ".md", ".csv"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        clean = scrub(text, secrets)
        if clean != text:
            write_text_scrubbed(path, clean)
            changed.append(str(path.relative_to(run.dir)))
    return changed


def execute_step(step: str, run: Run, parameters: dict[str, Any]) -> StepOutcome:
    """Run one step's notebook into the run folder. Never raises for a failing notebook: returns its exit code.

    Raises :class:`RunBusyError` (nothing changed) when another process drives the run, and
    :class:`OutputsFullError` when the run folder's disk is full (what was filed is intact)."""
    with run.driving():
        return _execute_step(step, run, parameters)


def _execute_step(step: str, run: Run, parameters: dict[str, Any]) -> StepOutcome:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = notebook_for(step)
    stem = step_stem(step)
    output = run.dir / f"{stem}.ipynb"
    partial = run.dir / f".{stem}.partial.ipynb"  # papermill rewrites its output often: never under the real name
    with outputs_guard(run.dir):
        _set_aside(output)
        _set_aside(output.with_suffix(".html"))
        _set_aside(run.result_path(step))  # a retry that fails early must not leave the last attempt's "ok" behind
        if partial.is_file():  # an attempt killed with -9 left its notebook as far as it ran: keep it as evidence
            _set_aside(partial, name=f"{stem}.ipynb")
        log_file = step_log_path(run, step)
    params = {**parameters, "run_id": run.run_id}
    kernel_root = _kernel_dir()
    interrupt = Interrupt(kernel_root / "kernel.pid")
    saved_env = {k: os.environ.get(k) for k in _KERNEL_ENV}
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(kernel_root), saved_env["JUPYTER_PATH"]]))
    os.environ["RUNBOOK_HEADLESS"] = "1"
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    os.environ["RUNBOOK_KERNEL_LOG"] = str(log_file)
    os.environ["RUNBOOK_KERNEL_PIDFILE"] = str(interrupt.pidfile)
    os.environ[DRIVEN_RUN_ENV] = str(run.dir.resolve())  # this process holds the run's lock for the kernel
    os.environ.setdefault("RUNBOOK_HOME", str(project_root()))
    exit_code, message = 0, "ok"
    disk_full: OutputsFullError | None = None
    started = utc_now()
    notebook = html = None
    with interrupt.installed():
        try:
            with _log_to(log_file):
                papermill.execute_notebook(
                    str(source),
                    str(partial),
                    parameters=params,
                    kernel_name=KERNEL_NAME,
                    progress_bar=False,
                    log_output=True,
                    cwd=str(notebooks_dir()),
                    on_cell_start=interrupt.stop_before_next_cell,
                )
            message = _verdict(run, step) or "ok"
        except PapermillExecutionError as exc:
            exit_code = _filed_exit_code(run, step)
            message = f"{exc.ename}: {exc.evalue}"
            if exc.ename == OutputsFullError.__name__:  # the kernel could not write the run folder, nor its result
                disk_full, message = OutputsFullError(exc.evalue), exc.evalue
        except StepInterrupted:
            pass
        except Exception as exc:  # kernel died, notebook unreadable, the outputs disk full, ...
            disk_full = outputs_error(partial, exc) if isinstance(exc, OSError) else None
            exit_code = 1
            message = str(disk_full) if disk_full else f"{type(exc).__name__}: {exc}"
        finally:
            interrupt.kill_kernel()  # normally gone already; after an interrupt or a crash it must not outlive the step
            _restore_env(saved_env)
            shutil.rmtree(kernel_root, ignore_errors=True)
        if interrupt.requested:
            exit_code, message = EXIT_INTERRUPTED, "interrupted by the user (Ctrl-C)"
        try:
            notebook, html = _file_notebook(partial, output, log_file)
            status = "interrupted" if interrupt.requested else "ok" if exit_code == 0 else "failed"
            if interrupt.requested:
                _mark_interrupted(run, step, message)
            run.update_step(
                step,
                status=status,
                exit_code=exit_code,
                notebook=notebook.name if notebook else None,
                html=html.name if html else None,
                runner_started_at=started,
                message=scrub(message, current_secrets()),
            )
            scrub_run_folder(run)
        except OutputsFullError as exc:
            disk_full = disk_full or exc
        if disk_full is not None:
            raise disk_full
    return StepOutcome(step, exit_code, scrub(message, current_secrets()), notebook, html, log_file)


_KERNEL_ENV = (
    "JUPYTER_PATH",
    "RUNBOOK_HEADLESS",
    "PYDEVD_DISABLE_FILE_VALIDATION",
    "RUNBOOK_KERNEL_LOG",
    "RUNBOOK_KERNEL_PIDFILE",
    "RUNBOOK_HOME",
    DRIVEN_RUN_ENV,
)


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _file_notebook(partial: Path, output: Path, log_file: Path) -> tuple[Path | None, Path | None]:
    """Give the executed notebook its real name once it is a whole notebook, then render its HTML. A notebook
    cut short by a full disk is removed rather than filed (a truncated file must not look like evidence)."""
    import nbformat

    if not partial.is_file():
        return None, None
    try:
        nbformat.read(partial, as_version=4)
    except Exception:  # truncated JSON: papermill's last write did not finish
        partial.unlink(missing_ok=True)
        log.warning("The executed notebook %s was incomplete and is not filed.", output.name)
        return None, None
    os.replace(partial, output)
    html = None
    try:
        with _log_to(log_file):
            html = export_html(output)
    except OutputsFullError:
        raise
    except Exception as exc:  # pragma: no cover - an HTML failure must not hide the step's result
        log.warning("HTML export of %s failed: %s", output.name, exc)
    return output, html


def _mark_interrupted(run: Run, step: str, message: str) -> None:
    """The step's JSON says ``interrupted`` whether the kernel filed it (a step that stops on its own at an
    interrupt, as monitor does, files what it measured) or never got that far."""
    try:
        data = run.read_result(step)
    except ValueError:
        data = None
    if not data:
        data = {"step": step, "run_id": run.run_id, "finished_at": utc_now(), "error": message}
    data.update(status="interrupted", ok=False)
    write_json(run.result_path(step), data)


def _filed_exit_code(run: Run, step: str) -> int:
    """The exit code the kernel filed with the step's failed result; 1 when it filed none (a cell error outside
    the step, a kernel that could not write)."""
    try:
        data = run.read_result(step)
    except ValueError:
        data = None
    code = (data or {}).get("exit_code")
    return code if isinstance(code, int) and not isinstance(code, bool) and code > 0 else 1


def _verdict(run: Run, step: str) -> str | None:
    result = run.read_result(step)
    return result.get("verdict") if result else None
