"""The migration measured on the engine: Qdrant Edge (issue 19). Ratios within one run, never absolute claims.

Run from the project root::

    .venv/bin/python benchmarks/edge_bench.py [--scales 1,10] [--rounds 1] [--json out.json]

Per scale, on a copy of the cached sample ChromaDB (``_common.sample_db``), each job in a fresh process:

1. ``runbook migrate`` (the CLI: papermill, kernel, HTML) into a fresh ``QDRANT_EDGE_PATH``, against **the simplest
   correct script into Edge**: it copies the source directory, reads each collection by id chunks, maps per the SPEC
   (``point_id``, ``build_payload``), upserts into one shard per collection (dimension, distance and Chroma's HNSW
   parameters), flushes, creates the payload indexes the runbook plans (each metadata key, typed from its values, and
   the document's full-text index), builds the HNSW index with ``optimize()``
   and checks every count. Goal: runbook <= 0.8x the script.
2. **The copy** (``copy_collection`` of every collection, summed, from an in-process migrate with timers around
   the library's functions) against the slower of the **bare Chroma read** (``col.get`` by id chunks, nothing
   kept) and the **bare Edge upsert floor** (the same points prebuilt as ``qdrant_edge.Point``, upserted in the
   same batches and flushed). Goal: copy <= 1.2x the slower of the two. The HNSW build is timed apart.
3. **Peak RSS** of the runbook's migrate (the largest process of its tree: the kernel), scale N / scale 1.
   Goal <= 1.5x.
4. **Sync** with 1 % of the records changed in ChromaDB (``runbook sync --run-id``, CLI) against the CLI migrate.
   Goal <= 0.1x.
5. Where the engine holds the GIL (``edge_gil_probe.py`` in a child).

It is a script, not a test: nothing asserts; it prints each goal met or not, with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import ROOT, SERVER_VARIABLES, mib, sample_db

GOAL_RUNBOOK = 0.8  # runbook migrate / the simplest script
GOAL_COPY = 1.2  # copy / max(bare read, Edge floor)
GOAL_RSS = 1.5  # peak RSS scale N / scale 1
GOAL_SYNC = 0.1  # sync with 1 % changed / migrate
INCLUDE_ALL = ["embeddings", "documents", "metadatas", "uris"]


def now() -> float:
    return time.perf_counter()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


def peak_rss() -> int:
    """This process's peak RSS (``VmHWM``: ``ru_maxrss`` carries over ``execve`` from the parent)."""
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # pragma: no cover


def edge_env(live: Path, edge: Path, outputs: Path) -> dict[str, str]:
    """The environment of a runbook process that migrates ``live`` into Qdrant Edge at ``edge``."""
    environment = {k: v for k, v in os.environ.items() if k not in (*SERVER_VARIABLES, "QDRANT_PATH")}
    environment.update(
        CHROMA_PERSIST_DIR=str(live),
        QDRANT_EDGE_PATH=str(edge),
        RUNBOOK_OUTPUTS=str(outputs),
        RUNBOOK_PROGRESS="off",
        MPLBACKEND="Agg",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    return environment


# ------------------------------------------------------------------------------ the simplest correct script
def _collection_config(col: Any) -> dict[str, Any]:
    for attr in ("configuration_json", "configuration"):
        try:
            value = getattr(col, attr)
        except Exception:
            continue
        if isinstance(value, dict):
            return value
    return {}


def edge_config(dim: int, distance: str, hnsw: dict[str, int]) -> Any:
    import qdrant_edge as qe

    graph = {"m": 16, "ef_construct": 100, **hnsw}
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(
            size=dim, distance=getattr(qe.Distance, distance), datatype=qe.VectorStorageDatatype.Float32
        ),
        hnsw_config=qe.HnswIndexConfig(m=graph["m"], ef_construct=graph["ef_construct"], full_scan_threshold=10_000),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
    )


