"""Benchmark of the verify step against the migration it checks, and its memory.

Run from the project root::

    .venv/bin/python benchmarks/verify_bench.py [--scale 1] [--batch-size 512] [--json out.json]

On the sample ChromaDB (``runbook_fixtures.sample_data.create_sample_db``, cached under
``$TMPDIR/runbook-bench-cache`` and copied into a temp dir) it runs, in one run folder, the migrate step
and then the verify step with every vector compared (``vector_check="all"``), each as its notebook calls
it (``begin(...)`` + ``step.execute(...)``), into qdrant-client's local mode. It prints:

* migration time and verification time (each the wall time of ``step.execute``), and their ratio
  (goal: verify <= 1.5x migrate);
* verification peak RSS.

How memory is measured: each step runs in its own fresh child process (this script with ``--child``), so
one step's memory never inflates the other's reading. The child records its RSS just before
``step.execute`` (the baseline: interpreter, chromadb, qdrant-client, numpy, pandas, matplotlib loaded)
and ``ru_maxrss`` (the kernel's peak RSS of the process, via ``resource.getrusage``) just after. Peak RSS
includes native memory (chromadb's Rust side, SQLite's page cache, qdrant-client's local-mode arrays of
the whole collection, and Chroma's own HNSW index, loaded when the approximate-agreement queries run);
tracemalloc would miss all of that, which is why it is not used. The peak is compared with the size of
all the sample's vectors (float32) to show the verification does not hold them all at once beyond what
Qdrant local mode itself holds.

Not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ROOT, copy_tree, env, local_env, mib, peak_rss_bytes, rss_bytes, sample_db


def child(step_name: str, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one step in this (fresh) process; report its time and memory as a dict."""
    import logging

    logging.disable(logging.INFO)
    from runbook_lib.kernel.step import Step, begin
    from runbook_lib.steps.migrate.engine import migrate
    from runbook_lib.steps.verify.engine import verify

    if step_name == "qdrant-open":  # what qdrant-client's local mode alone holds for the migrated points
        from runbook_lib.config.settings import load_settings
        from runbook_lib.qdrant.target import QdrantTarget

        baseline = rss_bytes()
        with QdrantTarget(load_settings().qdrant):
            return {"step": step_name, "baseline_rss": baseline, "peak_rss": peak_rss_bytes()}
    steps: dict[str, Callable[[Step], Any]] = {"migrate": migrate, "verify": verify}
    fn = steps[step_name]
    step = begin(step_name, run_id=run_id, **params)
    baseline = rss_bytes()
    started = time.perf_counter()
    result = step.execute(fn)
    seconds = time.perf_counter() - started
    data = result.to_dict()
    return {
        "step": step_name,
        "run_id": step.run.run_id,
        "seconds": seconds,
        "ok": data["ok"],
        "verdict": data["verdict"],
        "baseline_rss": baseline,
        "peak_rss": peak_rss_bytes(),
        "records": data.get("total_records"),
    }


