"""What every notebook calls first: validated parameters, settings, the run folder, progress, charts.

A notebook's second cell is ``step = begin("migrate", run_id=run_id, batch_size=batch_size, ...)``;
then ``result = step.execute(migrate)``. ``execute`` files the step's JSON result whether the work succeeds
or fails, so a run folder always says what happened.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from runbook_lib.config.settings import Settings, apply_params, load_settings
from runbook_lib.config.steps import STEPS, step_spec
from runbook_lib.errors import ConfigError, RunbookError, VerificationFailed
from runbook_lib.kernel.display import in_notebook, pyplot, show_figures
from runbook_lib.state.run import DRIVEN_RUN_ENV, Run, outputs_guard, utc_now, write_json

log = logging.getLogger("runbook")

T = TypeVar("T")


def _install_clean_errors() -> None:
    """In a notebook, show a RunbookError as its one-sentence message instead of a traceback.

    The cell still fails (papermill and the runner see the error), but the reader sees the sentence.
    """
    if not in_notebook():
        return
    from IPython import get_ipython

    shell = get_ipython()

    def handler(self: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> list[str]:
        # IPython discards what a custom handler returns; publish the error output ourselves so
        # papermill and the runner see the exception's name and message.
        text = str(value) or "interrupted; what the step did so far is filed with status 'interrupted'"
        stb = [f"\x1b[1;31m{etype.__name__}\x1b[0m: {text}"]
        self._showtraceback(etype, value, stb)
        return stb

    shell.set_custom_exc((RunbookError, KeyboardInterrupt), handler)


_warned: set[str] = set()


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """A library warning as one readable line, once per message (not a ``UserWarning`` block with a file path)."""
    text = str(message).strip()
    if text in _warned:
        return
    _warned.add(text)
    print(f"Warning: {text}", file=sys.stdout)


def _install_readable_warnings() -> None:
    if in_notebook():
        warnings.showwarning = _show_warning


def failure(exc: BaseException) -> dict[str, Any]:
    """What a step's filed result says about the error that stopped it: the error, and the exit code the runner
    exits with (the error's own for a :class:`RunbookError`, else 1)."""
    return {
        "ok": False,
        "error": f"{type(exc).__name__}: {exc}",
        "exit_code": exc.exit_code if isinstance(exc, RunbookError) else 1,
    }


def param_error(step: str, exc: ValidationError) -> ConfigError:
    parts = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "?"
        value = err.get("input")
        parts.append(f"parameter {name} = {value!r} is invalid ({err['msg'].lower()})")
    return ConfigError(f"The {step} step cannot start: " + "; ".join(parts) + ".")


@dataclass
class Step:
    """A running step: its name, parameters, settings and run folder."""

    name: str
    params: BaseModel
    settings: Settings
    run: Run
    started: float = field(default_factory=time.perf_counter)
    #: the charts saved so far, as (path, alt text); shown by :meth:`show_figures` after the verdict
    figures: list[tuple[Path, str]] = field(default_factory=list)
    _executing: bool = field(default=False, repr=False)
    #: what :func:`begin` did before the step's work, for the result's warnings (an interrupted directory swap
    #: finished or undone)
    notes: list[str] = field(default_factory=list)
    #: releases the run's lock taken by :func:`begin` (a notebook opened outside the runner drives the run too)
    _release: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def p(self) -> Any:
        """The validated parameters (attribute access)."""
        return self.params

    def execute(self, fn: Callable[[Step], T]) -> T:
        """Run the step's work and file its JSON result, on success and on failure alike (an interrupt, Ctrl-C
        or Jupyter's stop button, files it with status ``interrupted``); then let go of the run's lock."""
        try:
            return self._execute(fn)
        finally:
            if self._release is not None:
                self._release()
                self._release = None

    def _execute(self, fn: Callable[[Step], T]) -> T:
        self._executing = True
        try:
            result = fn(self)
        except KeyboardInterrupt:
            self.finish({"ok": False, "error": "interrupted by the user"}, status="interrupted")
            raise
        except BaseException as exc:
            self.finish(failure(exc), status="failed")
            raise
        finally:
            self._executing = False
        self._add_notes(result)
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)  # type: ignore[call-overload]
        ok = bool(getattr(result, "ok", data.get("ok", True)))
        if ok:
            self.finish(data, status="ok")
            return result
        self.finish({**data, "exit_code": VerificationFailed.exit_code}, status="failed")
        raise VerificationFailed(data.get("verdict") or f"The {self.name} step found differences; see its result.")

    def _add_notes(self, result: Any) -> None:
        """Put :attr:`notes` first among the result's warnings (a result with a ``warnings`` list)."""
        warnings_ = getattr(result, "warnings", None)
        if isinstance(warnings_, list):
            warnings_[:0] = [note for note in self.notes if note not in warnings_]

    def finish(self, data: dict[str, Any], *, status: str) -> None:
        duration = time.perf_counter() - self.started
        if self.notes:  # a failed step's result says what begin did too
            listed = data.get("warnings") if isinstance(data.get("warnings"), list) else []
            data = {**data, "warnings": [n for n in self.notes if n not in listed] + list(listed)}
        payload = {
            "step": self.name,
            "run_id": self.run.run_id,
            "status": status,
            "finished_at": utc_now(),
            "duration_s": round(duration, 3),
            "parameters": self.params.model_dump(mode="json"),
            "source": self.settings.chroma.describe(),
            "target": self.settings.qdrant.describe(),
            **data,
        }
        write_json(self.run.result_path(self.name), payload)
        self.run.update_step(self.name, status=status, ended_at=utc_now(), duration_s=round(duration, 3))

    def save_figure(self, fig: Any, name: str, alt: str | None = None) -> str:
        """Save a matplotlib figure to ``figures/<name>.png`` (atomically) with alt text (``alt``, else the
        figure's titles) and close it. Inside :meth:`execute` the chart is kept for :meth:`show_figures`, so a
        notebook shows the step's verdict first; outside it, it is shown at once."""
        plt = pyplot()
        path = self.run.figures_dir / f"{name}.png"
        text = alt or figure_description(fig, name)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
        try:
            with outputs_guard(path):
                fig.savefig(tmp, dpi=110, bbox_inches="tight")
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
            plt.close(fig)
        self.figures = [f for f in self.figures if f[0] != path] + [(path, text)]
        if not self._executing and in_notebook():
            show_figures([(path, text)])
        return str(path.relative_to(self.run.dir))

    def show_figures(self) -> None:
        """Show the charts the step saved (the notebook's cell after the verdict)."""
        show_figures(self.figures)


