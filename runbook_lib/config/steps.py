"""The steps, declared once: each step's name, notebook, parameter model and result type, in the order ``runbook``
lists them.

The runner, the ``runbook`` command, the kernel's :func:`~runbook_lib.kernel.step.begin` and the run folder read this
table; a step's result (``steps/<step>/result.py``) carries its own verdict and, when it failed, its exit code.
Results live in the steps layer, above this one: the table names each by its dotted path
(``module:Class``), imported only when :meth:`StepSpec.result_type` is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

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


class StepResult(Protocol):
    """What every step's result is: its verdict, and its filed JSON form."""

    ok: bool

    @property
    def verdict(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StepSpec:
    #: The step's name on the command line and in the run folder's manifest.
    name: str
    #: ``notebooks/<notebook>.ipynb``; the step's executed notebook, HTML, JSON result and log share the stem.
    notebook: str
    #: The pydantic model of its parameters (the notebook's parameters cell holds the defaults).
    params: type[StepParams]
    #: ``module:Class`` of the step's result (its ``to_dict()`` is the filed ``<notebook>.json``).
    result: str
    #: Run by ``runbook all``, in this table's order.
    in_all: bool = False

    def result_type(self) -> type[StepResult]:
        """The step's result class, imported now (the steps layer is above the configuration's)."""
        module, _, name = self.result.partition(":")
        found: type[StepResult] = getattr(importlib.import_module(module), name)
        return found


STEP_TABLE: tuple[StepSpec, ...] = (
    StepSpec("dry-run", "01_dry_run", DryRunParams, "runbook_lib.steps.dry_run.result:DryRunResult", in_all=True),
    StepSpec("migrate", "02_migrate", MigrateParams, "runbook_lib.steps.migrate.result:MigrationResult", in_all=True),
    StepSpec("verify", "03_verify", VerifyParams, "runbook_lib.steps.verify.result:VerifyResult", in_all=True),
    StepSpec("monitor", "04_monitor", MonitorParams, "runbook_lib.steps.monitor.result:MonitorResult", in_all=True),
    StepSpec("rollback", "05_rollback", RollbackParams, "runbook_lib.steps.rollback.result:RollbackResult"),
    StepSpec("sync", "06_sync", SyncParams, "runbook_lib.steps.sync.result:SyncResult"),
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
