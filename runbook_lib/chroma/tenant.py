"""Every database of a tenant (or a list of them) as one source: ``-p databases all`` or ``-p databases a,b``.

Each (database, collection) is one collection of this source, named ``<database>__<collection>``
(:func:`qualified_name`): the name the plan gives its Qdrant collection (``cutover=plain``; ``alias`` makes it the
alias), shown by the dry run. Two pairs that would share a name are refused before anything is read
(:func:`check_names`), and so is a plan over Qdrant Cloud's cap of :data:`QDRANT_CLOUD_MAX_COLLECTIONS`
collections (:func:`check_collection_cap`). Each database is read by its own source (Chroma Cloud: the
quota-aware :class:`~runbook_lib.chroma.cloud.CloudSource`, a snapshot per collection); this one only maps names.

Forward only: a reverse sync or a rollback writes into one database at a time (run it without ``databases``,
with ``CHROMA_DATABASE`` set, on a run migrated that way).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np

from runbook_lib.chroma.base import ChromaReader, CollectionInfo, RecordBatch, SourceIdentity
from runbook_lib.chroma.clients import open_admin_client
from runbook_lib.chroma.server import read_with_retry
from runbook_lib.config.settings import ChromaSettings
from runbook_lib.core.plan import resolve_collections
from runbook_lib.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

#: Between the database and the collection in a qualified name (Qdrant allows it; Chroma names cannot start with it).
SEPARATOR = "__"
#: Qdrant Cloud's cap on collections per cluster.
QDRANT_CLOUD_MAX_COLLECTIONS = 1_000
#: What the dry run shows as the naming rule.
NAMING_RULE = f"<database>{SEPARATOR}<collection>"


def qualified_name(database: str, collection: str) -> str:
    """The name of (database, collection) in a source over several databases, and of its Qdrant collection."""
    return f"{database}{SEPARATOR}{collection}"


def check_names(pairs: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """qualified name -> (database, collection); a ConfigError names two pairs that would share a name."""
    seen: dict[str, tuple[str, str]] = {}
    for database, collection in pairs:
        name = qualified_name(database, collection)
        if name in seen and seen[name] != (database, collection):
            other = seen[name]
            raise ConfigError(
                f"Database {other[0]!r} collection {other[1]!r} and database {database!r} collection {collection!r} "
                f"would both become the Qdrant collection {name!r} (the rule is {NAMING_RULE}): leave one database "
                "out of the `databases` parameter, or rename one collection. Nothing was changed."
            )
        seen[name] = (database, collection)
    return seen


def check_collection_cap(planned: int, existing_other: int = 0) -> None:
    """Refuse a plan that would leave Qdrant Cloud with more collections than its cap."""
    total = planned + existing_other
    if total > QDRANT_CLOUD_MAX_COLLECTIONS:
        raise ConfigError(
            f"The plan makes {planned:,} Qdrant collections"
            + (f" beside the {existing_other:,} already there" if existing_other else "")
            + f": over Qdrant Cloud's cap of {QDRANT_CLOUD_MAX_COLLECTIONS:,} collections per cluster. Migrate fewer "
            "databases or collections per cluster (the `databases` and `collections` parameters)."
        )


def list_databases(settings: ChromaSettings) -> list[str]:
    """Every database of the settings' tenant, sorted (Chroma Cloud lists those the key may read)."""
    tenant = settings.tenant or "default_tenant"
    try:
        admin = open_admin_client(settings)
        found = read_with_retry(admin.list_databases, tenant=tenant)
    except Exception as exc:
        raise ConfigError(
            f"Cannot list the databases of tenant {tenant!r} ({str(exc).splitlines()[0] if str(exc) else exc}): "
            "name them in the `databases` parameter (comma-separated), and check CHROMA_TENANT."
        ) from None
    return sorted(str(d["name"]) for d in found)


