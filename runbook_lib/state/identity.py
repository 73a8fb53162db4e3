"""What a run migrated from and to, and the check every later step makes before it writes anything.

At migrate the checkpoint records ``stores`` (:func:`record_stores`): the source (a directory's resolved path, or a
server's address, tenant and database) and the target (its kind and URL or path); and per collection the Chroma
collection's UUID (``source_uuid``). Sync (both directions) and rollback then refuse, with a
:class:`~runbook_lib.errors.ConfigError` (exit 2) in one sentence, a store that is not the one the run knows (verify
refuses settings naming another store; a collection deleted or replaced there is what it reports, record by record):

* :func:`check_stores`: the settings name the run's source and target (before either is opened: a mistyped
  ``QDRANT_PATH`` is never created; a target moved or copied elsewhere is accepted once its collections prove to be
  the run's);
* :func:`check_source_collections`: each collection is still the one migrated (same UUID; a collection deleted and
  re-created, or another database with the same names, has another);
* :func:`check_target_collections`: each Qdrant collection exists with the vector size and distance the run created
  and, when the run's ledger says it holds points, still holds some of them (a sample is looked up by id through
  the ``QdrantStore`` interface): a collection deleted by hand and re-created, or half-deleted and re-created empty,
  holds none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runbook_lib.config.settings import ChromaSettings, QdrantSettings, Settings
from runbook_lib.core.mapping import point_id
from runbook_lib.errors import ConfigError
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.state.ledger import Ledger

#: How many of the points the ledger knows are looked up to prove a Qdrant collection is the run's.
WITNESSES = 256


def source_store(chroma: ChromaSettings) -> dict[str, Any]:
    """Where the source is, as the run records it (no secret)."""
    where: dict[str, Any] = {
        "tenant": chroma.tenant or "default_tenant",
        "database": chroma.database or "default_database",
    }
    if chroma.databases:  # several databases of the tenant as one source (the steps' ``databases``)
        where["databases"] = list(chroma.databases)
    if chroma.is_server:
        scheme = "https" if chroma.ssl else "http"
        return {"kind": "server", "location": f"{scheme}://{chroma.host}:{chroma.port}", **where}
    return {"kind": "directory", "location": str(chroma.persist_dir.resolve()), **where}


def target_store(qdrant: QdrantSettings) -> dict[str, Any]:
    """Where the target is, as the run records it (no secret): its kind and URL, or folder."""
    if qdrant.kind == "server":
        return {"kind": "server", "location": str(qdrant.url).rstrip("/")}
    folder = qdrant.edge_path if qdrant.kind == "edge" else qdrant.path
    assert folder is not None
    return {"kind": qdrant.kind, "location": str(folder.resolve())}


def record_stores(data: dict[str, Any], settings: Settings) -> None:
    """Record the run's source and target in the checkpoint's data (a resumed migration keeps the first record)."""
    data.setdefault("stores", {"source": source_store(settings.chroma), "target": target_store(settings.qdrant)})


def _say(store: dict[str, Any]) -> str:
    extra = ""
    if store.get("tenant") not in (None, "default_tenant") or store.get("database") not in (None, "default_database"):
        extra = f" (tenant {store.get('tenant')}, database {store.get('database')})"
    if store.get("databases"):
        extra += f" (databases {', '.join(store['databases'])})"
    return f"{store['kind']} {store['location']}{extra}"


def check_stores(
    run_id: str, data: dict[str, Any], settings: Settings, *, source: bool = True, moved_target: bool = True
) -> str | None:
    """Refuse settings that name another source or target than the run's (``source=False``: the target only).

    A target at another URL or folder is accepted (``moved_target``) when it exists: a copied or moved store, whose
    collections the caller then proves are the run's (:func:`check_target_collections`); the note returned says
    so. A folder that does not exist (a mistyped ``QDRANT_PATH`` or ``QDRANT_EDGE_PATH``) is refused, so it is
    never created."""
    stores = data.get("stores")
    if not isinstance(stores, dict):  # a run migrated before stores were recorded: nothing to compare with
        return None
    note = None
    recorded_target = stores.get("target") or {}
    now_target = target_store(settings.qdrant)
    if recorded_target and recorded_target != now_target:
        missing = now_target["kind"] != "server" and not Path(now_target["location"]).exists()
        if missing or not moved_target:
            raise ConfigError(
                f"Run {run_id} migrated into Qdrant {_say(recorded_target)} but the settings now point at "
                f"{_say(now_target)}{', which does not exist' if missing else ''}: set QDRANT_URL, QDRANT_EDGE_PATH "
                "or QDRANT_PATH as they were for that run (nothing was written)."
            )
        note = (
            f"Run {run_id} migrated into Qdrant {_say(recorded_target)}; the settings point at {_say(now_target)}, "
            "used because each of the run's collections there holds the points the run last synchronised."
        )
    recorded_source = stores.get("source") or {}
    if not source or not recorded_source:
        return note
    now_source = source_store(settings.chroma)
    backup = data.get("backup_path")
    if backup and now_source["kind"] == "directory":  # the rollback reads the run's own backup to plan a restore
        backup_data = str((Path(backup) / "data").resolve())
        if now_source["location"] == backup_data:
            now_source = {**now_source, "location": recorded_source.get("location")}
    if recorded_source != now_source:
        variable = "CHROMA_HOST, CHROMA_PORT" if recorded_source.get("kind") == "server" else "CHROMA_PERSIST_DIR"
        raise ConfigError(
            f"Run {run_id} migrated from ChromaDB {_say(recorded_source)} but the settings now point at "
            f"{_say(now_source)}: set {variable} (and CHROMA_TENANT, CHROMA_DATABASE) as they were for that run "
            "(nothing was written)."
        )
    return note


def check_source_collections(
    run_id: str, collections: Sequence[tuple[str, dict[str, Any]]], collection_id: Callable[[str], str | None]
) -> None:
    """Each collection is the one the run migrated: ``collection_id(name)`` (None: missing) equals the recorded
    ``source_uuid`` (collections migrated before UUIDs were recorded are not compared)."""
    for name, state in collections:
        recorded = state.get("source_uuid")
        if not recorded:
            continue
        now = collection_id(name)
        if now is None:
            raise ConfigError(
                f"ChromaDB collection {name!r} that run {run_id} migrated no longer exists in the source: it was "
                "deleted, or the settings point at another ChromaDB; restore it (or leave it out with the "
                "`collections` parameter) before synchronising (nothing was written)."
            )
        if now != recorded:
            raise ConfigError(
                f"ChromaDB collection {name!r} is not the one run {run_id} migrated (its UUID is {now}, the run's "
                f"was {recorded}): it was deleted and re-created, or the settings point at another ChromaDB; point "
                "them at the run's source, or migrate it again in a new run (nothing was written)."
            )


def witnesses(ledger: Ledger, name: str, limit: int = WITNESSES) -> list[str]:
    """Up to ``limit`` of the chroma ids the ledger records for a collection, spread over its sorted ids."""
    known = sorted(ledger.sequences(name))
    if len(known) <= limit:
        return known
    step = len(known) / limit
    return [known[int(k * step)] for k in range(limit)]


def check_target_collections(
    run_id: str, target: QdrantStore, ledger: Ledger, collections: Sequence[tuple[str, dict[str, Any]]]
) -> None:
    """Each Qdrant collection is the one the run wrote: it exists, with the recorded vector size and distance,
    and holds at least one of the points the ledger says it holds (when it says any)."""
    where = target.describe()
    for name, state in collections:
        tname = state["target"]
        if not target.exists(tname):
            raise ConfigError(
                f"Qdrant collection {tname!r} that run {run_id} migrated {name!r} into does not exist in {where}: "
                "the settings point at another Qdrant, or it was deleted by hand; point QDRANT_URL, "
                "QDRANT_EDGE_PATH or QDRANT_PATH at the run's Qdrant (nothing was written)."
            )
        info = target.describe_collection(tname)
        size, distance = state.get("dimension"), state.get("distance")
        if (size is not None and info.size != size) or (distance is not None and info.distance != distance):
            raise ConfigError(
                f"Qdrant collection {tname!r} in {where} holds {info.size}-d {info.distance} vectors, not the "
                f"{size}-d {distance} collection run {run_id} created: it was replaced; point the settings at the "
                "run's Qdrant (nothing was written)."
            )
        sample = witnesses(ledger, name)
        if sample and not target.retrieve(tname, [point_id(c) for c in sample], with_vectors=False):
            raise ConfigError(
                f"Qdrant collection {tname!r} in {where} holds none of the {len(sample)} points of run {run_id} "
                f"looked up (of {ledger.count(name)} it last synchronised): it was deleted and re-created, or "
                "emptied, since; it is not the collection the run wrote, so it is not synchronised (nothing was "
                "written; leave it out with the `collections` parameter, or migrate it again in a new run)."
            )
