"""Migration on real ChromaDB and real Qdrant (Edge, the engine): exact content, idempotence, resume, conflicts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest

from runbook_lib.chroma.files import checksum_tree, compare_checksums
from runbook_lib.errors import DimensionMismatchError, ExistingCollectionError
from runbook_lib.state.checkpoint import CHECKPOINT
from runbook_lib.steps.migrate.engine import migrate

from conftest import BIN, assert_exact_copy, open_qdrant, read_qdrant, run_step_inprocess
from data_builders import create_awkward_db


def test_awkward_records_arrive_exactly(runbook_env: dict[str, Path]) -> None:
    spec = create_awkward_db(runbook_env["chroma"])
    before = checksum_tree(runbook_env["chroma"])
    step, result = run_step_inprocess("migrate", migrate, batch_size=7)
    assert result.ok, result.errors
    rows = {r["collection"]: r for r in result.rows}
    assert rows["empty_one"]["status"] == "skipped (empty)"
    checked = assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"])
    assert checked == sum(s["count"] for s in spec.values())
    # the source directory was never opened in place
    assert checksum_tree(runbook_env["chroma"]) == before
    # the backup is there with its manifest, and the result says so
    backup = Path(result.backup["path"])
    assert (backup / "manifest.json").is_file() and (backup / "data" / "chroma.sqlite3").is_file()
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["sqlite_integrity"] == "ok"
    assert all(len(m["sha256"]) == 64 for m in manifest["files"].values())
    # read (a scratch copy, and its catalog read-only for the ledger's write sequence), never written: every file of
    # the backup still has the checksum it was taken with
    assert compare_checksums(manifest["files"], backup / "data") == []
    filed = json.loads((runbook_env["outputs"] / step.run.run_id / "02_migrate.json").read_text())
    assert filed["total_records"] == checked and filed["ok"] is True


def test_dimensions_3_384_1536_and_distances(runbook_env: dict[str, Path]) -> None:
    create_awkward_db(runbook_env["chroma"])
    run_step_inprocess("migrate", migrate)
    sizes = {n: read_qdrant(runbook_env["qdrant"], n) for n in ("awkward_cosine", "dim384_l2", "dim1536_ip")}
    assert {n: (t["size"], t["distance"]) for n, t in sizes.items()} == {
        "awkward_cosine": (3, "Cosine"),
        "dim384_l2": (384, "Euclid"),
        "dim1536_ip": (1536, "Dot"),
    }


def test_rerun_changes_nothing(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    step, first = run_step_inprocess("migrate", migrate)
    snapshot = {n: read_qdrant(runbook_env["qdrant"], n) for n in ("alpha_docs", "beta_docs", "gamma_docs")}
    # same run again (resume of a finished run): nothing copied twice, counts still exact
    _, again = run_step_inprocess("migrate", migrate, run_id=step.run.run_id)
    assert again.ok
    # a new run into the same Qdrant must not touch collections it did not create...
    with pytest.raises(ExistingCollectionError, match=r"alpha_docs.*on_existing=resume"):
        run_step_inprocess("migrate", migrate)
    # ...unless asked; then the same ids overwrite and nothing is duplicated
    _, resumed = run_step_inprocess("migrate", migrate, on_existing="resume")
    assert resumed.ok
    for name, before in snapshot.items():
        after = read_qdrant(runbook_env["qdrant"], name)
        assert after["points"].keys() == before["points"].keys()
        for pid, (vec, payload) in before["points"].items():
            assert np.array_equal(after["points"][pid][0], vec)
            assert after["points"][pid][1] == payload


def test_recreate_replaces_foreign_collection(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    with open_qdrant(runbook_env["qdrant"]) as target:
        target.create_collection("beta_docs", size=8, distance="Dot")
        target.upsert("beta_docs", [str(uuid.UUID(int=1))], [[0.0] * 8], [{"stale": True}])
    _, result = run_step_inprocess("migrate", migrate, on_existing="recreate")
    assert result.ok
    assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"], ["beta_docs"])


def test_resume_into_wrong_dimension_names_collection(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    with open_qdrant(runbook_env["qdrant"]) as target:
        target.create_collection("gamma_docs", size=5, distance="Dot")
    with pytest.raises(Exception) as info:
        run_step_inprocess("migrate", migrate, on_existing="resume", collections="gamma_docs")
    assert isinstance(info.value, DimensionMismatchError) or "dimension" in str(info.value)
    text = str(info.value)
    assert "gamma_docs" in text and "5" in text and "4" in text


def test_unknown_collection_is_a_clear_error(small_source: dict[str, Any]) -> None:
    from runbook_lib.errors import ConfigError

    with pytest.raises(ConfigError, match=r"Collection 'alpah_docs' does not exist.*alpha_docs"):
        run_step_inprocess("migrate", migrate, collections="alpah_docs")


def _big_source(path: Path, n: int = 4000, dim: int = 64) -> None:
    client = chromadb.PersistentClient(path=str(path))
    rng = np.random.default_rng(3)
    for name in ("first_big", "second_big"):
        col = client.create_collection(name, metadata={"hnsw:space": "l2"}, embedding_function=None)
        for start in range(0, n, 2000):
            ids = [f"{name}-{i}" for i in range(start, start + 2000)]
            col.add(
                ids=ids,
                embeddings=rng.normal(size=(2000, dim)).tolist(),
                documents=[f"doc {i}" for i in ids],
                metadatas=[{"n": i} for i in range(start, start + 2000)],
            )
    client.close()


def test_killed_run_resumes_to_an_exact_copy(runbook_env: dict[str, Path]) -> None:
    """kill -9 the runner (and its kernel) mid-collection, start again with the same run id."""
    _big_source(runbook_env["chroma"])
    env = {**os.environ}
    proc = subprocess.Popen(
        [str(BIN / "runbook"), "migrate", "-p", "batch_size", "50", "-p", "flush_every_s", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    checkpoint = None
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(runbook_env["outputs"].glob(f"*/state/{CHECKPOINT}"))
        if found:
            checkpoint = found[0]
            try:
                state = json.loads(checkpoint.read_text())
            except ValueError:
                continue
            entry = state["collections"].get("first_big", {})
            if entry.get("status") == "copying" and 0 < entry.get("records_done", 0) < 4000:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = entry["records_done"]
                break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert killed_at is not None, "the migration finished before it could be killed"
    assert checkpoint is not None
    run_id = checkpoint.parent.parent.name
    manifest = json.loads((checkpoint.parent.parent / "manifest.json").read_text())
    assert manifest["steps"]["migrate"]["status"] == "running"  # the record shows the kill
    again = subprocess.run(
        [str(BIN / "runbook"), "migrate", "--run-id", run_id, "-p", "batch_size", "50"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 8000
    state = json.loads(checkpoint.read_text())
    assert {e["status"] for e in state["collections"].values()} == {"done"}
    # the earlier, killed attempt's notebook is kept, not overwritten
    assert list((checkpoint.parent.parent / "attempts").glob("02_migrate.*.ipynb"))


def test_server_source_migrates_exactly(server_env: dict[str, Any]) -> None:
    _, result = run_step_inprocess("migrate", migrate, batch_size=64)
    assert result.ok, result.errors
    assert result.backup is None
    client = chromadb.HttpClient(
        host=os.environ["CHROMA_HOST"], port=int(os.environ["CHROMA_PORT"]), database=server_env["database"]
    )
    for name, spec in server_env["collections"].items():
        col = client.get_collection(name)
        got = col.get(include=["embeddings", "documents", "metadatas"])
        target = read_qdrant(server_env["qdrant"], name)
        assert len(target["points"]) == spec["count"]
        from runbook_lib.core.mapping import normalise_rows, point_id

        vecs = np.asarray(got["embeddings"], dtype=np.float32)
        if spec["space"] == "cosine":
            vecs = normalise_rows(vecs)
        for k, cid in enumerate(got["ids"]):
            vec, payload = target["points"][point_id(cid)]
            assert np.allclose(vec, vecs[k], atol=1e-6)
            assert payload == {"chroma_id": cid, "document": got["documents"][k], "metadata": got["metadatas"][k]}


def test_pipeline_parallel_writer_path_keeps_order_bookkeeping(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    """workers > 1 on local mode falls back to one writer; the checkpoint watermark still ends at the count."""
    step, result = run_step_inprocess("migrate", migrate, workers=4, batch_size=33)
    assert result.ok
    state = json.loads((step.run.state_dir / CHECKPOINT).read_text())
    assert state["collections"]["alpha_docs"]["records_done"] == 700
