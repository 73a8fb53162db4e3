"""The parameters of each step, validated with pydantic (types and ranges) before any work starts.

The notebooks' parameters cells hold the defaults users see; these models hold the rules.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from runbook_lib.errors import ConfigError


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


def _payload_indexes(value: object) -> str:
    """``auto`` | ``none`` | comma-separated keys (a list is joined), stripped."""
    if value is None:
        return "auto"
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = ",".join(k.strip() for k in str(value).split(",") if k.strip())
    if not text:
        raise ValueError("expected auto, none, or a comma-separated list of metadata keys")
    return text


#: The payload layouts (one class each in :mod:`runbook_lib.core.layouts`) and what a null document becomes in a
#: layout that needs text.
PayloadLayoutName = Literal["runbook", "langchain", "llamaindex"]
NullDocuments = Literal["refuse", "empty"]

#: The ``payload_indexes`` parameter of the dry run and the migration.
PayloadIndexes = Annotated[str, BeforeValidator(_payload_indexes)]


class SourceReadParams(CollectionsParams):
    """How a step reads the source: ``read_concurrency`` reads in flight per collection on Chroma Cloud (its quota
    is 10; other sources ignore it); ``databases``: several databases of the tenant as one source (``all``, or
    comma-separated names; empty: ``CHROMA_DATABASE`` alone), each collection named ``<database>__<collection>``."""

    read_concurrency: int = Field(4, ge=1, le=10)
    databases: list[str] = Field(default_factory=list)

    @field_validator("databases", mode="before")
    @classmethod
    def _split_databases(cls, v: object) -> list[str]:
        names = _names(v)
        if "all" in names and len(names) > 1:
            raise ValueError("expected all, or comma-separated database names, not both")
        return names


class DryRunParams(SourceReadParams):
    batch_size: int = Field(256, ge=1, le=10_000)
    payload_layout: PayloadLayoutName = "runbook"
    null_documents: NullDocuments = "refuse"
    #: ``auto`` (every metadata key and the document's text index, within Qdrant Cloud's cap of 100), ``none``, or
    #: comma-separated metadata keys (``#document``: the document's text index)
    payload_indexes: PayloadIndexes = "auto"


class MigrateParams(SourceReadParams):
    batch_size: int = Field(256, ge=1, le=10_000)
    workers: int = Field(2, ge=1, le=32)
    #: written batches are flushed and recorded in the checkpoint at most this often (0: after every batch)
    flush_every_s: float = Field(5.0, ge=0, le=600)
    on_existing: Literal["fail", "resume", "recreate"] = "fail"
    cutover: Literal["plain", "alias"] = "plain"
    shard_number: int | None = Field(None, ge=1)
    replication_factor: int | None = Field(None, ge=1)
    write_consistency_factor: int | None = Field(None, ge=1)
    defer_indexing: bool = True
    payload_layout: PayloadLayoutName = "runbook"
    null_documents: NullDocuments = "refuse"
    payload_indexes: PayloadIndexes = "auto"

    @field_validator("shard_number", "replication_factor", "write_consistency_factor", mode="before")
    @classmethod
    def _zero_is_none(cls, v: object) -> object:
        return None if v in (0, "", None) else v


class VerifyParams(SourceReadParams):
    """Parameters of ``03_verify.ipynb``."""

    vector_check: str = "all"
    sample_queries: int = Field(20, ge=1, le=1000)
    k: int = Field(10, ge=1, le=1000)
    tolerance: float = Field(1e-6, gt=0, le=1.0)
    batch_size: int = Field(512, ge=1, le=10_000)

    @field_validator("vector_check", mode="before")
    @classmethod
    def _vector_check(cls, value: object) -> str:
        if isinstance(value, bool):
            raise ValueError("expected 'all' or a positive number of vectors to sample")
        if isinstance(value, int):
            n = value
        else:
            text = str(value).strip().lower()
            if text in ("all", ""):
                return "all"
            try:
                n = int(text)
            except ValueError:
                raise ValueError("expected 'all' or a positive number of vectors to sample") from None
        if n < 1:
            raise ValueError("expected 'all' or a positive number of vectors to sample")
        return str(n)

    @property
    def vector_sample(self) -> int | None:
        """None: compare every vector; else how many vectors per collection."""
        return None if self.vector_check == "all" else int(self.vector_check)


class MonitorParams(CollectionsParams):
    """Parameters of the monitor step (the notebook's parameters cell holds the same names)."""

    queries: int = Field(50, ge=1, le=100_000)
    warmup: int = Field(5, ge=0, le=10_000)
    k: int = Field(10, ge=1, le=1_000)
    concurrency: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    level_seconds: float = Field(3.0, gt=0, le=3_600)
    duration_s: float = Field(0.0, ge=0, le=30 * 86_400)
    interval_s: float = Field(60.0, gt=0, le=86_400)
    filter_key: str = ""
    seed: int = 42
    timeout_s: float = Field(10.0, gt=0, le=3_600)

    @field_validator("concurrency", mode="before")
    @classmethod
    def _levels(cls, v: object) -> list[int]:
        if v is None:
            return []
        if isinstance(v, int) and not isinstance(v, bool):
            items: list[object] = [v]
        elif isinstance(v, str):
            items = [x.strip() for x in v.replace(";", ",").split(",") if x.strip()]
        elif isinstance(v, list | tuple):
            items = list(v)
        else:
            raise ValueError('expected comma-separated integers such as "1,2,4,8,16"')
        levels: set[int] = set()
        for item in items:
            if isinstance(item, bool):
                raise ValueError(f"{item!r} is not a number of concurrent callers")
            try:
                level = int(str(item).strip()) if not isinstance(item, int) else item
            except ValueError:
                raise ValueError(f'{item!r} is not an integer (expected e.g. "1,2,4,8,16")') from None
            if not 1 <= level <= 1_024:
                raise ValueError(f"{level} concurrent callers is out of range (1-1024)")
            levels.add(level)
        return sorted(levels)

    @field_validator("filter_key", mode="before")
    @classmethod
    def _strip_key(cls, v: object) -> object:
        return v.strip() if isinstance(v, str) else ("" if v is None else v)


class RollbackParams(StepParams):
    """Parameters of the rollback step. ``run_id`` is required: it names the migration to undo.

    ``restore_chroma`` brings ChromaDB back (the live directory kept, or restored from the backup when it is missing
    or damaged, or when ``restore_from_backup`` asks; then Qdrant's changes since the last sync brought back);
    ``on_conflict`` decides a record changed on both sides since the last sync (``stop``: the rollback stops before
    changing anything; ``source``: ChromaDB's version stays; ``target``: Qdrant's version is written)."""

    confirm: bool = False
    restore_chroma: bool = True
    restore_from_backup: bool = False
    on_conflict: Literal["stop", "source", "target"] = "stop"
    remove_qdrant: bool = True

    @model_validator(mode="after")
    def _needs_run_id(self) -> RollbackParams:
        if not self.run_id:
            raise ConfigError(
                "A rollback undoes one migration run: pass the run id of the migration to undo "
                "(`runbook rollback --run-id ID`, or run_id in the notebook; `runbook runs` lists the runs)."
            )
        return self


class SyncParams(SourceReadParams):
    """Parameters of the sync step. ``run_id`` is required: it names the migrated run to bring up to date."""

    direction: Literal["forward", "reverse"] = "forward"
    on_conflict: Literal["stop", "source", "target"] = "stop"
    confirm: bool = False
    batch_size: int = Field(256, ge=1, le=10_000)
    full_compare: bool = False
    #: a process whose open files cannot be inspected (another user's, a container's): holding the directory or not
    uninspectable: Literal["holders", "ignore"] = "holders"

    @model_validator(mode="after")
    def _needs_run_id(self) -> SyncParams:
        if not self.run_id:
            raise ConfigError(
                "A sync brings one migrated run up to date: pass its run id (`runbook sync --run-id ID`, or run_id "
                "in the notebook; `runbook runs` lists the runs)."
            )
        return self
