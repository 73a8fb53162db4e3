"""The steps, declared once: each step's name, notebook and parameter model, in the order ``runbook`` lists them.

The runner, the ``runbook`` command, the kernel's :func:`~runbook_lib.kernel.step.begin` and the run folder read this
table; a step's result (``steps/<step>/result.py``) carries its own verdict and, when it failed, its exit code.
"""

from __future__ import annotations

from dataclasses import dataclass

from runbook_lib.config.params import (
    DryRunParams,
    MigrateParams,
    MonitorParams,
    RollbackParams,
    StepParams,
    SyncParams,
    VerifyParams,
)
from runbook_lib.errors import ConfigError


@dataclass(frozen=True)
class StepSpec:
    #: The step's name on the command line and in the run folder's manifest.
    name: str
    #: ``notebooks/<notebook>.ipynb``; the step's executed notebook, HTML, JSON result and log share the stem.
    notebook: str
    #: The pydantic model of its parameters (the notebook's parameters cell holds the defaults).
    params: type[StepParams]
    #: Run by ``runbook all``, in this table's order.
    in_all: bool = False


STEP_TABLE: tuple[StepSpec, ...] = (
    StepSpec("dry-run", "01_dry_run", DryRunParams, in_all=True),
    StepSpec("migrate", "02_migrate", MigrateParams, in_all=True),
    StepSpec("verify", "03_verify", VerifyParams, in_all=True),
    StepSpec("monitor", "04_monitor", MonitorParams, in_all=True),
    StepSpec("rollback", "05_rollback", RollbackParams),
    StepSpec("sync", "06_sync", SyncParams),
)
STEPS: dict[str, StepSpec] = {spec.name: spec for spec in STEP_TABLE}
#: What ``runbook all`` runs.
ALL_STEPS: tuple[str, ...] = tuple(spec.name for spec in STEP_TABLE if spec.in_all)


def step_spec(name: str) -> StepSpec:
    """The step called ``name``; a ConfigError naming the steps when there is none."""
    try:
        return STEPS[name]
    except KeyError:
        raise ConfigError(f"Unknown step {name!r}: the steps are {', '.join(STEPS)}.") from None
