"""Does Qdrant Edge release the GIL? A pure-Python spinner thread counts while the main thread runs one engine call;
its rate during the call over its rate alone says how much of the call other Python threads can use (1.0: the GIL
is released for the whole call; ~0: it is held). On 2 cores a released call that keeps one core busy leaves the
spinner close to its idle rate.

Run from the project root::

    .venv/bin/python benchmarks/edge_gil_probe.py [--points 4096] [--dim 1536] [--batch 256]

It is a probe, not a test: it prints the ratios (this machine is shared, so the rates are noisy; repeat it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe


class Spinner:
    """A thread that increments a counter as fast as the GIL lets it."""

    def __init__(self) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.count += 1

    def __enter__(self) -> Spinner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def spinner_share(call: Callable[[], Any], idle_rate: float) -> tuple[float, float]:
    """(seconds of ``call``, the spinner's rate during it / its idle rate)."""
    with Spinner() as spin:
        time.sleep(0.05)
        before, t0 = spin.count, time.perf_counter()
        call()
        t1 = time.perf_counter()
        after = spin.count
    return t1 - t0, ((after - before) / (t1 - t0)) / idle_rate


def idle_rate() -> float:
    """The spinner's rate while the main thread sleeps (releases the GIL)."""
    with Spinner() as spin:
        time.sleep(0.05)
        before, t0 = spin.count, time.perf_counter()
        time.sleep(0.5)
        rate = (spin.count - before) / (time.perf_counter() - t0)
    return rate


def config(dim: int) -> Any:
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, datatype=qe.VectorStorageDatatype.Float32),
        hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
    )


def build_points(ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]], batch: int) -> list[list[Any]]:
    return [
        [
            qe.Point(id=i, vector=v, payload=p)
            for i, v, p in zip(ids[s : s + batch], vectors[s : s + batch], payloads[s : s + batch], strict=True)
        ]
        for s in range(0, len(ids), batch)
    ]


def fill(
    into: list[list[Any]], ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]], batch: int
) -> None:
    into.extend(build_points(ids, vectors, payloads, batch))


def upsert(shard: Any, points: list[Any]) -> None:
    shard.update(qe.UpdateOperation.upsert_points(points))


def probe(points: int, dim: int, batch: int, rounds: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(points, dim)).astype(np.float32)
    ids = [str(__import__("uuid").UUID(int=i + 1)) for i in range(points)]
    payloads = [{"chroma_id": f"id-{i}", "document": f"doc {i}", "metadata": {"k": i}} for i in range(points)]
    out: dict[str, list[float]] = {"idle_rate": [], "sleep": [], "python_loop": []}
    for name in ("build Point objects", "update (upsert one batch)", "flush", "optimize (HNSW build)"):
        out[name] = []
        out[name + " s"] = []
    for _ in range(rounds):
        rate = idle_rate()
        out["idle_rate"].append(rate)
        out["sleep"].append(spinner_share(lambda: time.sleep(0.3), rate)[1])
        out["python_loop"].append(spinner_share(lambda: sum(i * i for i in range(2_000_000)), rate)[1])
        with tempfile.TemporaryDirectory(prefix="edge-gil-") as tmp:
            shard = qe.EdgeShard.create(str(Path(tmp) / "s"), config(dim))
            built: list[list[Any]] = []
            seconds, share = spinner_share(partial(fill, built, ids, vectors, payloads, batch), rate)
            out["build Point objects"].append(share)
            out["build Point objects s"].append(seconds)
            ups, secs = [], []
            for pts in built:
                seconds, share = spinner_share(partial(upsert, shard, pts), rate)
                ups.append(share)
                secs.append(seconds)
            out["update (upsert one batch)"].append(statistics.median(ups))
            out["update (upsert one batch) s"].append(sum(secs))
            for name, call in (("flush", shard.flush), ("optimize (HNSW build)", shard.optimize)):
                seconds, share = spinner_share(call, rate)
                out[name].append(share)
                out[name + " s"].append(seconds)
            shard.close()
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON line")
    args = parser.parse_args()
    res = probe(args.points, args.dim, args.batch, args.rounds)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"spinner rate while the main thread runs X, over its rate alone (median of {args.rounds} rounds;")
    print(f"{args.points} points x {args.dim}-d, batches of {args.batch}); ~1.0 = GIL released, ~0.5 or less = held")
    for name in (
        "sleep",
        "python_loop",
        "build Point objects",
        "update (upsert one batch)",
        "flush",
        "optimize (HNSW build)",
    ):
        extra = f"  ({res[name + ' s']:.2f} s)" if name + " s" in res else ""
        print(f"  {name:<28s} {res[name]:.2f}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
