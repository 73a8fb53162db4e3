"""Batch-durable bulk writes into qdrant-client's local mode (:mod:`runbook_lib.qdrant.local_storage`): the storage
writes ahead during a load, a flushed batch survives a process killed mid-batch, and afterwards the storage is back
in the journal mode qdrant-client made it with. Real qdrant-client local mode, a real killed process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from runbook_lib.qdrant.local_storage import bulk_writes
from runbook_lib.steps.migrate.engine import migrate

from conftest import assert_exact_copy, run_step_inprocess


def _journal_modes(qdrant_dir: Path) -> dict[str, str]:
    out = {}
    for db in sorted(qdrant_dir.glob("collection/*/storage.sqlite")):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        out[db.parent.name] = str(con.execute("PRAGMA journal_mode").fetchone()[0])
        con.close()
    return out


def _points(n: int, start: int = 0) -> models.Batch:
    rng = np.random.default_rng(start)
    return models.Batch(
        ids=list(range(start, start + n)),
        vectors=rng.normal(size=(n, 8)).astype(np.float32).tolist(),
        payloads=[{"chroma_id": str(i)} for i in range(start, start + n)],
    )


def test_bulk_writes_write_ahead_and_leave_the_storage_as_it_was(tmp_path: Path) -> None:
    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection("bulk", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE))
    conn: Any = client._client.collections["bulk"].storage.storage  # type: ignore[union-attr]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    with bulk_writes(client, "bulk") as flush:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        client.upsert("bulk", _points(300))
        flush()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not list((tmp_path / "q").rglob("*-wal"))
    client.close()
    again = QdrantClient(path=str(tmp_path / "q"))
    assert again.count("bulk").count == 300
    again.close()


def test_a_flushed_batch_survives_a_process_killed_mid_batch(tmp_path: Path) -> None:
    path = tmp_path / "q"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from qdrant_client import QdrantClient, models
        from runbook_lib.qdrant.local_storage import bulk_writes
        from test_local_storage import _points
        client = QdrantClient(path={str(path)!r})
        client.create_collection("bulk", vectors_config=models.VectorParams(size=8, distance=models.Distance.DOT))
        with bulk_writes(client, "bulk") as flush:
            client.upsert("bulk", _points(256))
            flush()
            client.upsert("bulk", _points(100, start=256))  # committed, not flushed
            os._exit(9)  # killed: no clean-up, no close
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == 9, proc.stderr[-2000:]
    client = QdrantClient(path=str(path))  # SQLite recovers the write-ahead log on open
    assert client.count("bulk").count == 356  # a killed process loses nothing committed
    got = client.retrieve("bulk", [0, 255], with_payload=True)
    assert sorted(p.payload["chroma_id"] for p in got) == ["0", "255"]  # type: ignore[index]
    client.close()


def test_a_local_migration_leaves_every_storage_in_its_own_journal_mode(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    _, result = run_step_inprocess("migrate", migrate)
    assert result.ok
    assert set(_journal_modes(runbook_env["qdrant"]).values()) == {"delete"}
    assert not list(runbook_env["qdrant"].rglob("*-wal"))
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1120
