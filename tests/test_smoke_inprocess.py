from __future__ import annotations

from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from conftest import run_step_inprocess
from runbook_lib.migrate import migrate


def test_migrate_small(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    step, result = run_step_inprocess("migrate", migrate)
    assert result.ok, result.errors
    client = QdrantClient(path=str(runbook_env["qdrant"]))
    try:
        assert client.count("alpha_docs", exact=True).count == 700
    finally:
        client.close()
