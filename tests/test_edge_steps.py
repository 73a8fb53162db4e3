"""The steps on Qdrant Edge (the engine): migrate shapes each collection (payload indexes typed from the data, the
document's text index, Chroma's HNSW parameters) before its first point, builds the HNSW index, verify proves the
copy and checks the indexes; what Edge lacks is refused before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runbook_lib.config.settings import QdrantSettings
from runbook_lib.errors import ConfigError, VerificationFailed
from runbook_lib.qdrant.connect import open_target
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.verify.engine import verify

from conftest import assert_exact_copy, run_step_inprocess


@pytest.fixture
def edge_env(small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("QDRANT_PATH", raising=False)
    path = runbook_env["qdrant"].parent / "qdrant_edge"
    monkeypatch.setenv("QDRANT_EDGE_PATH", str(path))
    return path


def test_migrate_and_verify_on_edge_with_payload_indexes(edge_env: Path, runbook_env: dict[str, Path]) -> None:
    step, result = run_step_inprocess("migrate", migrate, batch_size=128)
    assert result.ok, result.errors
    assert assert_exact_copy(runbook_env["chroma"], edge_env) == 700 + 300 + 120
    with open_target(QdrantSettings(edge_path=edge_env)) as target:
        assert target.payload_indexes("alpha_docs") == {
            "metadata.i": "integer",
            "metadata.half": "float",
            "metadata.even": "bool",
            "metadata.tag": "keyword",
            "document": "text",
        }
    _, verified = run_step_inprocess("verify", verify, run_id=step.run.run_id)
    assert verified.ok, verified.verdict
    alpha = next(c for c in verified.collections if c["collection"] == "alpha_docs")
    assert alpha["checks"]["config"]["numbers"]["payload_indexes"] == {"planned": 5, "checked": True, "problems": []}


def test_a_missing_index_fails_verify(edge_env: Path) -> None:
    step, result = run_step_inprocess("migrate", migrate, payload_indexes="tag")
    assert result.ok
    from runbook_lib.state.checkpoint import Checkpoint, checkpoint_path

    cp = Checkpoint(checkpoint_path(step.run))
    cp.data["collections"]["alpha_docs"]["payload_indexes"].append(
        {"key": "i", "path": "metadata.i", "index_type": "integer", "why": "test"}
    )
    cp.save()
    with pytest.raises(VerificationFailed, match=r"no payload index on 'metadata.i' \(planned integer\)"):
        run_step_inprocess("verify", verify, run_id=step.run.run_id)


@pytest.mark.parametrize(
    ("params", "phrase"),
    [({"cutover": "alias"}, "no collection aliases"), ({"shard_number": 2}, "no shards or replicas")],
)
def test_what_edge_lacks_is_refused_before_anything_is_written(
    edge_env: Path, runbook_env: dict[str, Path], params: dict[str, Any], phrase: str
) -> None:
    with pytest.raises(ConfigError, match=phrase):
        run_step_inprocess("migrate", migrate, **params)
    assert not edge_env.exists()
    assert not list(runbook_env["chroma"].parent.glob("*.backup"))