def run_child(
    step_name: str, run_id: str, params: dict[str, Any], environment: dict[str, str | None]
) -> dict[str, Any]:
    with env(**environment):
        out = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                step_name,
                "--run-id",
                run_id,
                "--params",
                json.dumps(params),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=dict(os.environ),
            check=False,
        )
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"the {step_name} child failed (exit {out.returncode})")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="sample size multiplier (1 = 14,365 records)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=512, help="verify batch size")
    parser.add_argument("--migrate-batch-size", type=int, default=256, help="migrate batch size (its default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--memory-sweep",
        action="store_true",
        help="also verify with batch sizes 64 and 2048 (fresh processes) to show memory follows the batch size",
    )
    parser.add_argument("--child", choices=["migrate", "verify", "qdrant-open"], help=argparse.SUPPRESS)
    parser.add_argument("--run-id", default="", help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.run_id, json.loads(args.params))))
        return 0

    cached, built = sample_db(args.scale, args.seed, args.dim, progress=True)
    if built:
        print(f"built the sample ChromaDB in {built:.1f} s (cached at {cached})")
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as tmp:
        work = Path(tmp)
        persist = copy_tree(cached, work / "chroma_db")
        environment = local_env(persist, work / "qdrant", work / "outputs")
        environment["RUNBOOK_HEADLESS"] = "1"
        mig = run_child("migrate", "", {"batch_size": args.migrate_batch_size}, environment)
        ver = run_child("verify", mig["run_id"], {"batch_size": args.batch_size, "vector_check": "all"}, environment)
        result = json.loads((work / "outputs" / mig["run_id"] / "03_verify.json").read_text())
        qdrant_only = run_child("qdrant-open", "", {}, environment)
        sweep: dict[int, dict[str, Any]] = {}
        if args.memory_sweep:
            for size in (64, 2048):
                sweep[size] = run_child(
                    "verify", mig["run_id"], {"batch_size": size, "vector_check": "all"}, environment
                )

    records = int(mig["records"] or 0)
    vector_bytes = records * args.dim * 4
    figures = {
        "scale": args.scale,
        "records": records,
        "dim": args.dim,
        "migrate_seconds": round(mig["seconds"], 2),
        "verify_seconds": round(ver["seconds"], 2),
        "ratio_verify_over_migrate": round(ver["seconds"] / mig["seconds"], 3),
        "verify_ok": ver["ok"],
        "verify_peak_rss_mib": round(mib(ver["peak_rss"]), 1),
        "verify_baseline_rss_mib": round(mib(ver["baseline_rss"]), 1),
        "verify_rss_growth_mib": round(mib(ver["peak_rss"] - ver["baseline_rss"]), 1),
        "qdrant_local_mode_rss_mib": round(mib(qdrant_only["peak_rss"] - qdrant_only["baseline_rss"]), 1),
        "migrate_peak_rss_mib": round(mib(mig["peak_rss"]), 1),
        "verify_peak_rss_mib_by_batch_size": {
            args.batch_size: round(mib(ver["peak_rss"]), 1),
            **{size: round(mib(r["peak_rss"]), 1) for size, r in sweep.items()},
        },
        "verify_seconds_by_batch_size": {
            args.batch_size: round(ver["seconds"], 2),
            **{size: round(r["seconds"], 2) for size, r in sweep.items()},
        },
        "all_vectors_float32_mib": round(mib(vector_bytes), 1),
        "vectors_compared": sum(c["checks"]["vectors"]["numbers"].get("compared", 0) for c in result["collections"]),
        "per_collection_seconds": {c["collection"]: c["seconds"] for c in result["collections"]},
    }
    print(f"sample: scale {args.scale:g}, {records:,} records of dimension {args.dim}")
    print(f"migration time      {figures['migrate_seconds']:8.2f} s")
    print(f"verification time   {figures['verify_seconds']:8.2f} s  ({figures['vectors_compared']:,} vectors compared)")
    print(f"ratio verify/migrate {figures['ratio_verify_over_migrate']:7.2f}   (goal <= 1.5)")
    print(
        f"verification peak RSS {figures['verify_peak_rss_mib']:.0f} MiB (baseline before the step "
        f"{figures['verify_baseline_rss_mib']:.0f} MiB, growth {figures['verify_rss_growth_mib']:.0f} MiB; all "
        f"vectors as float32 would be {figures['all_vectors_float32_mib']:.0f} MiB)"
    )
    print(
        f"  of which qdrant-client local mode holding the migrated collections: "
        f"{figures['qdrant_local_mode_rss_mib']:.0f} MiB (measured alone in another child)"
    )
    print(f"migration peak RSS    {figures['migrate_peak_rss_mib']:.0f} MiB")
    if sweep:
        peaks, times = figures["verify_peak_rss_mib_by_batch_size"], figures["verify_seconds_by_batch_size"]
        for size in sorted(peaks):
            print(f"  verify batch_size {size:5d}: peak RSS {peaks[size]:.0f} MiB, {times[size]:.1f} s")
    print(f"verdict: {ver['verdict']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