def simple_script(live: Path, work: Path, batch_size: int) -> dict[str, Any]:
    """Copy the directory, then per collection: read by id chunks, map, upsert, flush, payload indexes, optimize,
    count. Sequential, one thread."""
    started = now()
    import chromadb
    import numpy as np
    import qdrant_edge as qe

    from runbook_lib.core.layouts import Layout
    from runbook_lib.core.mapping import build_payload, chroma_space, point_id, qdrant_distance
    from runbook_lib.core.payload_indexes import add_key_types, plan_payload_indexes
    from runbook_lib.steps.migrate.shape import hnsw_params

    imported = now()
    layout = Layout()  # the SPEC layout: its payload indexes are the runbook's (metadata keys + the document text)
    plain = shutil.copytree(live, work / "plain_copy")
    copied = now()
    chroma = chromadb.PersistentClient(path=str(plain))
    root = work / "edge"
    root.mkdir()
    schema = {
        "keyword": qe.PayloadSchemaType.Keyword,
        "integer": qe.PayloadSchemaType.Integer,
        "float": qe.PayloadSchemaType.Float,
        "bool": qe.PayloadSchemaType.Bool,
    }
    records, counts, index_s = 0, {}, 0.0
    for name in sorted(c.name for c in chroma.list_collections()):
        col = chroma.get_collection(name)
        ids = sorted(col.get(include=[])["ids"])
        if not ids:
            continue
        config = _collection_config(col)
        distance = qdrant_distance(chroma_space(col.metadata, config))
        shard, dim = None, None
        key_types: dict[str, set[str]] = {}
        documents = 0
        for start in range(0, len(ids), batch_size):
            got = col.get(ids=ids[start : start + batch_size], include=INCLUDE_ALL)  # type: ignore[arg-type]
            vectors = np.asarray(got["embeddings"], dtype=np.float32)
            if shard is None:
                dim = vectors.shape[1]
                hnsw = hnsw_params(config, col.metadata or {})
                shard = qe.EdgeShard.create(str(root / name), edge_config(dim, distance, hnsw))
            if vectors.shape[1] != dim:
                raise SystemExit(f"{name}: dimension {vectors.shape[1]}, expected {dim}")
            uris = got.get("uris") or [None] * len(got["ids"])
            metadatas = got["metadatas"] or [None] * len(got["ids"])
            add_key_types(key_types, metadatas)
            documents += sum(d is not None for d in got["documents"])
            points = [
                qe.Point(id=point_id(i), vector=v, payload=build_payload(i, d, m, u))
                for i, v, d, m, u in zip(got["ids"], vectors, got["documents"], metadatas, uris, strict=True)
            ]
            shard.update(qe.UpdateOperation.upsert_points(points))
            records += len(points)
        assert shard is not None
        shard.flush()
        t0 = now()
        indexes, _ = plan_payload_indexes(
            key_types,
            "auto",
            collection=name,
            flat=layout.flat,
            document_path=layout.document_path,
            has_documents=documents > 0,
        )
        for index in indexes:
            kind = (
                qe.TextIndexParams(tokenizer=qe.TokenizerType.Word, lowercase=False)
                if index.index_type == "text"
                else schema[index.index_type]
            )
            shard.update(qe.UpdateOperation.create_field_index(index.path, kind))
        shard.optimize()
        shard.flush()
        index_s += now() - t0
        found = shard.count(qe.CountRequest(exact=True))
        if found != len(ids):
            raise SystemExit(f"count check failed for {name}: {len(ids)} in ChromaDB, {found} in Edge")
        counts[name] = found
        shard.close()
    done = now()
    return {
        "records": records,
        "collections": len(counts),
        "in_process_s": done - started,
        "imports_s": imported - started,
        "copy_dir_s": copied - imported,
        "read_map_write_s": done - copied - index_s,
        "index_s": index_s,
        "peak_rss": peak_rss(),
    }


# ------------------------------------------------------------------------------ the bare read and the floor
def _read_all(live: Path, work: Path, batch_size: int, keep: Callable[[str, Any, Any], None] | None) -> dict[str, Any]:
    import chromadb

    plain = shutil.copytree(live, work / "plain_copy")
    client = chromadb.PersistentClient(path=str(plain))
    started, n = now(), 0
    for name in sorted(c.name for c in client.list_collections()):
        col = client.get_collection(name)
        ids = sorted(col.get(include=[])["ids"])
        for start in range(0, len(ids), batch_size):
            got = col.get(ids=ids[start : start + batch_size], include=INCLUDE_ALL)  # type: ignore[arg-type]
            n += len(got["ids"])
            if keep is not None:
                keep(name, col, got)
        if keep is not None:
            keep(name, col, None)  # the collection is complete
    return {"records": n, "seconds": now() - started, "peak_rss": peak_rss()}


def bare_read(live: Path, work: Path, batch_size: int) -> dict[str, Any]:
    """chromadb's own loop over a plain copy: ids, then ``get`` by id chunks with everything; nothing kept."""
    return _read_all(live, work, batch_size, None)


