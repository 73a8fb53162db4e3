"""What a whole ``runbook migrate`` costs against the simplest correct script doing the same job (issue 12).

Run from the project root::

    .venv/bin/python benchmarks/run_cost_bench.py [--scales 1,10] [--latency-ms 10] [--json out.json]

In one run, per scale, on a copy of the cached sample ChromaDB (``benchmarks/_common.py`` ``sample_db``):

1. local mode: the real ``runbook migrate`` (a subprocess of ``.venv/bin/runbook``, fresh ``QDRANT_PATH`` and
   ``RUNBOOK_OUTPUTS``) against a simplest correct script of its own, run as a fresh child process: it copies the
   source directory (copy included in its time: like the runbook, it must not open the live directory with
   chromadb, which upgrades and rewrites what it opens), reads each collection by id chunks, maps per the SPEC
   (``point_id``, ``build_payload``, ``normalise_rows`` for Cosine), upserts sequentially into a fresh embedded
   Qdrant and checks every count exactly. Prints the ratio and where the runbook's extra time goes (the run's JSON,
   its executed notebook's per-cell durations, and in-process timings of the fixed costs: kernel start and imports
   through papermill with the runner's kernelspec, the HTML render, the backup, the scratch copy);
2. network: the target is a loopback HTTP stand-in for a Qdrant server that sleeps ``--latency-ms`` per request;
   the runbook's ``copy_collection`` with ``workers`` x ``batch_size`` against the sequential script over the same
   stand-in;
3. peak RSS at each scale: the runbook's migrate (its kernel, the largest process of the run) and chromadb's own
   bare read loop, each in a fresh child process.

It is a script, not a test: nothing asserts; it prints the numbers and the goals.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _common import ROOT, local_env, mib, peak_rss_bytes, sample_db

GOAL_LOCAL = {1.0: 1.05, 10.0: 1.0}  # runbook / script, local mode
GOAL_NETWORK = 0.5  # best runbook copy / sequential script, over the stand-in
RUNBOOK = ROOT / ".venv" / "bin" / "runbook"
INCLUDE_ALL = ["embeddings", "documents", "metadatas", "uris"]


def now() -> float:
    return time.perf_counter()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


# ------------------------------------------------------------------------------ the simplest correct script
def _space(col: Any) -> str:
    from runbook_lib.core.mapping import chroma_space

    config: dict[str, Any] = {}
    for attr in ("configuration_json", "configuration"):
        try:
            value = getattr(col, attr)
        except Exception:
            continue
        if isinstance(value, dict):
            config = value
            break
    return chroma_space(col.metadata, config)


def simple_script(live: Path, work: Path, batch_size: int, url: str | None = None) -> dict[str, Any]:
    """Copy the directory, read every collection by id chunks, map per the SPEC, upsert one batch at a time,
    count exactly. ``url``: a Qdrant server instead of a fresh embedded one under ``work``."""
    started = now()
    import chromadb
    import numpy as np
    from qdrant_client import QdrantClient, models

    from runbook_lib.core.mapping import build_payload, normalise_rows, point_id, qdrant_distance

    imported = now()
    plain = shutil.copytree(live, work / "plain_copy")
    copied = now()
    chroma = chromadb.PersistentClient(path=str(plain))
    qdrant = (
        QdrantClient(url=url, timeout=60, check_compatibility=False) if url else QdrantClient(path=str(work / "qd"))
    )
    records, counts = 0, {}
    for name in sorted(c.name for c in chroma.list_collections()):
        col = chroma.get_collection(name)
        ids = sorted(col.get(include=[])["ids"])
        if not ids:
            continue
        distance = qdrant_distance(_space(col))
        created = False
        for start in range(0, len(ids), batch_size):
            got = col.get(ids=ids[start : start + batch_size], include=INCLUDE_ALL)  # type: ignore[arg-type]
            vectors = np.asarray(got["embeddings"], dtype=np.float32)
            if not created:
                qdrant.create_collection(
                    name,
                    vectors_config=models.VectorParams(
                        size=vectors.shape[1], distance=models.Distance(distance), datatype=models.Datatype.FLOAT32
                    ),
                )
                created = True
            if distance == "Cosine":
                vectors = normalise_rows(vectors)
            uris = got.get("uris") or [None] * len(got["ids"])
            payloads = [
                build_payload(i, d, m, u)
                for i, d, m, u in zip(got["ids"], got["documents"], got["metadatas"], uris, strict=True)
            ]
            batch = models.Batch(ids=[point_id(i) for i in got["ids"]], vectors=vectors.tolist(), payloads=payloads)
            qdrant.upsert(name, points=batch, wait=True)
            records += len(got["ids"])
        found = qdrant.count(name, exact=True).count
        if found != len(ids):
            raise SystemExit(f"count check failed for {name}: {len(ids)} in ChromaDB, {found} in Qdrant")
        counts[name] = found
    qdrant.close()
    done = now()
    return {
        "records": records,
        "collections": len(counts),
        "in_process_s": done - started,
        "imports_s": imported - started,
        "copy_dir_s": copied - imported,
        "read_map_write_s": done - copied,
        "peak_rss": peak_rss_bytes(),
    }


def bare_read_loop(live: Path, work: Path, batch_size: int) -> dict[str, Any]:
    """chromadb's own read loop over a plain copy (ids, then get by id chunks), nothing kept: its peak RSS."""
    import chromadb

    plain = shutil.copytree(live, work / "plain_copy")
    client = chromadb.PersistentClient(path=str(plain))
    started, n = now(), 0
    for c in client.list_collections():
        col = client.get_collection(c.name)
        ids = sorted(col.get(include=[])["ids"])
        for start in range(0, len(ids), batch_size):
            n += len(col.get(ids=ids[start : start + batch_size], include=INCLUDE_ALL)["ids"])  # type: ignore[arg-type]
    return {"records": n, "seconds": now() - started, "peak_rss": peak_rss_bytes()}


