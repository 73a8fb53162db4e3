"""The parameters of each step, validated with pydantic (types and ranges) before any work starts.

The notebooks' parameters cells hold the defaults users see; these models hold the rules.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str = ""

    @field_validator("run_id", mode="before")
    @classmethod
    def _none_run_id(cls, v: object) -> object:
        return "" if v is None else v


def _names(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [n.strip() for n in value.split(",") if n.strip()]
    if isinstance(value, list | tuple):
        return [str(n).strip() for n in value if str(n).strip()]
    raise ValueError("expected a comma-separated string of collection names")


class CollectionsParams(StepParams):
    collections: list[str] = Field(default_factory=list)

    @field_validator("collections", mode="before")
    @classmethod
    def _split(cls, v: object) -> list[str]:
        return _names(v)


class DryRunParams(CollectionsParams):
    batch_size: int = Field(256, ge=1, le=10_000)


class MigrateParams(CollectionsParams):
    batch_size: int = Field(256, ge=1, le=10_000)
    workers: int = Field(2, ge=1, le=32)
    on_existing: Literal["fail", "resume", "recreate"] = "fail"
    cutover: Literal["plain", "alias"] = "plain"
    shard_number: int | None = Field(None, ge=1)
    replication_factor: int | None = Field(None, ge=1)
    write_consistency_factor: int | None = Field(None, ge=1)
    defer_indexing: bool = True

    @field_validator("shard_number", "replication_factor", "write_consistency_factor", mode="before")
    @classmethod
    def _zero_is_none(cls, v: object) -> object:
        return None if v in (0, "", None) else v


PARAMS: dict[str, type[StepParams]] = {
    "dry-run": DryRunParams,
    "migrate": MigrateParams,
}

#: Steps whose parameter model lives in the step's own module (imported on first use).
_LAZY = {
    "verify": ("runbook_lib.steps.verify.engine", "VerifyParams"),
    "monitor": ("runbook_lib.steps.monitor.engine", "MonitorParams"),
    "rollback": ("runbook_lib.steps.rollback", "RollbackParams"),
}


def params_model(step: str) -> type[StepParams] | None:
    """The pydantic model validating ``step``'s parameters."""
    if step in PARAMS:
        return PARAMS[step]
    if step in _LAZY:
        import importlib

        module, name = _LAZY[step]
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    return None
