"""Soak (bounded): an app process writes through the wrapper -- to ChromaDB before cutover, to Qdrant after it --
while the runbook syncs, cuts over and rolls back, with a crash injected at a step boundary of each kind (a forward
sync killed after writing Qdrant and before its ledger, a rollback killed between its swap's renames) and the app
writing on between a crash and its rerun. At the end every write the app made is in ChromaDB exactly (document,
metadata, vector), every record it deleted is gone, and nothing else changed.

The app's writes come in batches the test asks for (``write N`` on its stdin), between the steps, so the run is
deterministic; the app keeps ChromaDB open during the forward syncs, and is stopped before the rollback (as the
SPEC says: a directory another process holds open is not replaced; Qdrant's local mode has one client per folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from test_crash_safety import crash_at
from test_rollback_live import migrate_ok

from runbook_lib.chroma.files import copy_chroma_dir
from runbook_lib.core.mapping import normalise_rows
from runbook_lib.steps.rollback.engine import rollback
from runbook_lib.steps.sync.engine import sync

from conftest import _close, assert_exact_copy, run_step_inprocess

ROOT = Path(__file__).resolve().parents[1]
APP = r"""
import json, os, sys
import numpy as np
from runbook_lib.app import VectorDBClient

live, k, db = [], 0, VectorDBClient({**os.environ, "VECTOR_DB": "chroma"})
for line in sys.stdin:
    command, *arg = line.split()
    if command == "cutover":
        db.close()
        db = VectorDBClient({**os.environ, "VECTOR_DB": "qdrant"})
    elif command == "stop":
        break
    elif command == "write":
        for _ in range(int(arg[0])):
            k += 1
            if k % 7 == 0 and len(live) > 3:
                cid = live.pop(0)
                db.delete("alpha_docs", ids=[cid])
                op = {"op": "delete", "id": cid}
            elif k % 11 == 0:
                cid = f"a-{(k * 37) % 700:04d}"  # a migrated record
                db.update("alpha_docs", [cid], documents=[f"app edit {k}"])
                op = {"op": "update", "id": cid, "doc": f"app edit {k}"}
            elif k % 5 == 0 and live:
                cid = live[-1]
                db.update("alpha_docs", [cid], documents=[f"app edit {k}"], metadatas=[{"edited": k}])
                op = {"op": "update", "id": cid, "doc": f"app edit {k}", "meta": {"edited": k}}
            else:
                cid = f"app-{k}"
                vec = np.random.default_rng(k).normal(size=16).astype(np.float32).tolist()
                db.add("alpha_docs", [cid], [vec], documents=[f"app doc {k}"], metadatas=[{"k": k}])
                live.append(cid)
                op = {"op": "add", "id": cid, "doc": f"app doc {k}", "meta": {"k": k}, "seed": k}
            print(json.dumps(op), flush=True)
    print("ok", flush=True)
db.close()
"""


class App:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", APP], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.log: list[dict[str, Any]] = []

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.strip() == "ok":
                return
            self.log.append(json.loads(line))
        raise AssertionError(f"the app ended: {self.proc.wait()}")

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.close()
        assert self.proc.wait() == 0


def _read(chroma_dir: Path, tmp: Path) -> dict[str, tuple[Any, Any, np.ndarray]]:
    copy = tmp / "read_copy"
    copy_chroma_dir(chroma_dir, copy)
    client = chromadb.PersistentClient(path=str(copy))
    got = client.get_collection("alpha_docs", embedding_function=None).get(
        include=["documents", "metadatas", "embeddings"]
    )
    _close(client)
    return {
        cid: (doc, meta, np.asarray(vec, dtype=np.float32))
        for cid, doc, meta, vec in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True)
    }


def test_every_write_survives_sync_cutover_and_rollback_with_crashes(
    small_source: dict[str, Any], runbook_env: dict[str, Path], tmp_path: Path
) -> None:
    chroma_dir = runbook_env["chroma"]
    before = _read(chroma_dir, tmp_path / "before")
    rid = migrate_ok()
    app = App()
    try:
        app.send("write 40")
        crash_at("sync:qdrant-written", "sync", run_id=rid)  # killed after writing Qdrant, before its ledger
        app.send("write 40")  # the app writes on
        _, again = run_step_inprocess("sync", sync, run_id=rid)
        assert again.ok, again.verdict
        app.send("write 40")
        _, last = run_step_inprocess("sync", sync, run_id=rid)  # right before cutover
        assert last.ok and assert_exact_copy(chroma_dir, runbook_env["qdrant"]) > 0
        app.send("cutover")
        app.send("write 80")  # after cutover: into Qdrant
    finally:
        app.stop()  # the app is stopped for the rollback
    crash_at("swap:second-rename", "rollback", run_id=rid, confirm=True)
    _, done = run_step_inprocess("rollback", rollback, run_id=rid, confirm=True)
    assert done.ok, done.verdict
    assert any("interrupted swap" in w for w in done.warnings), done.warnings

    expected: dict[str, Any] = {cid: (doc, meta, vec) for cid, (doc, meta, vec) in before.items()}
    for op in app.log:
        if op["op"] == "add":
            vec = np.random.default_rng(op["seed"]).normal(size=16).astype(np.float32)
            expected[op["id"]] = (op["doc"], op["meta"], vec)
        elif op["op"] == "delete":
            del expected[op["id"]]
        else:
            doc, meta, vec = expected[op["id"]]
            expected[op["id"]] = (op["doc"], {**(meta or {}), **op.get("meta", {})} or None, vec)
    assert len(app.log) == 200
    now = _read(chroma_dir, tmp_path / "after")
    assert sorted(now) == sorted(expected)
    wrong = [
        cid
        for cid, (doc, meta, vec) in expected.items()
        if now[cid][0] != doc
        or (now[cid][1] or None) != (meta or None)
        or np.abs(normalise_rows(now[cid][2][None])[0] - normalise_rows(vec[None])[0]).max() > 1e-6
    ]
    assert wrong == [], [(c, now[c][:2], expected[c][:2]) for c in wrong[:3]]
