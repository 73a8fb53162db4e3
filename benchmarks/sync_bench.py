"""Benchmark of ``runbook sync``: with nothing to do, and with 1 % of the records changed, against the full
migration of the same data in the same run (ratios, not absolute times: these machines are noisy).

Run from the project root::

    .venv/bin/python benchmarks/sync_bench.py [--scales 1,10] [--changed 0.01] [--json out.json]

Per scale, on the cached sample ChromaDB copied to a temporary folder: the real migrate step (as its notebook
calls it), then the real sync step twice: once with nothing changed, once after an app changed 1 % of each
collection's records in ChromaDB (a third of them re-embedded, a third with new metadata, a third deleted and
re-added under new ids). Each sync runs in a fresh child process so its peak RSS is its own. Goals: sync with 1 %
changed <= 0.25x the migration; peak RSS flat from scale 1 to scale 10.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, copy_tree, env, local_env, mib, sample_db

DIM = 1536


def _child(run_id: str) -> None:
    """One sync in this (fresh) process; prints its seconds, verdict and peak RSS as JSON."""
    import resource

    from runbook_lib.kernel.step import begin
    from runbook_lib.steps.sync.engine import sync

    t0 = time.perf_counter()
    step = begin("sync", run_id=run_id)
    result = step.execute(sync)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "verdict": result.verdict, "totals": result.totals(), "peak_rss": peak}))


def _store_child(path: str) -> None:
    """Open qdrant-client's local store alone (what every process that opens it pays) and report it."""
    import resource
    import warnings

    warnings.simplefilter("ignore")
    from qdrant_client import QdrantClient

    t0 = time.perf_counter()
    client = QdrantClient(path=path)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    client.close()
    print(json.dumps({"seconds": seconds, "peak_rss": peak}))