def edge_floor(live: Path, work: Path, batch_size: int) -> dict[str, Any]:
    """Per collection, the points prebuilt as ``qdrant_edge.Point`` (untimed), then timed: create the shard, upsert
    the same batches, flush; the HNSW build (optimize + flush) timed apart."""
    import gc

    import numpy as np
    import qdrant_edge as qe

    from runbook_lib.core.mapping import build_payload, chroma_space, point_id, qdrant_distance
    from runbook_lib.steps.migrate.shape import hnsw_params

    root = work / "edge"
    root.mkdir()
    batches: list[list[Any]] = []
    out = {"upsert_flush_s": 0.0, "index_s": 0.0, "points": 0}

    def keep(name: str, col: Any, got: Any) -> None:
        if got is not None:
            vectors = np.asarray(got["embeddings"], dtype=np.float32)
            uris = got.get("uris") or [None] * len(got["ids"])
            metadatas = got["metadatas"] or [None] * len(got["ids"])
            batches.append(
                [
                    qe.Point(id=point_id(i), vector=v, payload=build_payload(i, d, m, u))
                    for i, v, d, m, u in zip(got["ids"], vectors, got["documents"], metadatas, uris, strict=True)
                ]
            )
            keep.dim = vectors.shape[1]  # type: ignore[attr-defined]
            return
        if not batches:
            return
        config = _collection_config(col)
        cfg = edge_config(
            keep.dim,  # type: ignore[attr-defined]
            qdrant_distance(chroma_space(col.metadata, config)),
            hnsw_params(config, col.metadata or {}),
        )
        gc.collect()
        gc.freeze()
        t0 = now()
        shard = qe.EdgeShard.create(str(root / name), cfg)
        for points in batches:
            shard.update(qe.UpdateOperation.upsert_points(points))
        shard.flush()
        t1 = now()
        shard.optimize()
        shard.flush()
        t2 = now()
        gc.unfreeze()
        out["upsert_flush_s"] += t1 - t0
        out["index_s"] += t2 - t1
        out["points"] += sum(len(b) for b in batches)
        shard.close()
        batches.clear()

    read = _read_all(live, work, batch_size, keep)
    return {**out, "peak_rss": read["peak_rss"]}


# ------------------------------------------------------------------------------ the copy, timed in process
def copy_in_process(live: Path, work: Path, batch_size: int) -> dict[str, Any]:
    """The migrate step as its notebook calls it, with timers around the library's functions (nothing edited)."""
    for key, value in edge_env(live, work / "edge", work / "outputs").items():
        os.environ[key] = value
    for key in (*SERVER_VARIABLES, "QDRANT_PATH"):
        os.environ.pop(key, None)
    from runbook_lib.chroma.source import ChromaSource
    from runbook_lib.kernel.step import begin
    from runbook_lib.qdrant.edge import EdgeTarget
    from runbook_lib.steps.migrate import engine, pipeline
    from runbook_lib.steps.migrate.engine import migrate

    spent: dict[str, float] = {}

    def timer(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **k: Any) -> Any:
            t0 = now()
            try:
                return fn(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + now() - t0

        return wrapped

    engine.copy_collection = timer("copy", engine.copy_collection)  # type: ignore[assignment]
    pipeline.to_points = timer("reader: to_points", pipeline.to_points)  # type: ignore[assignment]
    ChromaSource.fetch = timer("reader: fetch", ChromaSource.fetch)  # type: ignore[method-assign]
    EdgeTarget.upsert = timer("writer: upsert", EdgeTarget.upsert)  # type: ignore[method-assign]
    EdgeTarget.finish_bulk_load = timer("HNSW build (finish_bulk_load)", EdgeTarget.finish_bulk_load)  # type: ignore[method-assign]
    t0 = now()
    step = begin("migrate", batch_size=batch_size)
    result = step.execute(migrate)
    total = now() - t0
    return {"total_s": total, "records": result.total_records, "spent": spent, "peak_rss": peak_rss()}


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
    """(child) run ``cmd``; its wall time, exit code and the largest peak RSS of its process tree."""
    started = now()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = now() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "rc": proc.returncode,
        "wall_s": wall,
        "peak_rss": peak_kib * 1024,
        "tail": (proc.stdout + proc.stderr)[-1500:],
    }


def runbook_cli(environment: dict[str, str], *argv: str) -> dict[str, Any]:
    out = child("rusage", "--", sys.executable, "-m", "runbook_lib.cli", *argv, env=environment)
    if out["rc"] != 0:
        raise RuntimeError(f"runbook {' '.join(argv)} failed ({out['rc']}): {out['tail']}")
    return out


def run_dir_of(outputs: Path) -> Path:
    return next(p for p in outputs.iterdir() if p.is_dir())


