"""Cutover by alias (migrate ``cutover="alias"``): switching to a new versioned collection, and back.

Each migration writes ``<name>__<run_id>`` and points the alias ``<name>`` (what the app queries) at it;
rolling a run back points the alias at the collection it pointed at before. Real ChromaDB directories
and real qdrant-client local mode, standing in for a server (Qdrant Edge has no aliases and refuses
``cutover="alias"``, ``tests/test_edge_steps.py``); every client is closed before a step runs (one per path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from runbook_lib.state.checkpoint import CHECKPOINT
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.rollback.engine import rollback

from conftest import run_step_inprocess

MIGRATED = ("alpha_docs", "beta_docs", "gamma_docs")  # empty_docs has no dimension and is skipped


@pytest.fixture
def qdrant_kind() -> str:
    """Aliases: local mode (a server's API) for every test here; Edge has none."""
    return "local"


def qdrant_view(path: Path) -> tuple[list[str], dict[str, str]]:
    client = QdrantClient(path=str(path))
    try:
        return (
            sorted(c.name for c in client.get_collections().collections),
            {a.alias_name: a.collection_name for a in client.get_aliases().aliases},
        )
    finally:
        client.close()


def alias_count(path: Path, alias: str) -> int:
    """What the app sees through the alias: the exact point count of the collection it points at."""
    client = QdrantClient(path=str(path))
    try:
        return client.count(alias, exact=True).count
    finally:
        client.close()


def migrate_alias() -> str:
    step, result = run_step_inprocess("migrate", migrate, cutover="alias")
    assert result.ok, result.errors
    return str(step.run.run_id)


def checkpoint(outputs: Path, run_id: str) -> dict[str, Any]:
    return json.loads((outputs / run_id / "state" / CHECKPOINT).read_text())  # type: ignore[no-any-return]


def versioned(run_id: str) -> dict[str, str]:
    return {name: f"{name}__{run_id}" for name in MIGRATED}


def test_alias_cutover_switches_to_each_new_run_and_back(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    qdrant, outputs = runbook_env["qdrant"], runbook_env["outputs"]

    # run 1: versioned collections, aliases created
    run1 = migrate_alias()
    collections, aliases = qdrant_view(qdrant)
    assert collections == sorted(versioned(run1).values())
    assert aliases == versioned(run1)
    assert alias_count(qdrant, "alpha_docs") == small_source["alpha_docs"]["count"]
    state1 = checkpoint(outputs, run1)["collections"]["alpha_docs"]
    assert state1["alias_previous"] is None and state1["alias_set"] is True and state1["created_by_run"] is True

    # run 2: its own versioned collections (new names, so on_existing never applies); the aliases switch
    run2 = migrate_alias()
    collections, aliases = qdrant_view(qdrant)
    assert collections == sorted([*versioned(run1).values(), *versioned(run2).values()])
    assert aliases == versioned(run2)
    state2 = checkpoint(outputs, run2)["collections"]
    for name in MIGRATED:
        assert state2[name]["alias_previous"] == f"{name}__{run1}"
        assert state2[name]["alias_set"] is True and state2[name]["created_by_run"] is True
    for name in MIGRATED:
        assert alias_count(qdrant, name) == small_source[name]["count"]

    # switching back: rolling back run 2 points every alias at run 1's collection again
    _, result = run_step_inprocess("rollback", rollback, run_id=run2, confirm=True)
    assert result.ok, result.errors
    put_back = {a.name: a.to for a in result.actions if a.op == "put back alias" and a.status == "done"}
    assert put_back == versioned(run1)
    collections, aliases = qdrant_view(qdrant)
    assert aliases == versioned(run1)
    assert collections == sorted(versioned(run1).values())  # run 2's collections are gone, run 1's untouched
    for name in MIGRATED:
        assert alias_count(qdrant, name) == small_source[name]["count"]

    # and rolling back run 1 too leaves Qdrant as it was before any migration
    _, result = run_step_inprocess("rollback", rollback, run_id=run1, confirm=True)
    assert result.ok, result.errors
    assert qdrant_view(qdrant) == ([], {})


def test_rolling_back_an_older_run_leaves_the_current_alias_alone(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    qdrant = runbook_env["qdrant"]
    run1 = migrate_alias()
    run2 = migrate_alias()

    # run 1 is no longer live: its collections go, the aliases (now run 2's) are not touched
    _, result = run_step_inprocess("rollback", rollback, run_id=run1, confirm=True)
    assert result.ok, result.errors
    left = [a for a in result.actions if a.op == "leave untouched"]
    assert {a.name for a in left} == set(MIGRATED)
    assert all("someone moved it since" in a.detail for a in left)
    assert qdrant_view(qdrant) == (sorted(versioned(run2).values()), versioned(run2))

    # rolling back run 2 now: the collections its aliases pointed at before are gone, so the aliases are deleted
    _, result = run_step_inprocess("rollback", rollback, run_id=run2, confirm=True)
    assert result.ok, result.errors
    assert sum("no longer exists" in w for w in result.warnings) == len(MIGRATED)
    assert qdrant_view(qdrant) == ([], {})


def test_rollback_twice_is_harmless(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    qdrant = runbook_env["qdrant"]
    run1 = migrate_alias()
    run2 = migrate_alias()
    for _ in range(2):
        _, result = run_step_inprocess("rollback", rollback, run_id=run2, confirm=True)
        assert result.ok, result.errors
        assert qdrant_view(qdrant) == (sorted(versioned(run1).values()), versioned(run1))
    assert not any(a.is_change and a.status == "done" for a in result.actions if a.system == "Qdrant")


@pytest.mark.parametrize("alias_existed", [False, True])
def test_plan_names_every_alias_change_before_confirm(
    small_source: dict[str, Any], runbook_env: dict[str, Path], alias_existed: bool
) -> None:
    qdrant = runbook_env["qdrant"]
    run1 = migrate_alias()
    run = migrate_alias() if alias_existed else run1
    before = qdrant_view(qdrant)

    _, plan = run_step_inprocess("rollback", rollback, run_id=run)

    assert qdrant_view(qdrant) == before
    ops = {a.name: a.op for a in plan.actions if a.name in MIGRATED}
    assert ops == dict.fromkeys(MIGRATED, "put back alias" if alias_existed else "delete alias")
