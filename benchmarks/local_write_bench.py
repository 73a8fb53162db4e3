"""What a bulk load into an embedded Qdrant target (qdrant-client's local mode, or Qdrant Edge) costs with one version
of ``runbook_lib`` against another.

Run from the project root::

    .venv/bin/python benchmarks/local_write_bench.py --tree before=/path/to/old/checkout --tree after=. [--rounds 5]
    .venv/bin/python benchmarks/local_write_bench.py --tree local=. --tree edge=. --edge edge   # the two targets

Each round writes the same points (2,048 x 1536-d float32, unit-normalised, SPEC payloads; batches of 256) into a
fresh ``QDRANT_PATH`` (``QDRANT_EDGE_PATH`` for the trees named by ``--edge``) through ``open_target`` as the
migration's copy does (``bulk_writes``, then per batch ``upsert`` and ``flush``), once per tree, each in a fresh
process with that tree's ``runbook_lib`` first on the path; the trees alternate, so the machine's noise falls on all
alike. Prints the median seconds per tree and the ratio of each tree to the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _child(points: int, dim: int, batch_size: int, edge: bool) -> None:
    """One bulk load in this process, with whatever ``runbook_lib`` is first on the path; prints its seconds."""
    import numpy as np

    from runbook_lib.config.settings import QdrantSettings
    from runbook_lib.core.mapping import normalise_rows, point_id
    from runbook_lib.qdrant.connect import open_target

    rng = np.random.default_rng(7)
    vectors = normalise_rows(rng.normal(size=(points, dim)).astype(np.float32))
    ids = [point_id(f"doc-{i}") for i in range(points)]
    payloads = [
        {"chroma_id": f"doc-{i}", "document": f"document number {i}", "metadata": {"i": i, "kind": "bench"}}
        for i in range(points)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "qd"
        settings = QdrantSettings(edge_path=folder) if edge else QdrantSettings(path=folder)
        _load(open_target(settings), ids, vectors, payloads, dim, batch_size)


def _load(target: Any, ids: list[str], vectors: Any, payloads: list[dict[str, Any]], dim: int, batch_size: int) -> None:
    points = len(ids)
    with target:
        target.create_collection("bench", size=dim, distance="Cosine")
        started = time.perf_counter()
        with target.bulk_writes("bench") as flush:
            for start in range(0, points, batch_size):
                end = start + batch_size
                target.upsert("bench", ids[start:end], vectors[start:end], payloads[start:end])
                flush()
        seconds = time.perf_counter() - started
        assert target.count("bench") == points
    print(json.dumps({"seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH of a checkout (repeat)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--edge", action="append", default=[], help="NAME of a tree to write into Qdrant Edge")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.points, args.dim, args.batch_size, bool(args.edge))
        return
    trees = dict(t.split("=", 1) for t in args.tree)
    seconds: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, path in trees.items():
            env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
            command = [sys.executable, __file__, "--child", "--tree", args.tree[0], "--points", str(args.points)]
            command += ["--dim", str(args.dim), "--batch-size", str(args.batch_size)]
            command += ["--edge", name] if name in args.edge else []
            out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
            seconds[name].append(json.loads(out.strip().splitlines()[-1])["seconds"])
    first = statistics.median(seconds[next(iter(trees))])
    print(
        f"bulk load of {args.points:,} x {args.dim} points, batches of {args.batch_size} (Edge: {args.edge or 'none'}):"
    )
    for name, values in seconds.items():
        median = statistics.median(values)
        runs = " ".join(f"{v:.2f}" for v in values)
        print(f"  {name:<10} median {median:6.2f} s  ({runs})  ratio to {next(iter(trees))}: {median / first:.2f}x")


if __name__ == "__main__":
    main()
