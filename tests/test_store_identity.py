"""The run knows what it migrated from and to: sync (both directions), verify and rollback refuse, before writing
anything, a Qdrant or a ChromaDB that is not the run's (a mistyped path, a collection deleted or re-created by
hand, another database with the same names). Real chromadb directories, Qdrant Edge (the engine; the mistyped
local-mode path on qdrant-client's local mode, its Edge twin in the last test)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import chromadb
import pytest

from runbook_lib.errors import ConfigError, VerificationFailed
from runbook_lib.state.checkpoint import CHECKPOINT, load_checkpoint
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.rollback.engine import rollback
from runbook_lib.steps.sync.engine import sync
from runbook_lib.steps.verify.engine import verify

from conftest import _close, make_small_db, on_local_mode, open_qdrant, run_step_inprocess
from test_rollback import qdrant_state, tree_digest


def _migrate() -> str:
    step, result = run_step_inprocess("migrate", migrate)
    assert result.ok
    return step.run.run_id


def test_migrate_records_both_stores_and_each_collection_uuid(
    small_source: dict[str, Any], runbook_env: dict[str, Path], qdrant_kind: str
) -> None:
    run_id = _migrate()
    data = load_checkpoint(runbook_env["outputs"] / run_id / "state" / CHECKPOINT)
    assert data is not None
    assert data["stores"]["source"]["location"] == str(runbook_env["chroma"].resolve())
    assert data["stores"]["target"] == {"kind": qdrant_kind, "location": str(runbook_env["qdrant"].resolve())}
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    uuids = {c.name: str(c.id) for c in client.list_collections()}
    _close(client)
    assert {n: st["source_uuid"] for n, st in data["collections"].items() if "source_uuid" in st} == {
        n: uuids[n] for n in ("alpha_docs", "beta_docs", "gamma_docs", "empty_docs")
    }


@on_local_mode  # QDRANT_PATH; the Edge twin is test_the_same_checks_hold_for_qdrant_edge
def test_a_mistyped_qdrant_path_is_refused_and_never_created(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run_id = _migrate()
    before = tree_digest(runbook_env["chroma"])
    typo = tmp_path / "qdrnat"
    monkeypatch.setenv("QDRANT_PATH", str(typo))
    for params in ({}, {"direction": "reverse", "confirm": True}):
        with pytest.raises(ConfigError, match="migrated into Qdrant local") as info:
            run_step_inprocess("sync", sync, run_id=run_id, **params)
        assert info.value.exit_code == 2
    with pytest.raises(ConfigError, match="migrated into Qdrant local"):
        run_step_inprocess("verify", verify, run_id=run_id)
    assert not typo.exists() and tree_digest(runbook_env["chroma"]) == before
    # the run's storage copied elsewhere holds the run's collections and points: accepted, and said so
    moved = tmp_path / "qdrant_moved"
    shutil.copytree(runbook_env["qdrant"], moved)
    monkeypatch.setenv("QDRANT_PATH", str(moved))
    _, result = run_step_inprocess("sync", sync, run_id=run_id)
    assert result.verdict.startswith("IN SYNC") and any("used because" in w for w in result.warnings), result.warnings
    with pytest.raises(ConfigError, match="migrated into Qdrant local"):  # the rollback deletes: never elsewhere
        run_step_inprocess("rollback", rollback, run_id=run_id, confirm=True)


def test_a_qdrant_collection_deleted_or_recreated_by_hand_is_refused(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    run_id = _migrate()
    before = tree_digest(runbook_env["chroma"])
    with open_qdrant(runbook_env["qdrant"]) as target:
        target.delete_collection("gamma_docs")
    for params in ({}, {"direction": "reverse", "confirm": True}):
        with pytest.raises(ConfigError, match=r"'gamma_docs' .* does not exist"):
            run_step_inprocess("sync", sync, run_id=run_id, **params)
    with open_qdrant(runbook_env["qdrant"]) as target:
        target.create_collection("gamma_docs", size=4, distance="Dot")
    for params in ({}, {"direction": "reverse", "confirm": True}):
        with pytest.raises(ConfigError, match="holds none of the 120 points"):
            run_step_inprocess("sync", sync, run_id=run_id, **params)
    with pytest.raises(VerificationFailed, match="gamma_docs"):  # verify reports it, collection by collection
        run_step_inprocess("verify", verify, run_id=run_id)
    with pytest.raises(ConfigError, match="holds none of the 120 points"):
        run_step_inprocess("rollback", rollback, run_id=run_id, confirm=True)
    assert tree_digest(runbook_env["chroma"]) == before  # nothing came "back" from the empty collection
    assert qdrant_state(runbook_env["qdrant"])["counts"]["alpha_docs"] == 700


def test_another_chromadb_with_the_same_names_is_refused(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run_id = _migrate()
    counts = qdrant_state(runbook_env["qdrant"])["counts"]
    other = tmp_path / "other_chroma"
    make_small_db(other, seed=5)
    monkeypatch.setenv("CHROMA_PERSIST_DIR", str(other))
    with pytest.raises(ConfigError, match="migrated from ChromaDB directory"):
        run_step_inprocess("sync", sync, run_id=run_id)
    monkeypatch.setenv("CHROMA_PERSIST_DIR", str(runbook_env["chroma"]))
    # the right directory, but a collection deleted and re-created under the same name
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    client.delete_collection("beta_docs")
    client.create_collection("beta_docs", embedding_function=None)  # type: ignore[arg-type]
    _close(client)
    with pytest.raises(ConfigError, match="'beta_docs' is not the one run"):
        run_step_inprocess("sync", sync, run_id=run_id)
    client = chromadb.PersistentClient(path=str(runbook_env["chroma"]))
    client.delete_collection("beta_docs")
    _close(client)
    with pytest.raises(ConfigError, match=r"'beta_docs' that run .* no longer exists"):
        run_step_inprocess("sync", sync, run_id=run_id)
    assert qdrant_state(runbook_env["qdrant"])["counts"] == counts  # no point was deleted


def test_the_same_checks_hold_for_qdrant_edge(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from runbook_lib.config.settings import load_settings
    from runbook_lib.qdrant.connect import open_target

    monkeypatch.delenv("QDRANT_PATH", raising=False)
    monkeypatch.setenv("QDRANT_EDGE_PATH", str(tmp_path / "edge"))
    run_id = _migrate()
    _, result = run_step_inprocess("sync", sync, run_id=run_id)
    assert result.verdict.startswith("IN SYNC"), result.verdict
    monkeypatch.setenv("QDRANT_EDGE_PATH", str(tmp_path / "egde"))
    with pytest.raises(ConfigError, match=r"migrated into Qdrant edge .* which does not exist"):
        run_step_inprocess("sync", sync, run_id=run_id, direction="reverse", confirm=True)
    assert not (tmp_path / "egde").exists()
    monkeypatch.setenv("QDRANT_EDGE_PATH", str(tmp_path / "edge"))
    with open_target(load_settings().qdrant) as target:
        target.delete_collection("beta_docs")
    with pytest.raises(ConfigError, match=r"'beta_docs' that run .* does not exist"):
        run_step_inprocess("sync", sync, run_id=run_id, direction="reverse", confirm=True)
