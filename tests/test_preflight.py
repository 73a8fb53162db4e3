"""Exit 2 means nothing changed: every check the migration can make runs before the backup and the first write."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest

from runbook_lib.chroma.backup import backup_root
from runbook_lib.errors import ConfigError, RunbookError
from runbook_lib.state.checkpoint import CHECKPOINT
from runbook_lib.steps.dry_run.engine import dry_run
from runbook_lib.steps.migrate import engine as migrate_engine
from runbook_lib.steps.migrate.engine import migrate

from conftest import _close, open_qdrant, run_step_inprocess

URL = "https://x/doc1"
HASHED = str(uuid.uuid5(uuid.NAMESPACE_URL, URL))


def _colliding_db(path: Path) -> None:
    client = chromadb.PersistentClient(path=str(path))
    rng = np.random.default_rng(1)
    first = client.create_collection("aaa_clean", metadata={"hnsw:space": "l2"}, embedding_function=None)
    first.add(ids=[f"c{i}" for i in range(10)], embeddings=rng.normal(size=(10, 4)).tolist())
    col = client.create_collection("web_pages", metadata={"hnsw:space": "l2"}, embedding_function=None)
    col.add(ids=[URL, HASHED, "plain"], embeddings=rng.normal(size=(3, 4)).tolist())
    _close(client)


def _qdrant_state(path: Path) -> dict[str, Any]:
    """Every collection with its point count and payloads (what "nothing changed" compares)."""
    if not path.exists():
        return {}
    with open_qdrant(path) as store:
        state: dict[str, Any] = {}
        for name in store.collection_names():
            records, _ = store.scroll(name, limit=1000, with_payload=True, with_vectors=False)
            state[name] = sorted((str(r.id), json.dumps(r.payload, sort_keys=True)) for r in records)
        return state


def _no_backup(runbook_env: dict[str, Path]) -> bool:
    root = backup_root(runbook_env["chroma"])
    return not root.exists() or not any(root.iterdir())


def test_id_collision_refused_before_backup_and_writes(runbook_env: dict[str, Path]) -> None:
    _colliding_db(runbook_env["chroma"])
    with pytest.raises(ConfigError) as info:
        run_step_inprocess("migrate", migrate)
    text = str(info.value)
    assert URL in text and HASHED in text and "web_pages" in text
    assert info.value.exit_code == 2
    assert _no_backup(runbook_env)
    assert _qdrant_state(runbook_env["qdrant"]) == {}  # not even the clean first collection


def test_dry_run_reports_id_collisions(runbook_env: dict[str, Path]) -> None:
    _colliding_db(runbook_env["chroma"])
    _, result = run_step_inprocess("dry-run", dry_run)
    assert list(result.id_collisions) == ["web_pages"]
    assert [set(pair) for pair in result.id_collisions["web_pages"]] == [{URL, HASHED}]
    assert any(URL in w and HASHED in w for w in result.warnings)
    assert "would refuse" in result.verdict and "web_pages" in result.verdict
    assert result.to_dict()["id_collisions"] == result.id_collisions


def test_unknown_collection_changes_nothing(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"'does_not_exist' does not exist.*alpha_docs.*beta_docs") as info:
        run_step_inprocess("migrate", migrate, collections="alpha_docs,does_not_exist")
    assert info.value.exit_code == 2
    assert _no_backup(runbook_env)
    assert _qdrant_state(runbook_env["qdrant"]) == {}


def test_foreign_collection_at_second_collection_changes_nothing(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    with open_qdrant(runbook_env["qdrant"]) as store:
        store.create_collection("beta_docs", size=8, distance="Dot")
        store.upsert("beta_docs", [str(uuid.UUID(int=1))], [[0.0] * 8], [{"stale": True}])
    before = _qdrant_state(runbook_env["qdrant"])
    with pytest.raises(ConfigError, match=r"beta_docs.*on_existing=resume") as info:
        run_step_inprocess("migrate", migrate, collections="alpha_docs,beta_docs")
    assert info.value.exit_code == 2
    assert _no_backup(runbook_env)
    assert _qdrant_state(runbook_env["qdrant"]) == before  # alpha_docs was not created, beta_docs untouched


def test_plan_is_recorded_before_the_copy_loop(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    def killed(*args: Any, **kwargs: Any) -> None:
        found = list(runbook_env["outputs"].glob(f"*/state/{CHECKPOINT}"))
        seen.append(json.loads(found[0].read_text()))
        raise KeyboardInterrupt  # the run dies during the first collection's copy

    monkeypatch.setattr(migrate_engine, "copy_collection", killed)
    with pytest.raises(KeyboardInterrupt):
        run_step_inprocess("migrate", migrate, collections="gamma_docs,alpha_docs")
    assert seen and seen[0]["planned"] == ["gamma_docs", "alpha_docs"]
    # what a later verify reads from disk after the kill
    found = list(runbook_env["outputs"].glob(f"*/state/{CHECKPOINT}"))
    assert json.loads(found[0].read_text())["planned"] == ["gamma_docs", "alpha_docs"]


def test_plan_is_recorded_after_a_run(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    step, result = run_step_inprocess("migrate", migrate)
    assert result.ok
    state = json.loads((step.run.state_dir / CHECKPOINT).read_text())
    assert state["planned"] == ["alpha_docs", "beta_docs", "empty_docs", "gamma_docs"]
    assert set(state["planned"]) == set(state["collections"])


def test_the_catalog_reads_names_and_ids_without_touching_the_directory(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    """The checks before the backup read SQLite in read-only mode: same names and ids as chromadb, no copy, no
    byte or timestamp of the live directory changed."""
    import os

    from runbook_lib.chroma.catalog import Catalog
    from runbook_lib.chroma.source import ChromaSource
    from runbook_lib.config.settings import load_settings

    chroma = runbook_env["chroma"]
    stamps = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in chroma.rglob("*") if p.is_file()}
    with Catalog(chroma) as catalog:
        names = catalog.collection_names()
        ids = {n: catalog.snapshot_ids(n) for n in names}
        dims = {n: catalog.dimension(n) for n in names}
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in chroma.rglob("*") if p.is_file()} == stamps
    assert sorted(os.listdir(chroma)) == sorted(p.name for p in chroma.iterdir())  # no journal file appeared
    with ChromaSource.open(load_settings().chroma) as source:
        assert names == source.collection_names()
        assert ids == {n: source.snapshot_ids(n) for n in names}
        assert {n: dims[n] for n in names if ids[n]} == {n: source.dimension(n) for n in names if ids[n]}


def test_a_problem_found_on_the_backup_removes_the_backup(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    """on_existing=resume onto a Qdrant collection of another distance is only seen once the distance is read (from
    the backup): the run stops with exit 2 and leaves no backup behind."""
    with open_qdrant(runbook_env["qdrant"]) as store:
        store.create_collection("beta_docs", size=8, distance="Dot")
    with pytest.raises(RunbookError) as info:
        run_step_inprocess("migrate", migrate, on_existing="resume")
    assert "distance" in str(info.value)
    root = backup_root(runbook_env["chroma"])
    assert not root.exists() or not list(root.iterdir())