# ------------------------------------------------------------------------------ children
def child(mode: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this file in a fresh process; its last stdout line is JSON. ``wall_s`` includes the interpreter."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", mode, *args]
    started = now()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=str(ROOT), env=env)
    wall = now() - started
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def run_with_rusage(cmd: list[str]) -> dict[str, Any]:
    """(child) run ``cmd``; report its wall time, exit code and the largest peak RSS of its process tree."""
    started = now()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = now() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"rc": proc.returncode, "wall_s": wall, "peak_rss": peak_kib * 1024, "tail": proc.stdout[-600:]}


# ------------------------------------------------------------------------------ 1. the real runbook migrate
def runbook_migrate(live: Path, work: Path) -> dict[str, Any]:
    values = local_env(live, work / "qdrant_runbook", work / "outputs")
    environment = {k: v for k, v in os.environ.items() if k not in values}
    environment.update({k: v for k, v in values.items() if v is not None})
    out = child("rusage", "--", str(RUNBOOK), "migrate", env=environment)
    if out["rc"] != 0:
        raise RuntimeError(f"runbook migrate failed ({out['rc']}): {out['tail']}")
    run_dir = next((work / "outputs").iterdir())
    out["run_dir"] = str(run_dir)
    out.update(breakdown_from_run(run_dir))
    return out


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def breakdown_from_run(run_dir: Path) -> dict[str, Any]:
    """Step time from the manifest, the migrate() parts from its JSON, per-cell durations from the notebook."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    step = manifest["steps"]["migrate"]
    result = json.loads((run_dir / "02_migrate.json").read_text())
    nb = json.loads((run_dir / "02_migrate.ipynb").read_text())
    cells = []
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("papermill", {})
        if cell["cell_type"] == "code" and meta.get("duration") is not None:
            first = "".join(cell["source"]).strip().splitlines()
            cells.append({"cell": first[-1][:50] if first else "", "seconds": float(meta["duration"])})
    nb_meta = nb.get("metadata", {}).get("papermill", {})
    nb_start, nb_end = nb_meta.get("start_time"), nb_meta.get("end_time")
    rows = result.get("collections") or result.get("rows") or []
    return {
        "manifest_step": {k: v for k, v in step.items() if k != "parameters"},
        "migrate_fn_s": float(result.get("seconds") or 0.0),
        "copy_rows_s": sum(float(r.get("seconds") or 0.0) for r in rows),
        "records": sum(int(r.get("records") or 0) for r in rows if r.get("status") == "done"),
        "cells": cells,
        "notebook_s": _stamp(nb_end) - _stamp(nb_start) if nb_start and nb_end else None,
        "step_start_end_s": (
            _stamp(step["ended_at"]) - _stamp(step["started_at"])
            if step.get("ended_at") and step.get("started_at")
            else None
        ),
        "log_tail": (run_dir / "logs" / "02_migrate.log").read_text().splitlines()[-5:],
    }


# ------------------------------------------------------------------------------ fixed costs, in process
def fixed_costs(live: Path, work: Path, executed_notebook: Path) -> dict[str, Any]:
    """Kernel start (+ the step's imports) through papermill with the runner's kernelspec, the HTML render of
    the executed notebook, and the backup and scratch copy of this source, each timed alone."""
    import nbformat
    import papermill

    from runbook_lib.chroma.backup import create_backup
    from runbook_lib.chroma.source import ChromaSource
    from runbook_lib.runner import execute as runner

    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for label, source in (
        ("kernel_start_s", ""),
        (
            "kernel_start_and_imports_s",
            "from runbook_lib.kernel.step import begin\nfrom runbook_lib.steps.migrate import report\n"
            "from runbook_lib.steps.migrate.engine import migrate",
        ),
    ):
        nb = nbformat.v4.new_notebook()
        nb.cells.append(nbformat.v4.new_code_cell(source))
        nb.metadata["kernelspec"] = {"name": runner.KERNEL_NAME, "display_name": "Python 3", "language": "python"}
        path = work / f"{label}.ipynb"
        nbformat.write(nb, path)
        kernel_root = runner._kernel_dir()
        saved = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = str(kernel_root)
        try:
            started = now()
            papermill.execute_notebook(
                str(path), str(path), kernel_name=runner.KERNEL_NAME, progress_bar=False, log_output=False
            )
            out[label] = now() - started
        finally:
            if saved is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = saved
            shutil.rmtree(kernel_root, ignore_errors=True)
    html_copy = work / "html_probe.ipynb"
    shutil.copy(executed_notebook, html_copy)
    started = now()
    runner.export_html(html_copy)
    out["html_s"] = now() - started
    source = shutil.copytree(live, work / "fixed_live")
    started = now()
    backup = create_backup(source, "bench-fixed")
    out["backup_s"] = now() - started
    from _common import SERVER_VARIABLES, env

    from runbook_lib.config.settings import load_settings

    with env(**{k: None for k in SERVER_VARIABLES}, CHROMA_PERSIST_DIR=str(source)):
        settings = load_settings()
    started = now()
    src = ChromaSource.open(settings.chroma, copy_from=backup.data_dir)
    out["scratch_copy_and_open_s"] = now() - started
    src.close()
    out["source_bytes"] = sum(p.stat().st_size for p in live.rglob("*") if p.is_file())
    return out


# ------------------------------------------------------------------------------ 2. network stand-in
class _LatencyStub(BaseHTTPRequestHandler):
    """A Qdrant server stand-in: answers creates, upserts and counts after ``latency`` seconds. Bodies are not
    parsed as JSON (a real server's parsing is on its own cores): the upsert's ids are counted from the text."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a real server
    latency = 0.01
    counts: dict[str, int] = {}  # noqa: RUF012
    lock = threading.Lock()
    requests = 0
    _IDS = re.compile(rb'"ids":\[([^\]]*)\]')

    def _reply(self, body: dict[str, Any]) -> None:
        time.sleep(type(self).latency)
        data = json.dumps({"result": body, "status": "ok", "time": 0.0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _collection(self) -> str:
        return self.path.split("?")[0].split("/")[2]

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/stats":  # the benchmark's own question: how many writes arrived
            self._reply({"requests": type(self).requests})
            return
        self._reply({"collections": []} if path == "/collections" else {"exists": False})

    def do_PUT(self) -> None:
        body = self._body()
        cls = type(self)
        with cls.lock:
            cls.requests += 1
        if self.path.split("?")[0].endswith("/points"):
            m = self._IDS.search(body)
            n = m.group(1).count(b",") + 1 if m and m.group(1).strip() else 0
            with cls.lock:
                cls.counts[self._collection()] = cls.counts.get(self._collection(), 0) + n
            self._reply({"operation_id": cls.requests, "status": "completed"})
            return
        with cls.lock:
            cls.counts.setdefault(self._collection(), 0)
        self._reply(True)  # type: ignore[arg-type]

    def do_POST(self) -> None:
        self._body()
        if self.path.split("?")[0].endswith("/points/count"):
            self._reply({"count": type(self).counts.get(self._collection(), 0)})
            return
        self._reply({})

    def do_DELETE(self) -> None:
        type(self).counts.pop(self._collection(), None)
        self._reply(True)  # type: ignore[arg-type]

    def log_message(self, *args: Any) -> None:
        pass


def serve(latency_s: float) -> None:
    """The stand-in in a process of its own (as a real server is): its request handling never competes with the
    client under test for a GIL. Prints its port, then serves until killed."""
    handler = type("Stub", (_LatencyStub,), {"latency": latency_s, "counts": {}, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # loopback only
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


@contextmanager
def latency_server(latency_s: float) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--_child", "serve", str(latency_s)], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int((proc.stdout.readline() if proc.stdout else "").strip())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def server_requests(url: str) -> int:
    import httpx

    return int(httpx.get(f"{url}/stats").json()["result"]["requests"])


def runbook_copy_over(url: str, source: Any, workers: int, batch_size: int) -> float:
    """The runbook's copy (``copy_collection`` per collection) over the stand-in; returns seconds."""
    from runbook_lib.config.settings import QdrantSettings
    from runbook_lib.core.plan import plan_collection
    from runbook_lib.qdrant.target import QdrantTarget
    from runbook_lib.steps.migrate.pipeline import copy_collection

    started = now()
    total = 0
    with QdrantTarget(QdrantSettings(path=None, url=url, timeout_s=60)) as target:  # type: ignore[arg-type]
        for name in source.collection_names():
            ids = source.snapshot_ids(name)
            if not ids:
                continue
            entry = plan_collection(source, name, run_id="bench", ids=ids)
            target.delete_collection(entry.target)  # the stand-in forgets the previous round's count
            copy_collection(
                source,
                target,
                entry,
                ids=ids,
                start=0,
                batch_size=batch_size,
                workers=workers,
                on_progress=lambda done, n: None,
            )
            if target.count(entry.target) != len(ids):
                raise RuntimeError(f"stand-in count mismatch for {name}")
            total += len(ids)
            source.release()
    return now() - started


def network(db: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from _common import open_source

    out: dict[str, Any] = {"latency_ms": args.latency_ms, "sweep": []}
    live = shutil.copytree(db, work / "net_live")
    with latency_server(args.latency_ms / 1000) as url, open_source(live) as source:
        # the sequential script over the same stand-in, in a fresh process (its own copy of the directory)
        script_work = work / "net_script"
        script_work.mkdir()
        script = child("script", str(live), str(script_work), str(args.batch_size), url)
        shutil.rmtree(script_work, ignore_errors=True)
        out["script"] = script
        out["script_requests"] = server_requests(url)
        for batch_size in args.net_batch_sizes:
            for workers in args.net_workers:
                seconds = runbook_copy_over(url, source, workers, batch_size)
                out["sweep"].append({"workers": workers, "batch_size": batch_size, "seconds": seconds})
                print(f"    network: workers {workers} batch {batch_size}: {seconds:.2f} s", flush=True)
    return out


# ------------------------------------------------------------------------------ main
def per_scale(scale: float, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    db, created = sample_db(scale, args.seed, args.dim, progress=True)
    work = tmp / f"scale{scale:g}"
    work.mkdir()
    live = shutil.copytree(db, work / "chroma_db")  # the "live" directory both jobs start from (untimed)
    rep: dict[str, Any] = {"scale": scale, "sample_created_s": created, "load_before": load_average()}
    order = ("script", "runbook") if args.script_first else ("runbook", "script")
    for kind in order:
        if kind == "runbook":
            rep["runbook"] = runbook_migrate(live, work / "rb")
        else:
            (work / "script").mkdir()
            rep["script"] = child("script", str(live), str(work / "script"), str(args.batch_size))
            shutil.rmtree(work / "script", ignore_errors=True)
        print(f"  scale {scale:g}: {kind} done ({load_average()})", flush=True)
    rep["load_after"] = load_average()
    rep["fixed"] = fixed_costs(live, work / "fixed_work", Path(rep["runbook"]["run_dir"]) / "02_migrate.ipynb")
    shutil.rmtree(work / "rb" / "qdrant_runbook", ignore_errors=True)
    if not args.skip_rss:
        (work / "bare").mkdir()
        rep["bare_rss"] = child("bare-rss", str(live), str(work / "bare"), str(args.batch_size))
        shutil.rmtree(work / "bare", ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scales", default="1,10", help="sample scales (default 1,10)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=256, help="the script's batch (the runbook's default)")
    parser.add_argument("--script-first", action="store_true", help="run the script before the runbook")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="the stand-in's per-request latency")
    parser.add_argument("--net-scale", type=float, default=1.0, help="sample scale of the network variant")
    parser.add_argument("--net-workers", default="1,2,4,8")
    parser.add_argument("--net-batch-sizes", default="128,256,512")
    parser.add_argument("--skip-network", action="store_true")
    parser.add_argument("--skip-rss", action="store_true", help="skip chromadb's bare read loop")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument("--_child", choices=["script", "bare-rss", "rusage", "serve"], help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--print", type=Path, dest="print_json", help="print the report of an earlier --json")
    args = parser.parse_args(argv)
    if args.print_json:
        print_report(json.loads(args.print_json.read_text()))
        return 0
    if args._child == "serve":
        serve(float(args.rest[0]))
        return 0
    if args._child == "rusage":
        print(json.dumps(run_with_rusage(args.rest)))
        return 0
    if args._child == "script":
        url = args.rest[3] if len(args.rest) > 3 else None
        print(json.dumps(simple_script(Path(args.rest[0]), Path(args.rest[1]), int(args.rest[2]), url)))
        return 0
    if args._child == "bare-rss":
        print(json.dumps(bare_read_loop(Path(args.rest[0]), Path(args.rest[1]), int(args.rest[2]))))
        return 0
    args.net_workers = [int(x) for x in args.net_workers.split(",")]
    args.net_batch_sizes = [int(x) for x in args.net_batch_sizes.split(",")]

    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_at_start": load_average(),
        "scales": [],
    }
    with tempfile.TemporaryDirectory(prefix="run-cost-bench-") as tmp:
        for scale in [float(s) for s in args.scales.split(",") if s.strip()]:
            report["scales"].append(per_scale(scale, args, Path(tmp)))
            save(report, args.json)
        if not args.skip_network:
            db, _ = sample_db(args.net_scale, args.seed, args.dim)
            net_work = Path(tmp) / "network"
            net_work.mkdir()
            report["network"] = network(db, net_work, args)
    report["load_at_end"] = load_average()
    print_report(report)
    save(report, args.json)
    return 0


def save(report: dict[str, Any], path: Path | None) -> None:
    """Write the numbers so far (after each scale, and at the end); ``--print PATH`` prints them again."""
    if path is not None:
        path.write_text(json.dumps({"load_at_end": load_average(), **report}, indent=2, default=str))


def line(label: str, value: str) -> None:
    print(f"  {label:<52s} {value}")


def print_report(rep: dict[str, Any]) -> None:
    print(
        f"\n=== run cost benchmark {rep['date']} · {rep['machine']['cpus']} CPUs · load average at start "
        f"{rep['load_at_start']}, at end {rep['load_at_end']}"
    )
    for s in rep["scales"]:
        rb, sc, fx = s["runbook"], s["script"], s["fixed"]
        ratio = rb["wall_s"] / sc["wall_s"]
        goal = GOAL_LOCAL.get(s["scale"])
        print(
            f"1. local mode, scale {s['scale']:g} ({sc['records']:,} records; load {s['load_before']} -> "
            f"{s['load_after']})"
        )
        line("runbook migrate (subprocess wall)", f"{rb['wall_s']:.2f} s ({rb['records']:,} records)")
        line("simplest correct script (fresh process wall)", f"{sc['wall_s']:.2f} s")
        line(
            "  script: imports / copy dir / read+map+write",
            f"{sc['imports_s']:.2f} / {sc['copy_dir_s']:.2f} / {sc['read_map_write_s']:.2f} s",
        )
        verdict = "" if goal is None else f"  ({'meets' if ratio <= goal else 'MISSES'} goal <= {goal}x)"
        line("ratio runbook / script", f"{ratio:.3f}x{verdict}")
        print("   where the runbook's time goes (from the run's files)")
        nb_s = rb.get("notebook_s") or 0.0
        line("runner outside the notebook (start, kernelspec, HTML, files)", f"{rb['wall_s'] - nb_s:.2f} s")
        line("notebook (papermill start .. end)", f"{nb_s:.2f} s")
        for cell in rb["cells"]:
            line(f"  cell: {cell['cell']}", f"{cell['seconds']:.2f} s")
        line("migrate() (result seconds)", f"{rb['migrate_fn_s']:.2f} s")
        line("  copy (sum of the rows' seconds)", f"{rb['copy_rows_s']:.2f} s")
        line(
            "  rest of migrate(): checks, backup, scratch copy, plan", f"{rb['migrate_fn_s'] - rb['copy_rows_s']:.2f} s"
        )
        print("   fixed costs timed alone, in this process")
        line("kernel start (empty notebook via papermill)", f"{fx['kernel_start_s']:.2f} s")
        line("kernel start + the step's imports", f"{fx['kernel_start_and_imports_s']:.2f} s")
        line("HTML render of the executed notebook", f"{fx['html_s']:.2f} s")
        line(f"backup ({mib(fx['source_bytes']):.0f} MiB: copy + sha256 + verify)", f"{fx['backup_s']:.2f} s")
        line("scratch copy of the backup + open chromadb", f"{fx['scratch_copy_and_open_s']:.2f} s")
        line("script's own copy of the directory (in its time)", f"{sc['copy_dir_s']:.2f} s")
        line("copy part vs script's read+map+write", f"{rb['copy_rows_s'] / sc['read_map_write_s']:.3f}x")
    print("3. peak RSS (fresh processes)")
    for s in rep["scales"]:
        bare = s.get("bare_rss", {}).get("peak_rss")
        line(
            f"scale {s['scale']:g}",
            f"runbook migrate (largest process: kernel) {mib(s['runbook']['peak_rss']):.0f} MiB · script "
            f"{mib(s['script']['peak_rss']):.0f} MiB · chromadb bare read loop "
            + (f"{mib(bare):.0f} MiB" if bare else "n/a"),
        )
    if len(rep["scales"]) > 1:
        lo, hi = rep["scales"][0], rep["scales"][-1]
        tag = f"scale {hi['scale']:g} / scale {lo['scale']:g}"
        parts = [f"runbook {hi['runbook']['peak_rss'] / lo['runbook']['peak_rss']:.2f}x"]
        parts.append(f"script {hi['script']['peak_rss'] / lo['script']['peak_rss']:.2f}x")
        if hi.get("bare_rss") and lo.get("bare_rss"):
            parts.append(f"bare loop {hi['bare_rss']['peak_rss'] / lo['bare_rss']['peak_rss']:.2f}x")
        line(tag, " · ".join(parts))
    net = rep.get("network")
    if net:
        sc = net["script"]
        print(f"2. network: loopback stand-in, {net['latency_ms']:g} ms per request, {sc['records']:,} records")
        line(
            "sequential script (fresh process wall / read+map+write)",
            f"{sc['wall_s']:.2f} / {sc['read_map_write_s']:.2f} s",
        )
        best = min(net["sweep"], key=lambda r: r["seconds"])
        for r in net["sweep"]:
            mark = "  <- best" if r is best else ""
            line(
                f"runbook copy_collection, workers {r['workers']}, batch {r['batch_size']}",
                f"{r['seconds']:.2f} s = {r['seconds'] / sc['read_map_write_s']:.3f}x script{mark}",
            )
        ratio = best["seconds"] / sc["read_map_write_s"]
        verdict = "meets" if ratio <= GOAL_NETWORK else "MISSES"
        line("best / script's read+map+write", f"{ratio:.3f}x ({verdict} goal <= {GOAL_NETWORK}x)")
        for bs in sorted({r["batch_size"] for r in net["sweep"]}):
            rows = sorted((r for r in net["sweep"] if r["batch_size"] == bs), key=lambda r: r["workers"])
            stop = rows[-1]["workers"]
            for a, b in itertools.pairwise(rows):
                if b["seconds"] > a["seconds"] * 0.95:  # less than 5% better: stopped improving
                    stop = a["workers"]
                    break
            line(f"batch {bs}: stops improving (<5%) after workers", str(stop))


if __name__ == "__main__":
    raise SystemExit(main())