class TenantSource:
    """Several databases of one tenant as one :class:`~runbook_lib.chroma.base.ChromaReader`, collections named
    ``<database>__<collection>``. Use as a context manager."""

    upgraded_on_open = False

    def __init__(self, settings: ChromaSettings, sources: Mapping[str, ChromaReader]) -> None:
        self.settings = settings
        self.sources = dict(sources)
        self._names: dict[str, tuple[str, str]] | None = None

    @classmethod
    def open(cls, settings: ChromaSettings, open_source: Callable[[ChromaSettings], ChromaReader]) -> TenantSource:
        """Open each database the settings name (``all``: every one of the tenant) with ``open_source``."""
        wanted = list(settings.databases or ())
        databases = list_databases(settings) if wanted == ["all"] else list(dict.fromkeys(wanted))
        if not databases:
            raise ConfigError(f"Tenant {settings.tenant or 'default_tenant'!r} has no database to migrate.")
        opened: dict[str, ChromaReader] = {}
        try:
            for database in databases:
                opened[database] = open_source(settings.model_copy(update={"database": database, "databases": None}))
        except BaseException:
            for source in opened.values():
                source.close()
            raise
        return cls(settings, opened)

    def __enter__(self) -> TenantSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for source in self.sources.values():
            source.close()

    # --- names ---------------------------------------------------------------------------------------------------
    def _map(self) -> dict[str, tuple[str, str]]:
        if self._names is None:
            pairs = [(db, name) for db, source in self.sources.items() for name in source.collection_names()]
            self._names = check_names(pairs)
        return self._names

    def _where(self, name: str) -> tuple[ChromaReader, str]:
        try:
            database, collection = self._map()[name]
        except KeyError:
            raise SourceError(
                f"Collection {name!r} does not exist in {self.describe()}: the collections there are "
                f"{', '.join(sorted(self._map())) or 'none'} (named {NAMING_RULE}); fix the `collections` parameter.",
                collection=name,
            ) from None
        return self.sources[database], collection

    def origin(self, name: str) -> tuple[str, str]:
        """(database, collection) of a qualified name."""
        return self._map()[name]

    def collection_names(self) -> list[str]:
        return sorted(self._map())

    def resolve_collections(self, requested: Sequence[str] | None) -> list[str]:
        return resolve_collections(self.collection_names(), requested)

    def describe(self) -> str:
        return f"{self.settings.describe()} — databases {', '.join(self.sources)} (collections named {NAMING_RULE})"

    def identity(self) -> SourceIdentity:
        first = next(iter(self.sources.values()))
        ident = first.identity()
        return SourceIdentity(ident.kind, ident.location, importlib_metadata.version("chromadb"), ident.server_version)

    def heartbeat(self) -> None:
        next(iter(self.sources.values())).heartbeat()

    def other_databases(self) -> list[dict[str, Any]]:
        tenant = self.settings.tenant or "default_tenant"
        try:
            every = list_databases(self.settings)
        except ConfigError:
            return []
        return [{"tenant": tenant, "database": d, "collections": None} for d in every if d not in self.sources]

    def read_summary(self) -> str | None:
        parts = [f"{db}: {s}" for db, s in ((db, src.read_summary()) for db, src in self.sources.items()) if s]
        return " | ".join(parts) if parts else None

    def quotas(self) -> dict[str, Any] | None:
        merged: dict[str, Any] | None = None
        for database, source in self.sources.items():
            q = source.quotas()
            if not q:
                continue
            if merged is None:
                merged = {**q, "collections": {}, "requests": 0, "throttled": 0, "retries": 0, "seconds": 0.0}
                merged["expected_requests"], merged["expected_s"] = 0, 0.0
            for key in ("requests", "throttled", "retries", "seconds", "expected_requests", "expected_s"):
                merged[key] += q[key]
            for name, c in q["collections"].items():
                merged["collections"][qualified_name(database, name)] = c
        if merged is not None:
            merged["seconds"] = round(merged["seconds"], 1)
            merged["expected_s"] = round(merged["expected_s"], 1)
            merged["naming_rule"] = NAMING_RULE
        return merged

    # --- per collection ----------------------------------------------------------------------------------------
    def snapshot_ids(self, name: str) -> list[str]:
        source, collection = self._where(name)
        return source.snapshot_ids(collection)

    def dimension(self, name: str) -> int | None:
        source, collection = self._where(name)
        return source.dimension(collection)

    def collection_id(self, name: str) -> str:
        source, collection = self._where(name)
        return source.collection_id(collection)

    def release(self) -> None:
        for source in self.sources.values():
            source.release()

    def info(self, name: str) -> CollectionInfo:
        source, collection = self._where(name)
        info = source.info(collection)
        info.name = name
        return info

    def count(self, name: str) -> int:
        source, collection = self._where(name)
        return source.count(collection)

    def space(self, name: str) -> str:
        source, collection = self._where(name)
        return source.space(collection)

    def embedding_function(self, name: str) -> dict[str, Any] | None:
        source, collection = self._where(name)
        return source.embedding_function(collection)

    def fetch(self, name: str, ids: Sequence[str], *, expected_dim: int | None = None) -> RecordBatch:
        source, collection = self._where(name)
        try:
            return source.fetch(collection, ids, expected_dim=expected_dim)
        except SourceError as exc:
            raise SourceError(f"{exc} (database {self.origin(name)[0]!r})", collection=name) from exc

    def iter_batches(
        self, name: str, batch_size: int, *, ids: Sequence[str] | None = None, expected_dim: int | None = None
    ) -> Iterator[RecordBatch]:
        source, collection = self._where(name)
        return source.iter_batches(collection, batch_size, ids=ids, expected_dim=expected_dim)

    def metadata_types(self, name: str, ids: Sequence[str], batch_size: int) -> tuple[dict[str, set[str]], int]:
        source, collection = self._where(name)
        return source.metadata_types(collection, ids, batch_size)

    def present_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        source, collection = self._where(name)
        return source.present_ids(collection, ids)

    def prepare_search(self, names: Sequence[str]) -> None:
        for name in names:
            source, collection = self._where(name)
            source.prepare_search([collection])

    def search(self, name: str, vector: Sequence[float], k: int, where: Mapping[str, Any] | None) -> list[str]:
        source, collection = self._where(name)
        return source.search(collection, vector, k, where)

    def query_ids(self, name: str, queries: np.ndarray, k: int) -> list[list[str]] | str:
        source, collection = self._where(name)
        return source.query_ids(collection, queries, k)


def refuse_write_back(settings: ChromaSettings, recorded_source: Mapping[str, Any] | None = None) -> None:
    """A reverse sync or a rollback writes into one database: refused, before anything is read or written, when the
    step reads several (``databases``) or the run migrated several (its recorded source)."""
    if settings.databases or (recorded_source or {}).get("databases"):
        raise ConfigError(
            "A reverse sync or a rollback writes into one database at a time, and this run reads several "
            "(`databases`): set CHROMA_DATABASE and migrate that database in its own run to write back into it."
        )
