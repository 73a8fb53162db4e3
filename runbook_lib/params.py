"""The parameters of each step, validated with pydantic (types and ranges) before any work starts.

The notebooks' parameters cells hold the defaults users see; these models hold the rules.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Params(BaseModel):
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


class _CollectionsParams(_Params):
    collections: list[str] = Field(default_factory=list)

    @field_validator("collections", mode="before")
    @classmethod
    def _split(cls, v: object) -> list[str]:
        return _names(v)


class DryRunParams(_CollectionsParams):
    batch_size: int = Field(256, ge=1, le=10_000)


class MigrateParams(_CollectionsParams):
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


class VerifyParams(_CollectionsParams):
    vector_check: str = "all"
    sample_queries: int = Field(20, ge=0, le=10_000)
    k: int = Field(10, ge=1, le=1000)
    tolerance: float = Field(1e-6, gt=0, le=1.0)
    batch_size: int = Field(512, ge=1, le=10_000)

    @field_validator("vector_check", mode="before")
    @classmethod
    def _vector_check(cls, v: object) -> str:
        text = str(v).strip().lower()
        if text == "all" or (text.isdigit() and int(text) > 0):
            return text
        raise ValueError("expected 'all' or a positive number of vectors to sample")


class MonitorParams(_CollectionsParams):
    queries: int = Field(50, ge=1, le=100_000)
    warmup: int = Field(5, ge=0, le=10_000)
    k: int = Field(10, ge=1, le=1000)
    concurrency: str = "1,2,4,8,16"
    level_seconds: float = Field(3.0, gt=0, le=3600)
    duration_s: float = Field(0.0, ge=0)
    interval_s: float = Field(60.0, gt=0)
    filter_key: str = ""

    @field_validator("concurrency", mode="before")
    @classmethod
    def _levels(cls, v: object) -> str:
        text = ",".join(str(x) for x in v) if isinstance(v, list | tuple) else str(v)
        try:
            levels = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError("expected comma-separated positive integers, e.g. 1,2,4,8") from None
        if not levels or any(n < 1 or n > 1024 for n in levels):
            raise ValueError("expected comma-separated integers between 1 and 1024")
        return ",".join(str(n) for n in levels)


class RollbackParams(_Params):
    confirm: bool = False


PARAMS: dict[str, type[_Params]] = {
    "dry-run": DryRunParams,
    "migrate": MigrateParams,
    "verify": VerifyParams,
    "monitor": MonitorParams,
    "rollback": RollbackParams,
}