def _sync_in_child(environment: dict[str, str | None], run_id: str) -> dict[str, Any]:
    child_env = {k: v for k, v in os.environ.items()}
    for k, v in environment.items():
        if v is None:
            child_env.pop(k, None)
        else:
            child_env[k] = v
    args = ["--store", str(environment["QDRANT_PATH"])] if run_id == "" else ["--child", run_id]
    proc = subprocess.run([sys.executable, __file__, *args], env=child_env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"sync failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _change(persist_dir: Path, share: float, seed: int = 5) -> int:
    """What an app does: re-embed, re-label, and replace ``share`` of each collection's records."""
    import chromadb
    import numpy as np

    client = chromadb.PersistentClient(path=str(persist_dir))
    rng = np.random.default_rng(seed)
    changed = 0
    for col in client.list_collections():
        c = client.get_collection(col.name, embedding_function=None)  # type: ignore[arg-type]
        all_ids = c.get(include=[])["ids"]
        n = max(3, int(len(all_ids) * share))
        if len(all_ids) < n:
            continue
        picks = [all_ids[int(i)] for i in rng.choice(len(all_ids), size=n, replace=False)]
        got = c.get(ids=picks, include=["embeddings", "documents"])
        third = n // 3
        reembed, relabel, replace = picks[:third], picks[third : 2 * third], picks[2 * third :]
        row = {rid: k for k, rid in enumerate(got["ids"])}
        dim = len(got["embeddings"][0])
        c.update(ids=reembed, embeddings=rng.normal(size=(len(reembed), dim)).astype(np.float32).tolist())
        c.update(ids=relabel, metadatas=[{"relabelled": True, "k": int(i)} for i in range(len(relabel))])
        c.delete(ids=replace)
        c.add(
            ids=[f"{rid}-v2" for rid in replace],
            embeddings=[got["embeddings"][row[rid]] for rid in replace],
            documents=[got["documents"][row[rid]] for rid in replace],
        )
        changed += n
    client.close()  # type: ignore[attr-defined]
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient.clear_system_cache()
    return changed


def run_scale(scale: float, share: float) -> dict[str, Any]:
    from runbook_lib.kernel.step import begin
    from runbook_lib.steps.migrate.engine import migrate

    cached, _ = sample_db(scale, 42, DIM, progress=True)
    work = Path(tempfile.mkdtemp(prefix="runbook-sync-bench-"))
    try:
        persist = copy_tree(cached, work / "chroma_db")
        environment = local_env(persist, work / "qdrant", work / "outputs")
        with env(**environment):
            t0 = time.perf_counter()
            step = begin("migrate")
            result = step.execute(migrate)
            migrate_s = time.perf_counter() - t0
            records = result.total_records
        store = _sync_in_child(environment, "")  # the local store alone, opened in a fresh process
        noop = _sync_in_child(environment, step.run.run_id)
        changed = _change(persist, share)
        one_pct = _sync_in_child(environment, step.run.run_id)
        own = {k: max(0.0, r["seconds"] - store["seconds"]) for k, r in (("noop", noop), ("changed", one_pct))}
        return {
            "scale": scale,
            "records": records,
            "migrate_s": round(migrate_s, 2),
            "sync_noop_s": round(noop["seconds"], 2),
            "sync_noop_ratio": round(noop["seconds"] / migrate_s, 3),
            "changed_records": changed,
            "sync_changed_s": round(one_pct["seconds"], 2),
            "sync_changed_ratio": round(one_pct["seconds"] / migrate_s, 3),
            "sync_changed_totals": one_pct["totals"],
            "store_open_s": round(store["seconds"], 2),
            "sync_noop_without_store_ratio": round(own["noop"] / migrate_s, 3),
            "sync_changed_without_store_ratio": round(own["changed"] / migrate_s, 3),
            "store_alone_rss_mib": round(mib(store["peak_rss"]), 1),
            "peak_rss_noop_mib": round(mib(noop["peak_rss"]), 1),
            "peak_rss_changed_mib": round(mib(one_pct["peak_rss"]), 1),
            "verdicts": [noop["verdict"], one_pct["verdict"]],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    if args.store:
        _store_child(args.store)
        return
    os.chdir(ROOT)
    rows = [run_scale(float(s), args.changed) for s in args.scales.split(",")]
    for r in rows:
        print(
            f"scale {r['scale']:g}: {r['records']:,} records; migrate {r['migrate_s']} s; sync with nothing to do "
            f"{r['sync_noop_s']} s ({r['sync_noop_ratio']}x); sync with {r['changed_records']:,} changed "
            f"{r['sync_changed_s']} s ({r['sync_changed_ratio']}x, goal <= 0.25x); peak RSS {r['peak_rss_noop_mib']} / "
            f"{r['peak_rss_changed_mib']} MiB"
        )
        print(
            f"  of which opening qdrant-client's local store (every process that opens it pays this; a server does "
            f"not) {r['store_open_s']} s; without it: nothing to do {r['sync_noop_without_store_ratio']}x, "
            f"{r['changed_records']:,} changed {r['sync_changed_without_store_ratio']}x; the store alone holds "
            f"{r['store_alone_rss_mib']} MiB, the sync's own share "
            f"{r['peak_rss_noop_mib'] - r['store_alone_rss_mib']:.1f} / "
            f"{r['peak_rss_changed_mib'] - r['store_alone_rss_mib']:.1f} MiB"
        )
    if len(rows) > 1:
        print(
            f"peak RSS scale {rows[-1]['scale']:g} / scale {rows[0]['scale']:g}: "
            f"{rows[-1]['peak_rss_changed_mib'] / rows[0]['peak_rss_changed_mib']:.2f}x (goal: flat); the store alone "
            f"{rows[-1]['store_alone_rss_mib'] / rows[0]['store_alone_rss_mib']:.2f}x; the sync's own share without "
            f"changes {(rows[-1]['peak_rss_noop_mib'] - rows[-1]['store_alone_rss_mib']):.0f} vs "
            f"{(rows[0]['peak_rss_noop_mib'] - rows[0]['store_alone_rss_mib']):.0f} MiB"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
