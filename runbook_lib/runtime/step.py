"""What every notebook calls first: validated parameters, settings, the run folder, progress, charts.

A notebook's second cell is ``step = begin("migrate", run_id=run_id, batch_size=batch_size, ...)``;
then ``result = step.execute(migrate)``. ``execute`` files the step's JSON result whether the work succeeds
or fails, so a run folder always says what happened.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from runbook_lib.config.params import params_model
from runbook_lib.config.settings import Settings, load_settings
from runbook_lib.errors import ConfigError, RunbookError, VerificationFailed
from runbook_lib.runtime.display import in_notebook, pyplot
from runbook_lib.state.run import Run, utc_now

log = logging.getLogger("runbook")

T = TypeVar("T")


class StepResult(Protocol):
    ok: bool

    def to_dict(self) -> dict[str, Any]: ...


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
        stb = [f"\x1b[1;31m{etype.__name__}\x1b[0m: {value}"]
        self._showtraceback(etype, value, stb)
        return stb

    shell.set_custom_exc((RunbookError,), handler)


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

    @property
    def p(self) -> Any:
        """The validated parameters (attribute access)."""
        return self.params

    def execute(self, fn: Callable[[Step], T]) -> T:
        """Run the step's work and file its JSON result, on success and on failure alike."""
        try:
            result = fn(self)
        except BaseException as exc:
            self.finish({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, status="failed")
            raise
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)  # type: ignore[call-overload]
        ok = bool(getattr(result, "ok", data.get("ok", True)))
        self.finish(data, status="ok" if ok else "failed")
        if not ok:
            raise VerificationFailed(data.get("verdict") or f"The {self.name} step found differences; see its result.")
        return result

    def finish(self, data: dict[str, Any], *, status: str) -> None:
        from runbook_lib.state.run import write_json

        duration = time.perf_counter() - self.started
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
        """Save a matplotlib figure to ``figures/<name>.png``, show it inline with alt text (``alt``, else the
        figure's titles), close it."""
        plt = pyplot()
        path = self.run.figures_dir / f"{name}.png"
        text = alt or figure_description(fig, name)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        if in_notebook():  # show the saved PNG: the same picture whatever matplotlib backend is active
            from IPython.display import Image, display

            display(Image(filename=str(path), alt=text))
        return str(path.relative_to(self.run.dir))


def figure_description(fig: Any, name: str) -> str:
    """Alt text for a chart: its title and its panels' titles (what a reader of the HTML would see first)."""
    parts = []
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and suptitle.get_text():
        parts.append(suptitle.get_text())
    parts += [ax.get_title() for ax in fig.get_axes() if ax.get_title()]
    return "; ".join(parts) or f"Chart: {name.replace('_', ' ')}"


def begin(step: str, **raw_params: Any) -> Step:
    """Validate parameters and settings, open (or create) the run folder, and record the step as running."""
    _install_clean_errors()
    # In a notebook, log lines are part of the record: plain output, not red stderr boxes.
    logging.basicConfig(
        level=logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stdout if in_notebook() else sys.stderr,
    )
    model = params_model(step)
    if model is None:
        raise ConfigError(f"Unknown step {step!r}.")
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
    settings = load_settings()
    run = Run.open_or_create(settings.outputs, getattr(params, "run_id", "") or None)
    if not getattr(params, "run_id", ""):
        params = params.model_copy(update={"run_id": run.run_id})
    run.update_manifest(settings=settings.public())
    run.update_step(step, status="running", started_at=utc_now(), parameters=params.model_dump(mode="json"))
    log.debug(
        "%s: run %s, source %s, target %s", step, run.run_id, settings.chroma.describe(), settings.qdrant.describe()
    )
    return Step(name=step, params=params, settings=settings, run=run)
