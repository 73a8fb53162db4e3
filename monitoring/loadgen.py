"""Search load through the app's VectorDBClient against ChromaDB and Qdrant at once, with its metrics exposed.

    VECTOR_DB_METRICS_PORT=9464 python monitoring/loadgen.py --collections alpha_docs:16,beta_docs:8 --seconds 60

Both backends come from the usual settings (``CHROMA_PERSIST_DIR`` / ``CHROMA_HOST``..., ``QDRANT_PATH`` /
``QDRANT_URL``...); the Qdrant client is created last, so ``vector_db_live_backend`` says qdrant. Each backend gets
``--concurrency`` threads of random queries (``name:dimension`` collections), and every ``--error-every``-th query
is made to fail on purpose (an unknown collection, then a vector of the wrong dimension), so the error panels and
alerts have something to show. What the generator measured itself (counts, errors, every latency) is written to
``--summary`` when the load ends; the metrics stay served until the process is stopped (SIGTERM/Ctrl-C), or for
``--linger`` seconds, so Prometheus scrapes the final values. The tests compare the two.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from runbook_lib.app import RunbookError, VectorDBClient
from runbook_lib.app.metrics import METRICS_PORT_VARIABLE

BACKENDS = ("chroma", "qdrant")


def parse_collections(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        name, _, dim = item.strip().partition(":")
        if not name or not dim.isdigit():
            raise SystemExit(f"--collections expects name:dimension[,name:dimension...], got {item!r}")
        out.append((name, int(dim)))
    return out


def worker(
    client: VectorDBClient,
    collections: list[tuple[str, int]],
    error_every: int,
    stop_at: float,
    seed: int,
    record: dict[str, Any],
    lock: threading.Lock,
) -> None:
    rng = np.random.default_rng(seed)
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        name, dim = collections[n % len(collections)]
        if error_every and n % error_every == 0:
            # Injected errors: alternately a collection that does not exist and a vector of the wrong dimension.
            name, dim = (f"{name}_missing", dim) if (n // error_every) % 2 else (name, dim + 1)
        vector = rng.normal(size=dim)
        start = time.perf_counter()
        try:
            client.search(name, vector, limit=5)
            ok = True
        except RunbookError:
            ok = False
        elapsed = time.perf_counter() - start
        with lock:
            record["latencies_s"].append(elapsed)
            record["queries"] += 1
            record["errors"] += 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", required=True, help="name:dimension,... of collections in both backends")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send load")
    parser.add_argument("--concurrency", type=int, default=2, help="threads per backend")
    parser.add_argument("--error-every", type=int, default=20, help="every N-th query fails on purpose (0: none)")
    parser.add_argument("--summary", type=Path, help="write what the generator measured here (JSON)")
    parser.add_argument("--linger", type=float, default=600.0, help="seconds to keep serving metrics after the load")
    args = parser.parse_args(argv)
    if not os.environ.get(METRICS_PORT_VARIABLE):
        print(f"note: {METRICS_PORT_VARIABLE} is unset, so the metrics are not exposed", file=sys.stderr)
    collections = parse_collections(args.collections)
    clients = {b: VectorDBClient({**os.environ, "VECTOR_DB": b}) for b in BACKENDS}  # qdrant last: the live one
    records = {b: {"queries": 0, "errors": 0, "latencies_s": []} for b in BACKENDS}
    lock = threading.Lock()
    for client in clients.values():  # connect before the clock starts
        client.health()
    stop_at = time.monotonic() + args.seconds
    threads = [
        threading.Thread(
            target=worker,
            args=(clients[b], collections, args.error_every, stop_at, 1000 * i + k, records[b], lock),
            daemon=True,
        )
        for i, b in enumerate(BACKENDS)
        for k in range(args.concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = {
        b: {
            **{k: v for k, v in r.items() if k != "latencies_s"},
            "error_ratio": r["errors"] / max(1, r["queries"]),
            "p50_s": float(np.percentile(r["latencies_s"], 50)) if r["latencies_s"] else None,
            "p95_s": float(np.percentile(r["latencies_s"], 95)) if r["latencies_s"] else None,
            "p99_s": float(np.percentile(r["latencies_s"], 99)) if r["latencies_s"] else None,
            "latencies_s": r["latencies_s"],
        }
        for b, r in records.items()
    }
    if args.summary:
        tmp = args.summary.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary))
        tmp.replace(args.summary)
    for b, s in summary.items():
        print(f"{b}: {s['queries']} queries, {s['errors']} errors, p95 {1000 * (s['p95_s'] or 0):.2f} ms", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait(args.linger)
    for client in clients.values():
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
