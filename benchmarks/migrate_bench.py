"""Benchmark of the migrate step against its floor, the read pipeline against a bare read, and memory.

Run from the project root::

    .venv/bin/python benchmarks/migrate_bench.py [--scale 1] [--batch-size 256] [--json out.json]

What it measures, all in one run on the sample ChromaDB (cached under ``$TMPDIR/runbook-bench-cache``):

1. the real migrate step (``begin("migrate")`` + ``step.execute(migrate)``, as the notebook calls it) into
   qdrant-client's local mode: total wall time, the copy part (the result rows' seconds) and the
   backup + scratch-copy part;
2. the floor: a bare loop upserting the same points (prepared in memory beforehand, untimed) into a
   fresh local-mode Qdrant with the same collections, distances and batch size;
3. their ratio (goal: copy <= 1.15x floor);
4. the read pipeline (``ChromaSource.snapshot_ids`` + ``fetch`` + ``to_points``) against a bare
   ``collection.get(ids=chunk, include=[...])`` loop over the same chunks (goal: >= 0.9x the bare rate);
5. peak RSS of the read pipeline at two scales, each in a fresh child process (goal: scale 10 within
   ~1.2x of scale 1), and the memory qdrant-client's local mode itself holds for the scale-1 points.

``--variants`` adds the investigation: prototypes of the suggested library changes, timed against the
current code in the same run (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    Clock,
    Coll,
    Reader,
    bare_read,
    best_and_median,
    chunks,
    collections_of,
    copy_tree,
    create_like,
    env,
    fetch_only,
    floor_loop,
    local_env,
    map_batch,
    mib,
    open_source,
    patched,
    peak_rss_bytes,
    qdrant_client_at,
    read_pipeline,
    reset_peak_rss,
    rss_bytes,
    sample_db,
    upsert_batch,
)

import runbook_lib.steps.migrate.engine as migrate_mod
import runbook_lib.steps.migrate.pipeline as pipeline_mod
from runbook_lib.chroma.source import ChromaSource
from runbook_lib.qdrant.target import QdrantTarget
from runbook_lib.state.checkpoint import Checkpoint
from runbook_lib.steps.migrate.pipeline import Points

#: Context quoted next to our rate: the seed migration guide and Qdrant's own migration tool.
GUIDE_RECORDS = 14_365
GUIDE_MINUTES = (5.0, 10.0)
QDRANT_TOOL_POINTS_PER_S = 880.0

GOAL_COPY_RATIO = 1.15
GOAL_READ_RATIO = 0.9
GOAL_RSS_RATIO = 1.2

BASE_READERS: dict[str, Reader] = {"pipeline": read_pipeline, "fetch_only": fetch_only, "bare": bare_read}


def all_readers() -> dict[str, Reader]:
    import _variants

    return {**BASE_READERS, **_variants.READERS}


# ------------------------------------------------------------------------------ 1. the real migration
def measure_migration(db: Path, batch_size: int, work: Path) -> dict[str, Any]:
    """Run the migrate step exactly as the notebook does, on a private copy of the sample."""
    from runbook_lib.kernel.step import begin
    from runbook_lib.steps.migrate.engine import migrate

    work.mkdir(parents=True)
    persist = copy_tree(db, work / "chroma_db")  # untimed: the step backs up and scratch-copies it itself
    clock = Clock()
    with (
        env(**local_env(persist, work / "qdrant", work / "outputs")),
        patched(migrate_mod, "_prepare_source", clock.wrap("backup_and_scratch")),
        patched(migrate_mod, "create_backup", clock.wrap("backup")),
        patched(migrate_mod, "migrate_charts", clock.wrap("charts")),
        patched(QdrantTarget, "upsert", clock.wrap("upsert")),
        patched(Checkpoint, "save", clock.wrap("checkpoint_save")),
        patched(ChromaSource, "fetch", clock.wrap("fetch")),
        patched(pipeline_mod, "to_points", clock.wrap("to_points")),
    ):
        gc.collect()
        started = time.perf_counter()
        step = begin("migrate", batch_size=batch_size)
        result = step.execute(migrate)
        total = time.perf_counter() - started
    copy = sum(float(r["seconds"]) for r in result.rows)
    backup_and_scratch = clock.seconds.get("backup_and_scratch", 0.0)
    backup = clock.seconds.get("backup", 0.0)
    return {
        "ok": result.ok,
        "records": result.total_records,
        "total_s": total,
        "step_seconds": result.seconds,
        "copy_s": copy,
        "backup_and_scratch_s": backup_and_scratch,
        "backup_s": backup,
        "scratch_copy_s": backup_and_scratch - backup,
        "charts_s": clock.seconds.get("charts", 0.0),
        "other_s": total - copy - backup_and_scratch - clock.seconds.get("charts", 0.0),
        "writer_upsert_s": clock.seconds.get("upsert", 0.0),
        "reader_fetch_s": clock.seconds.get("fetch", 0.0),
        "reader_to_points_s": clock.seconds.get("to_points", 0.0),
        "checkpoint_saves": clock.calls.get("checkpoint_save", 0),
        "checkpoint_s": clock.seconds.get("checkpoint_save", 0.0),
        "per_collection": [
            {"collection": r["collection"], "records": r["records"], "seconds": r["seconds"]} for r in result.rows
        ],
    }


# ------------------------------------------------------------------------------------------ 2. floor
@dataclass
class Prepared:
    coll: Coll
    batches: list[Points]


def _as_lists(points: Any) -> Any:
    """The floor gets its vectors as ready-made lists: none of the conversion the migration pays."""
    if hasattr(points.vectors, "tolist"):
        points.vectors = points.vectors.tolist()
    return points


def prepare_points(db: Path, batch_size: int) -> list[Prepared]:
    """The points the migration writes, in the same order and batches, built in memory (untimed)."""
    with open_source(db) as source:
        out = []
        for coll in collections_of(source):
            ids = source.snapshot_ids(coll.name)
            out.append(
                Prepared(
                    coll,
                    [
                        _as_lists(map_batch(k, source.fetch(coll.name, chunk, expected_dim=coll.dim), coll))
                        for k, chunk in enumerate(chunks(ids, batch_size))
                    ],
                )
            )
    return out


def measure_floor(prepared: list[Prepared], work: Path) -> dict[str, Any]:
    client = qdrant_client_at(work)
    try:
        elapsed = floor_loop(client, prepared)
        n = sum(client.count(p.coll.name, exact=True).count for p in prepared)
    finally:
        client.close()
    return {"seconds": elapsed, "points": n}


# ------------------------------------------------------------------------------------------ 4. reads
def measure_reads(db: Path, batch_size: int, repeat: int, readers: dict[str, Reader]) -> dict[str, Any]:
    """Each reader over every collection, ``repeat`` interleaved rounds (order rotates), best kept."""
    names = list(readers)
    with open_source(db) as source:
        colls = collections_of(source)
        read_pipeline(source, colls, batch_size)  # warm the page cache and chromadb's caches
        times: dict[str, list[float]] = {k: [] for k in names}
        n_rec = 0
        for round_ in range(repeat):
            shift = round_ % len(names)
            for kind in names[shift:] + names[:shift]:
                gc.collect()
                started = time.perf_counter()
                n_rec = readers[kind](source, colls, batch_size)
                times[kind].append(time.perf_counter() - started)
    out: dict[str, Any] = {"records": n_rec, "repeat": repeat}
    for kind, values in times.items():
        best, median = best_and_median(values)
        out[kind] = {"best_s": best, "median_s": median, "records_per_s": n_rec / best, "all_s": values}
    for kind in names:
        if kind != "bare":
            out[kind]["vs_bare"] = out[kind]["records_per_s"] / out["bare"]["records_per_s"]
    return out


# ---------------------------------------------------------------------------------- 5. memory (child)
def ids_bytes(ids: list[str]) -> int:
    return sys.getsizeof(ids) + sum(sys.getsizeof(i) for i in ids)


def _release(source: Any) -> None:
    source.release()


def child_read_rss(db: Path, batch_size: int, reader_name: str) -> dict[str, Any]:
    """In a fresh process: peak RSS of opening the source and reading every collection into a sink.

    ``peak_rss`` is the whole process (imports, scratch copy, inspecting the collections, reading);
    ``peak_during_read`` restarts the high-water mark just before the read.
    """
    reader = all_readers()[reader_name]
    # the library's reader frees each collection after use (ChromaSource.release); the bare loop does not
    after_each = None if reader_name.startswith("bare") else _release
    with open_source(db) as source:
        colls = collections_of(source, after_each)
        biggest = max(colls, key=lambda c: c.count)
        ids_size = ids_bytes(source.snapshot_ids(biggest.name))
        if after_each is not None:
            after_each(source)
        gc.collect()
        before, peak_before = rss_bytes(), peak_rss_bytes()
        reset = reset_peak_rss()
        started = time.perf_counter()
        n = reader(source, colls, batch_size)
        seconds = time.perf_counter() - started
        after, peak_read = rss_bytes(), peak_rss_bytes()
    return {
        "reader": reader_name,
        "records": n,
        "largest_collection": biggest.count,
        "largest_ids_list_bytes": ids_size,
        "rss_before_read": before,
        "peak_before_read": peak_before,
        "rss_after_read": after,
        "peak_during_read": peak_read if reset else None,
        "peak_rss": max(peak_read, peak_before),
        "seconds": seconds,
    }


def child_qdrant_rss(db: Path, batch_size: int) -> dict[str, Any]:
    """In a fresh process: how much memory local mode keeps for the points it holds.

    The read pipeline runs once into a sink first (so chromadb's caches are warm and counted in the
    baseline), then again into a local-mode client; the RSS growth of the second pass is local mode's.
    """
    with tempfile.TemporaryDirectory(prefix="bench-qdrant-rss-") as tmp, open_source(db) as source:
        colls = collections_of(source)
        read_pipeline(source, colls, batch_size)
        client = qdrant_client_at(Path(tmp) / "qdrant")
        gc.collect()
        before = rss_bytes()
        n = 0
        for coll in colls:
            create_like(client, coll)
            ids = source.snapshot_ids(coll.name)
            for k, chunk in enumerate(chunks(ids, batch_size)):
                p = map_batch(k, source.fetch(coll.name, chunk, expected_dim=coll.dim), coll)
                upsert_batch(client, coll.name, p)
                n += len(p.ids)
                del p
        gc.collect()
        after = rss_bytes()
        raw_vectors = sum(c.count * c.dim * 4 for c in colls)
        client.close()
    return {"points": n, "rss_before": before, "rss_after": after, "growth": after - before, "raw_vectors": raw_vectors}


def run_child(mode: str, scale: float, args: argparse.Namespace, reader: str = "pipeline") -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", mode, "--_reader", reader]
    cmd += ["--scale", f"{scale:g}", "--seed", str(args.seed), "--dim", str(args.dim)]
    cmd += ["--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode}/{reader} at scale {scale:g} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"    child {mode}/{reader} at scale {scale:g} done", flush=True)
    return result


# ------------------------------------------------------------------------------------------ main
def line(label: str, value: str) -> None:
    print(f"  {label:<48s} {value}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="sample scale for sections 1-4 (default 1)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the read comparison (best is kept)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of migration + floor (best of each is kept)")
    parser.add_argument("--rss-scales", default="1,10", help="scales for the peak-RSS children ('' to skip)")
    parser.add_argument("--skip-qdrant-rss", action="store_true", help="skip local mode's own memory")
    parser.add_argument("--variants", action="store_true", help="also time the prototyped library changes")
    parser.add_argument("--variant-rounds", type=int, help="rounds of the copy variants (default: --rounds)")
    parser.add_argument(
        "--variants-target-dir",
        type=Path,
        help="parent folder of the variants' local-mode Qdrant storage, e.g. /dev/shm to take fsync out "
        "and compare the CPU cost of the variants (default: the system temp folder)",
    )
    parser.add_argument("--_child", choices=["read-rss", "qdrant-rss"], help=argparse.SUPPRESS)
    parser.add_argument("--_reader", default="pipeline", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args._child:
        db, _ = sample_db(args.scale, args.seed, args.dim)
        if args._child == "read-rss":
            print(json.dumps(child_read_rss(db, args.batch_size, args._reader)))
        else:
            print(json.dumps(child_qdrant_rss(db, args.batch_size)))
        return 0

    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "params": {"scale": args.scale, "seed": args.seed, "dim": args.dim, "batch_size": args.batch_size},
        "env": {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")},
    }
    rss_scales = [float(s) for s in args.rss_scales.split(",") if s.strip()]
    created: dict[str, float] = {}
    for scale in dict.fromkeys([args.scale, *rss_scales]):
        _, seconds = sample_db(scale, args.seed, args.dim, progress=True)
        created[f"{scale:g}"] = seconds
    db, _ = sample_db(args.scale, args.seed, args.dim)
    report["sample_created_s"] = created
    print(f"sample: {db} (scale {args.scale:g}, seed {args.seed}, dim {args.dim}); created now: {created}", flush=True)

    with tempfile.TemporaryDirectory(prefix="migrate-bench-") as tmp:
        work = Path(tmp)
        # the floor's points, prepared once (untimed) and frozen out of the garbage collector's way
        prepared = prepare_points(db, args.batch_size)
        gc.collect()
        gc.freeze()
        migrations: list[dict[str, Any]] = []
        floors: list[dict[str, Any]] = []
        for r in range(args.rounds):
            # alternate which goes first, so a slow stretch of the disk does not always hit the same one
            for kind in ("migration", "floor") if r % 2 == 0 else ("floor", "migration"):
                if kind == "migration":
                    migrations.append(measure_migration(db, args.batch_size, work / f"migration-{r}"))
                else:
                    floors.append(measure_floor(prepared, work / f"floor-{r}"))
                print(f"    round {r + 1}/{args.rounds}: {kind} done", flush=True)
        mig = min(migrations, key=lambda m: m["copy_s"])
        floor = min(floors, key=lambda f: f["seconds"])
        report["migration"] = mig
        report["migration_all"] = migrations
        report["floor"] = floor
        report["floor_all_s"] = [f["seconds"] for f in floors]
        report["copy_vs_floor"] = mig["copy_s"] / floor["seconds"]
        report["copy_vs_floor_paired"] = [m["copy_s"] / f["seconds"] for m, f in zip(migrations, floors, strict=True)]
        if args.variants:
            import _variants

            vdir = Path(tempfile.mkdtemp(prefix="migrate-bench-variants-", dir=args.variants_target_dir))
            try:
                rounds = args.variant_rounds or args.rounds
                report["variants"] = _variants.run_all(prepared, db, args.batch_size, vdir, rounds)
                report["variants"]["target_dir"] = str(vdir.parent)
            finally:
                shutil.rmtree(vdir, ignore_errors=True)
        gc.unfreeze()
        del prepared
        gc.collect()
        readers = all_readers() if args.variants else BASE_READERS
        print("  reads ...", flush=True)
        report["reads"] = measure_reads(db, args.batch_size, args.repeat, readers)

    # memory, each in a fresh child process
    rss_readers = ["pipeline", "bare"] + (["deferred", "release", "deferred_release"] if args.variants else [])
    report["read_rss"] = {
        reader: {f"{s:g}": run_child("read-rss", s, args, reader) for s in rss_scales} for reader in rss_readers
    }
    if not args.skip_qdrant_rss:
        report["qdrant_local_rss"] = run_child("qdrant-rss", 1.0, args)

    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


def rss_ratio(by_scale: dict[str, dict[str, Any]]) -> float | None:
    scales = list(by_scale)
    if len(scales) < 2:
        return None
    lo, hi = by_scale[scales[0]], by_scale[scales[-1]]
    return float((hi["peak_rss"] - hi["largest_ids_list_bytes"]) / (lo["peak_rss"] - lo["largest_ids_list_bytes"]))


def print_report(rep: dict[str, Any]) -> None:
    mig, floor, reads = rep["migration"], rep["floor"], rep["reads"]
    n = mig["records"]
    print(f"\n=== migrate benchmark {rep['date']} · {rep['machine']['cpus']} CPUs · params {rep['params']}")
    print("1. migration (begin('migrate') + step.execute(migrate), local-mode Qdrant)")
    line("records", f"{n:,} ({'ok' if mig['ok'] else 'FAILED'})")
    line("total wall time", f"{mig['total_s']:.2f} s  ({n / mig['total_s']:.0f} rec/s)")
    line("copy (sum of result rows' seconds)", f"{mig['copy_s']:.2f} s  ({n / mig['copy_s']:.0f} rec/s)")
    line("backup + scratch copy", f"{mig['backup_and_scratch_s']:.2f} s")
    line("  of which backup (copy + sha256 + verify)", f"{mig['backup_s']:.2f} s")
    line("  of which scratch copy + open chromadb", f"{mig['scratch_copy_s']:.2f} s")
    line("charts", f"{mig['charts_s']:.2f} s")
    line("other (begin, plan, id snapshots, JSON)", f"{mig['other_s']:.2f} s")
    line("inside copy: writer in QdrantTarget.upsert", f"{mig['writer_upsert_s']:.2f} s")
    line("inside copy: reader fetch / to_points", f"{mig['reader_fetch_s']:.2f} s / {mig['reader_to_points_s']:.2f} s")
    line("checkpoint saves", f"{mig['checkpoint_saves']} ({mig['checkpoint_s'] * 1000:.0f} ms)")
    if len(rep["migration_all"]) > 1:
        line("copy, every round", ", ".join(f"{m['copy_s']:.2f}" for m in rep["migration_all"]) + " s")
    print("2. floor (bare models.Batch upsert loop of the same prepared points)")
    line("floor", f"{floor['seconds']:.2f} s  ({floor['points'] / floor['seconds']:.0f} points/s)")
    if len(rep["floor_all_s"]) > 1:
        line("floor, every round", ", ".join(f"{s:.2f}" for s in rep["floor_all_s"]) + " s")
    ratio = rep["copy_vs_floor"]
    print("3. ratio")
    verdict = "meets" if ratio <= GOAL_COPY_RATIO else "MISSES"
    line("copy / floor (best / best)", f"{ratio:.3f}x  ({verdict} goal <= {GOAL_COPY_RATIO}x)")
    line("copy / floor per round", ", ".join(f"{x:.3f}" for x in rep["copy_vs_floor_paired"]))
    line("total / floor", f"{mig['total_s'] / floor['seconds']:.3f}x")
    print(f"4. read pipeline vs bare collection.get (best of {reads['repeat']}, {reads['records']:,} records)")
    labels = {
        "pipeline": "snapshot_ids + fetch + to_points (current)",
        "fetch_only": "snapshot_ids + fetch (no to_points)",
        "bare": "bare get(include=[]) + get(ids=chunk)",
        "deferred": "variant deferred (to_points without tolist)",
        "release": "variant release (reopen chromadb per coll.)",
        "deferred_release": "variant deferred + release",
    }
    for kind in [k for k in labels if k in reads]:
        r = reads[kind]
        vs = f"  = {r['vs_bare']:.3f}x bare" if "vs_bare" in r else ""
        line(
            labels[kind], f"{r['records_per_s']:,.0f} rec/s (best {r['best_s']:.2f} s, median {r['median_s']:.2f}){vs}"
        )
    rr = reads["pipeline"]["vs_bare"]
    verdict = "meets" if rr >= GOAL_READ_RATIO else "MISSES"
    line("pipeline / bare", f"{rr:.3f}x  ({verdict} goal >= {GOAL_READ_RATIO}x)")
    print("5. peak RSS while reading into a discarding sink (fresh child process each)")
    for reader, by_scale in rep["read_rss"].items():
        for scale, r in by_scale.items():
            during = r["peak_during_read"]
            line(
                f"{reader}, scale {scale} ({r['records']:,} rec)",
                f"peak {mib(r['peak_rss']):.0f} MiB; before read {mib(r['rss_before_read']):.0f}, "
                f"peak in read {mib(during) if during else float('nan'):.0f}; "
                f"ids {mib(r['largest_ids_list_bytes']):.2f} MiB",
            )
        ratio_rss = rss_ratio(by_scale)
        if ratio_rss is not None:
            verdict = "meets" if ratio_rss <= GOAL_RSS_RATIO else "MISSES"
            scales = list(by_scale)
            line(
                f"{reader}: peak scale {scales[-1]} / scale {scales[0]} (- ids)",
                f"{ratio_rss:.2f}x  ({verdict} goal <= ~{GOAL_RSS_RATIO}x)",
            )
    q = rep.get("qdrant_local_rss")
    if q:
        line(
            "qdrant-client local mode, scale-1 points held",
            f"+{mib(q['growth']):.0f} MiB RSS for {q['points']:,} points "
            f"(raw float32 vectors {mib(q['raw_vectors']):.0f} MiB)",
        )
    print("context")
    lo_rate, hi_rate = (GUIDE_RECORDS / (m * 60) for m in reversed(GUIDE_MINUTES))
    line("seed guide: 14,365 records in 5-10 min", f"{lo_rate:.0f}-{hi_rate:.0f} rec/s")
    line("Qdrant's migration tool", f"~{QDRANT_TOOL_POINTS_PER_S:.0f} points/s")
    line("this runbook (copy / whole step)", f"{n / mig['copy_s']:.0f} / {n / mig['total_s']:.0f} points/s")
    line("this machine's floor (local mode)", f"{floor['points'] / floor['seconds']:.0f} points/s")
    if "variants" in rep:
        import _variants

        _variants.print_report(rep["variants"], line)


if __name__ == "__main__":
    raise SystemExit(main())