def figure_description(fig: Any, name: str) -> str:
    """Alt text for a chart: its title and its panels' titles (what a reader of the HTML would see first)."""
    parts = []
    if fig.get_suptitle():
        parts.append(fig.get_suptitle())
    parts += [ax.get_title() for ax in fig.get_axes() if ax.get_title()]
    return "; ".join(parts) or f"Chart: {name.replace('_', ' ')}"


def begin(step: str, **raw_params: Any) -> Step:
    """Validate parameters and settings, open (or create) the run folder, and record the step as running. Under the
    runner, an error here is filed as the step's result (with its exit code) before it is raised."""
    try:
        return _begin(step, **raw_params)
    except RunbookError as exc:
        driven = os.environ.get(DRIVEN_RUN_ENV)
        if driven and step in STEPS:  # the runner holds this run for the kernel and reads the exit code from here
            write_json(
                Path(driven) / f"{step_spec(step).notebook}.json",
                {"step": step, "status": "failed", "finished_at": utc_now(), **failure(exc)},
            )
        raise


def _begin(step: str, **raw_params: Any) -> Step:
    _install_clean_errors()
    _install_readable_warnings()
    # In a notebook, log lines are part of the record: plain output, not red stderr boxes.
    logging.basicConfig(
        level=logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stdout if in_notebook() else sys.stderr,
    )
    model = step_spec(step).params
    secret_like = [k for k in raw_params if any(s in k.lower() for s in ("api_key", "token", "password", "secret"))]
    if secret_like:
        raise ConfigError(
            f"Parameter {secret_like[0]} looks like a secret: secrets are read from the environment "
            "(QDRANT_API_KEY, CHROMA_AUTH_TOKEN), never passed as parameters."
        )
    try:
        params = model(**raw_params)
    except ValidationError as exc:
        raise param_error(step, exc) from None
    settings = apply_params(load_settings(), params)  # a step's read_concurrency: how its sources read
    run = Run.open_or_create(settings.outputs, getattr(params, "run_id", "") or None)
    release = run.hold_driving()  # one driver per run, whether it is the runner or a notebook in JupyterLab
    try:
        notes = _honour_swap(settings)
        if not getattr(params, "run_id", ""):
            params = params.model_copy(update={"run_id": run.run_id})
        run.update_manifest(settings=settings.public())
        run.update_step(step, status="running", started_at=utc_now(), parameters=params.model_dump(mode="json"))
    except BaseException:
        release()
        raise
    log.debug(
        "%s: run %s, source %s, target %s", step, run.run_id, settings.chroma.describe(), settings.qdrant.describe()
    )
    return Step(name=step, params=params, settings=settings, run=run, notes=notes, _release=release)


def _honour_swap(settings: Settings) -> list[str]:
    """Every step starts by finishing (or undoing) a swap of the ChromaDB directory that a crash interrupted, so no
    step reads, backs up or replaces a directory found missing mid-swap (``chroma.writer.honour_swap``).
    """
    from runbook_lib.chroma.writer import honour_swap  # chromadb is loaded by the steps, not by importing the kernel

    note = honour_swap(settings.chroma)
    return [note] if note else []