def migrate_rows(run_dir: Path) -> dict[str, Any]:
    result = json.loads((run_dir / "02_migrate.json").read_text())
    rows = result.get("collections") or result.get("rows") or []
    return {
        "migrate_fn_s": float(result.get("seconds") or 0.0),
        "rows_s": sum(float(r.get("seconds") or 0.0) for r in rows),
        "records": sum(int(r.get("records") or 0) for r in rows if r.get("status") == "done"),
    }


# ------------------------------------------------------------------------------ one scale
def per_scale(scale: float, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    db, created = sample_db(scale, args.seed, args.dim, progress=True)
    work = tmp / f"scale{scale:g}"
    work.mkdir()
    live = shutil.copytree(db, work / "chroma_db")  # the "live" directory every job starts from (untimed)
    rep: dict[str, Any] = {"scale": scale, "sample_created_s": created, "load_before": load_average()}
    rep["runbook"], rep["script"] = [], []
    keep: dict[str, Any] = {}
    for r in range(args.rounds):
        order = ("runbook", "script") if r % 2 == 0 else ("script", "runbook")
        for kind in order:
            job = work / f"{kind}{r}"
            job.mkdir()
            if kind == "runbook":
                environment = edge_env(live, job / "edge", job / "outputs")
                out = runbook_cli(environment, "migrate")
                out.update(migrate_rows(run_dir_of(job / "outputs")))
                rep["runbook"].append(out)
                shutil.rmtree(Path(f"{live}.backup"), ignore_errors=True)
                if r == args.rounds - 1:
                    keep = {"job": job, "env": environment, "run_id": run_dir_of(job / "outputs").name}
                else:
                    shutil.rmtree(job, ignore_errors=True)
            else:
                rep["script"].append(child("script", str(live), str(job), str(args.batch_size)))
                shutil.rmtree(job, ignore_errors=True)
            print(f"  scale {scale:g} round {r + 1}: {kind} done ({load_average()})", flush=True)
    for kind, fn in (("read", "read"), ("floor", "floor"), ("copy", "copy")):
        job = work / kind
        job.mkdir()
        rep[kind] = child(fn, str(live), str(job), str(args.batch_size))
        shutil.rmtree(job, ignore_errors=True)
        shutil.rmtree(Path(f"{live}.backup"), ignore_errors=True)
        print(f"  scale {scale:g}: {kind} done ({load_average()})", flush=True)
    if not args.skip_sync and keep:
        from sync_bench import _change

        rep["changed_records"] = _change(live, args.changed)
        rep["sync"] = runbook_cli(keep["env"], "sync", "--run-id", keep["run_id"])
        print(f"  scale {scale:g}: sync done ({load_average()})", flush=True)
    rep["load_after"] = load_average()
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(Path(f"{live}.backup"), ignore_errors=True)
    return rep


# ------------------------------------------------------------------------------ report
def median(values: Sequence[float]) -> float:
    import statistics

    return statistics.median(values)


def line(label: str, value: str) -> None:
    print(f"  {label:<58s} {value}")


def verdict(ratio: float, goal: float) -> str:
    return f"{'MET' if ratio <= goal else 'NOT MET'} (goal <= {goal}x)"


def print_report(rep: dict[str, Any]) -> None:
    print(
        f"\n=== Qdrant Edge benchmark {rep['date']} · {rep['machine']['cpus']} CPUs · qdrant-edge-py "
        f"{rep['machine']['qdrant_edge']} · load average {rep['load_at_start']} -> {rep['load_at_end']}"
    )
    for s in rep["scales"]:
        rb = median([r["wall_s"] for r in s["runbook"]])
        sc = median([r["wall_s"] for r in s["script"]])
        script = s["script"][-1]
        print(f"scale {s['scale']:g} ({script['records']:,} records; rounds {len(s['runbook'])}, medians)")
        line("1. runbook migrate (CLI, fresh process tree)", f"{rb:.2f} s")
        line("   simplest correct script into Edge (fresh process)", f"{sc:.2f} s")
        line(
            "     script: imports / copy dir / read+map+write / indexes+HNSW",
            f"{script['imports_s']:.2f} / {script['copy_dir_s']:.2f} / {script['read_map_write_s']:.2f} / "
            f"{script['index_s']:.2f} s",
        )
        rows = s["runbook"][-1]
        line(
            "     runbook: migrate() / its collections' rows",
            f"{rows['migrate_fn_s']:.2f} / {rows['rows_s']:.2f} s (the rest: runner, kernel, backup, HTML)",
        )
        line("   runbook / script", f"{rb / sc:.3f}x  {verdict(rb / sc, GOAL_RUNBOOK)}")
        cp, rd, fl = s["copy"], s["read"], s["floor"]
        copy_s = cp["spent"].get("copy", 0.0)
        bound = max(rd["seconds"], fl["upsert_flush_s"])
        line("2. copy (copy_collection, all collections, in process)", f"{copy_s:.2f} s")
        line("   bare Chroma read (ids + get by chunks)", f"{rd['seconds']:.2f} s")
        line("   bare Edge floor (prebuilt points: upsert + flush)", f"{fl['upsert_flush_s']:.2f} s")
        line("   copy / max(read, floor)", f"{copy_s / bound:.3f}x  {verdict(copy_s / bound, GOAL_COPY)}")
        line(
            "   copy / (read + floor): 1.0 = no overlap at all",
            f"{copy_s / (rd['seconds'] + fl['upsert_flush_s']):.3f}x",
        )
        for label, value in sorted(cp["spent"].items()):
            if label != "copy":
                line(f"     in process: {label}", f"{value:.2f} s")
        line("   HNSW build alone (floor: optimize + flush)", f"{fl['index_s']:.2f} s")
        line("   in-process migrate() total", f"{cp['total_s']:.2f} s")
        peaks = (max(r["peak_rss"] for r in s["runbook"]), script["peak_rss"], rd["peak_rss"])
        line(
            "3. peak RSS: runbook (largest process) / script / bare read",
            " / ".join(f"{mib(p):.0f}" for p in peaks) + " MiB",
        )
        if "sync" in s:
            ratio = s["sync"]["wall_s"] / rb
            line(
                f"4. sync with {s['changed_records']:,} changed (CLI)",
                f"{s['sync']['wall_s']:.2f} s = {ratio:.3f}x migrate  {verdict(ratio, GOAL_SYNC)}",
            )
    if len(rep["scales"]) > 1:
        lo, hi = rep["scales"][0], rep["scales"][-1]
        ratios = [max(r["peak_rss"] for r in hi[k]) / max(r["peak_rss"] for r in lo[k]) for k in ("runbook", "script")]
        bare = hi["read"]["peak_rss"] / lo["read"]["peak_rss"]
        line(
            f"3. peak RSS scale {hi['scale']:g} / scale {lo['scale']:g}: runbook",
            f"{ratios[0]:.2f}x  {verdict(ratios[0], GOAL_RSS)} (script {ratios[1]:.2f}x, bare read {bare:.2f}x)",
        )
    gil = rep.get("gil")
    if gil:
        print("5. the GIL: a Python thread's rate while the engine call runs / its rate alone (1.0 = released)")
        for name in (
            "sleep",
            "python_loop",
            "build Point objects",
            "update (upsert one batch)",
            "flush",
            "optimize (HNSW build)",
        ):
            line(f"   {name}", f"{gil[name]:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scales", default="1,10", help="sample scales (default 1,10; the first is the RSS base)")
    parser.add_argument("--rounds", type=int, default=1, help="runbook/script rounds per scale, order alternating")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=256, help="the script's batch (the runbook's default)")
    parser.add_argument("--changed", type=float, default=0.01, help="share of records the app changes before sync")
    parser.add_argument("--skip-sync", action="store_true")
    parser.add_argument("--skip-gil", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument("--print", type=Path, dest="print_json", help="print the report of an earlier --json")
    parser.add_argument("--_child", choices=["script", "read", "floor", "copy", "rusage"], help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.print_json:
        print_report(json.loads(args.print_json.read_text()))
        return 0
    if args._child == "rusage":
        print(json.dumps(run_with_rusage(args.rest)))
        return 0
    if args._child:
        fn = {"script": simple_script, "read": bare_read, "floor": edge_floor, "copy": copy_in_process}[args._child]
        print(json.dumps(fn(Path(args.rest[0]), Path(args.rest[1]), int(args.rest[2]))))
        return 0
    from importlib import metadata

    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "qdrant_edge": metadata.version("qdrant-edge-py"),
        },
        "load_at_start": load_average(),
        "scales": [],
    }
    if not args.skip_gil:
        probe = Path(__file__).with_name("edge_gil_probe.py")
        proc = subprocess.run(
            [sys.executable, str(probe), "--json", "--points", "2048", "--rounds", "2"],
            capture_output=True,
            text=True,
            check=True,
            cwd=str(ROOT),
        )
        report["gil"] = json.loads(proc.stdout.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        for scale in [float(s) for s in args.scales.split(",") if s.strip()]:
            report["scales"].append(per_scale(scale, args, Path(tmp)))
            save(report, args.json)
    report["load_at_end"] = load_average()
    save(report, args.json)
    print_report(report)
    return 0


def save(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.write_text(json.dumps({"load_at_end": load_average(), **report}, indent=2, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
