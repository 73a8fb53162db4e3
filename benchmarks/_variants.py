"""Prototypes of the library changes suggested by the benchmark, timed against the current code.

Nothing in ``runbook_lib`` is edited: each prototype is a drop-in stand-in used only here.

* ``deferred``: ``to_points`` keeps the float32 embeddings as an ndarray and ``QdrantTarget.upsert``
  converts them with ``.tolist()`` (the writer side; applied since). The reader no longer builds ~1,536 Python
  floats per record, and each queued batch holds 1.5 MiB of float32 instead of ~12 MiB of floats.
* ``release``: after each collection, the persistent source closes its chromadb client and opens a
  new one on the same scratch copy. chromadb keeps every collection it has read loaded in memory
  until the client is closed, so without this the reader's RSS grows with the whole database.
"""

from __future__ import annotations

import gc
import time
import timeit
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import (
    Clock,
    Coll,
    Reader,
    chunks,
    collections_of,
    env,
    floor_loop,
    local_env,
    open_source,
    patched,
    qdrant_client_at,
    replaced,
)

import runbook_lib.steps.migrate.pipeline as pipeline_mod
from runbook_lib.chroma.source import ChromaSource, RecordBatch
from runbook_lib.config.settings import load_settings
from runbook_lib.core.mapping import build_payload, normalise_rows, point_id
from runbook_lib.core.plan import plan_collection
from runbook_lib.qdrant.target import QdrantTarget
from runbook_lib.state.checkpoint import Checkpoint
from runbook_lib.steps.migrate.pipeline import Points, copy_collection, to_points


# ------------------------------------------------------------------------------------------ prototypes
def to_points_deferred(index: int, batch: RecordBatch, *, normalise: bool = False) -> Points:
    """Proposed ``to_points``: vectors stay a float32 ndarray (``.tolist()`` moves to the writer)."""
    return Points(
        index=index,
        ids=[point_id(i) for i in batch.ids],
        vectors=normalise_rows(batch.embeddings) if normalise else batch.embeddings,  # type: ignore[arg-type]
        payloads=[
            build_payload(i, d, m, u)
            for i, d, m, u in zip(batch.ids, batch.documents, batch.metadatas, batch.uris, strict=True)
        ],
    )


def release(source: ChromaSource) -> None:
    """Proposed ``ChromaSource.release()``: free chromadb's in-memory copy of the collections read so far."""
    import chromadb

    if source.scratch is None:  # a Chroma server holds its own memory
        return
    source._collections.clear()
    source.client.close()  # type: ignore[attr-defined]  # refcounted: stops only this scratch copy's system
    source.client = chromadb.PersistentClient(path=str(source.scratch / "chroma_db"))


# ------------------------------------------------------------------------------------------ readers
def _reader(*, deferred: bool, releasing: bool) -> Reader:
    def read(source: Any, colls: list[Coll], batch_size: int) -> int:
        mapper = to_points_deferred if deferred else to_points
        if releasing:
            release(source)  # as in the proposed migrate: every collection is freed after its plan
        n = 0
        for coll in colls:
            ids = source.snapshot_ids(coll.name)
            cosine = coll.distance == "Cosine"
            for k, chunk in enumerate(chunks(ids, batch_size)):
                batch = source.fetch(coll.name, chunk, expected_dim=coll.dim)
                mapper(k, batch, normalise=cosine)
                n += len(batch)
            if releasing:
                release(source)
        return n

    return read


READERS: dict[str, Reader] = {
    "deferred": _reader(deferred=True, releasing=False),
    "release": _reader(deferred=False, releasing=True),
    "deferred_release": _reader(deferred=True, releasing=True),
}


# ------------------------------------------------------------------------------------------ mapping cost
def mapping_costs(db: Path, batch_size: int, repeat: int = 5) -> dict[str, Any]:
    """Per-record cost of each part of ``to_points`` over every batch of the sample (best of ``repeat``)."""
    with open_source(db) as source:
        batches: list[tuple[bool, RecordBatch]] = []
        for coll in collections_of(source):
            ids = source.snapshot_ids(coll.name)
            cosine = coll.distance == "Cosine"
            batches += [(cosine, source.fetch(coll.name, c, expected_dim=coll.dim)) for c in chunks(ids, batch_size)]
    n = sum(len(b) for _, b in batches)
    parts: dict[str, Callable[[], object]] = {
        "to_points (current)": lambda: [to_points(k, b, normalise=c) for k, (c, b) in enumerate(batches)],
        "  normalise_rows (Cosine collections)": lambda: [normalise_rows(b.embeddings) for c, b in batches if c],
        "  embeddings.tolist()": lambda: [b.embeddings.tolist() for _, b in batches],
        "  point_id (uuid5 / passthrough)": lambda: [[point_id(i) for i in b.ids] for _, b in batches],
        "  build_payload": lambda: [
            [build_payload(*r) for r in zip(b.ids, b.documents, b.metadatas, b.uris, strict=True)] for _, b in batches
        ],
        "to_points_deferred (no tolist)": lambda: [
            to_points_deferred(k, b, normalise=c) for k, (c, b) in enumerate(batches)
        ],
    }
    out: dict[str, Any] = {"records": n}
    for label, fn in parts.items():
        best = min(timeit.repeat(fn, number=1, repeat=repeat))
        out[label] = {"seconds": best, "us_per_record": best / n * 1e6}
    rows, dim = max((b.embeddings.shape for _, b in batches), key=lambda shape: shape[0])
    list_bytes = rows * dim * (8 + 24) + rows * (56 + 8)  # pointers + float objects + list headers
    out["queued_batch_bytes"] = {"rows": rows, "dim": dim, "lists": list_bytes, "ndarray_float32": rows * dim * 4}
    return out


# ------------------------------------------------------------------------------------------ copy variants
def copy_all(
    db: Path, work: Path, batch_size: int, *, deferred: bool, releasing: bool, count_first: bool = True
) -> dict[str, Any]:
    """What ``migrate()`` does after the backup and scratch copy (count all; per collection: snapshot ids,
    plan, create, ``copy_collection`` with its checkpoint saves, count), prototypes switched on or off.
    Unlike the step's copy time (result rows), this includes planning; the floor comparison is made
    between these variants, in the same run.

    ``releasing`` frees each collection after it is used; with ``count_first`` the up-front count pass
    (the overall progress bar's total) then loads and frees each collection once more before its copy,
    without it the total grows as collections are planned and each collection is loaded once."""
    work.mkdir(parents=True)
    with env(**local_env(db, work / "qdrant", work / "outputs")):
        settings = load_settings()
    clock = Clock()
    with ExitStack() as stack:
        source = stack.enter_context(open_source(db))
        target = stack.enter_context(QdrantTarget(settings.qdrant))
        checkpoint = Checkpoint(work / "checkpoint.json")
        stack.enter_context(patched(QdrantTarget, "upsert", clock.wrap("upsert")))
        if deferred:
            stack.enter_context(patched(pipeline_mod, "to_points", replaced(to_points_deferred)))
        gc.collect()
        started = time.perf_counter()
        # as migrate() does: count every collection for the overall progress bar, then plan + copy one by one
        names = source.collection_names()
        if count_first:
            for name in names:
                source.count(name)
                if releasing:
                    release(source)  # counting loads the whole collection into chromadb's memory
        n = 0
        for name in names:
            ids = source.snapshot_ids(name)
            entry = plan_collection(source, name, run_id="bench", ids=ids)
            if entry.dimension is None:
                continue
            target.create_collection(entry.target, size=entry.dimension, distance=entry.distance)
            state = checkpoint.entry(entry.source)
            checkpoint.save()

            def on_progress(contiguous: int, _n: int, state: dict[str, Any] = state) -> None:
                state["records_done"] = contiguous
                checkpoint.save()

            copy_collection(
                source, target, entry, ids=ids, start=0, batch_size=batch_size, workers=2, on_progress=on_progress
            )
            n += target.count(entry.target)
            state["status"] = "done"
            checkpoint.save()
            if releasing:
                release(source)
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "points": n, "writer_upsert_s": clock.seconds.get("upsert", 0.0)}


def _process_reader(db: str, names: list[str], batch_size: int, q: Any, stop: Any) -> None:
    """Runs in a spawned child: read every collection in order and queue mapped batches (ndarray vectors).

    It uses its own scratch copy of the source (chromadb is not built for two processes on one directory)
    and frees each collection after reading it."""
    from runbook_lib.core.mapping import qdrant_distance

    try:
        with open_source(Path(db)) as source:
            for name in names:
                dim = source.dimension(name)
                if dim is not None:
                    cosine = qdrant_distance(source.space(name)) == "Cosine"
                    ids = source.snapshot_ids(name)
                    for k, chunk in enumerate(chunks(ids, batch_size)):
                        if stop.is_set():
                            return
                        batch = source.fetch(name, chunk, expected_dim=dim)
                        q.put(("batch", name, to_points_deferred(k, batch, normalise=cosine)))
                q.put(("done", name, None))
                release(source)
    except BaseException as exc:
        q.put(("error", "", f"{type(exc).__name__}: {exc}"))


def copy_all_process_reader(db: Path, work: Path, batch_size: int) -> dict[str, Any]:
    """Like ``copy_all`` (current flow: count pass, then plan + copy per collection), but the reading and
    mapping run in one child process for the whole migration, so they neither share the GIL with the
    writer nor restart for each collection. The writer converts each batch with ``.tolist()``. The
    child's start-up (spawn, import chromadb, its own scratch copy) is inside the timing."""
    import multiprocessing as mp

    work.mkdir(parents=True)
    with env(**local_env(db, work / "qdrant", work / "outputs")):
        settings = load_settings()
    clock = Clock()
    ctx = mp.get_context("spawn")  # never fork a process that runs chromadb's and qdrant's threads
    with ExitStack() as stack:
        source = stack.enter_context(open_source(db))
        target = stack.enter_context(QdrantTarget(settings.qdrant))
        checkpoint = Checkpoint(work / "checkpoint.json")
        stack.enter_context(patched(QdrantTarget, "upsert", clock.wrap("upsert")))
        gc.collect()
        started = time.perf_counter()
        names = source.collection_names()
        q = ctx.Queue(maxsize=4)
        stop = ctx.Event()
        proc = ctx.Process(target=_process_reader, args=(str(db), names, batch_size, q, stop), daemon=True)
        proc.start()
        first_item_s: float | None = None
        n = 0
        try:
            for name in names:
                source.count(name)
            for name in names:
                ids = source.snapshot_ids(name)
                entry = plan_collection(source, name, run_id="bench", ids=ids)
                if entry.dimension is not None:
                    target.create_collection(entry.target, size=entry.dimension, distance=entry.distance)
                state = checkpoint.entry(name)
                checkpoint.save()
                done = 0
                while True:
                    kind, got, item = q.get(timeout=600)
                    if first_item_s is None:
                        first_item_s = time.perf_counter() - started
                    if kind == "error":
                        raise RuntimeError(f"reader process: {item}")
                    if got != name:
                        raise RuntimeError(f"reader process sent {got!r} while copying {name!r}")
                    if kind == "done":
                        break
                    target.upsert(entry.target, item.ids, item.vectors.tolist(), item.payloads)
                    done += len(item.ids)
                    state["records_done"] = done
                    checkpoint.save()
                if entry.dimension is not None:
                    n += target.count(entry.target)
                state["status"] = "done"
                checkpoint.save()
        finally:
            stop.set()
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "points": n,
        "writer_upsert_s": clock.seconds.get("upsert", 0.0),
        "first_batch_after_s": first_item_s,
    }


def floor_run(prepared: list[Any], work: Path) -> dict[str, Any]:
    client = qdrant_client_at(work)
    try:
        elapsed = floor_loop(client, prepared)
    finally:
        client.close()
    return {"seconds": elapsed, "writer_upsert_s": elapsed}


COPY_VARIANTS: dict[str, dict[str, bool]] = {
    "current": {"deferred": False, "releasing": False},
    "deferred": {"deferred": True, "releasing": False},
    "deferred_release": {"deferred": True, "releasing": True},
    "deferred_release_lazy_total": {"deferred": True, "releasing": True, "count_first": False},
    "process_reader": {},
}


def copy_variants(prepared: list[Any], db: Path, batch_size: int, work: Path, rounds: int) -> dict[str, Any]:
    """Floor and copy variants, interleaved round by round (the order rotates) so drift hits all alike."""
    kinds = ["floor", *COPY_VARIANTS]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for r in range(rounds):
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
        for kind in order:
            where = work / f"{kind}-{r}"
            if kind == "floor":
                runs[kind].append(floor_run(prepared, where))
            elif kind == "process_reader":
                runs[kind].append(copy_all_process_reader(db, where, batch_size))
            else:
                runs[kind].append(copy_all(db, where, batch_size, **COPY_VARIANTS[kind]))
            print(f"    variants round {r + 1}/{rounds}: {kind:<17s} {runs[kind][-1]['seconds']:.2f} s", flush=True)
    out: dict[str, Any] = {"rounds": rounds, "runs": runs}
    floor_s = [f["seconds"] for f in runs["floor"]]
    for kind in COPY_VARIANTS:
        secs = [c["seconds"] for c in runs[kind]]
        paired = [c / f for c, f in zip(secs, floor_s, strict=True)]
        out[kind] = {
            "best_s": min(secs),
            "best_vs_best_floor": min(secs) / min(floor_s),
            "paired_ratios": paired,
            "median_paired_ratio": sorted(paired)[len(paired) // 2],
            "writer_upsert_s": [c["writer_upsert_s"] for c in runs[kind]],
            "first_batch_after_s": [c["first_batch_after_s"] for c in runs[kind] if "first_batch_after_s" in c],
        }
    out["floor_best_s"] = min(floor_s)
    return out


# ------------------------------------------------------------------------------------------ entry points
def run_all(prepared: list[Any], db: Path, batch_size: int, work: Path, rounds: int) -> dict[str, Any]:
    print("  variants: mapping costs ...", flush=True)
    result: dict[str, Any] = {"mapping": mapping_costs(db, batch_size)}
    print("  variants: copy prototypes vs floor ...", flush=True)
    result["copy"] = copy_variants(prepared, db, batch_size, work, rounds)
    return result


def print_report(v: dict[str, Any], line: Callable[[str, str], None]) -> None:
    print("variants (prototypes of the suggested changes; see benchmarks/README.md)")
    m = v["mapping"]
    for label, r in m.items():
        if isinstance(r, dict) and "us_per_record" in r:
            line(f"mapping: {label}", f"{r['us_per_record']:.1f} us/record ({r['seconds'] * 1000:.0f} ms total)")
    q = m["queued_batch_bytes"]
    line(
        f"one queued batch of {q['rows']} x {q['dim']}",
        f"lists {q['lists'] / 2**20:.1f} MiB vs ndarray {q['ndarray_float32'] / 2**20:.1f} MiB",
    )
    c = v["copy"]
    where = v.get("target_dir", "?")
    line("copy variants: floor (best)", f"{c['floor_best_s']:.2f} s over {c['rounds']} rounds (Qdrant under {where})")
    for kind in COPY_VARIANTS:
        r = c[kind]
        line(
            f"copy variant {kind}",
            f"best {r['best_s']:.2f} s = {r['best_vs_best_floor']:.3f}x floor; paired ratios "
            + ", ".join(f"{x:.3f}" for x in r["paired_ratios"])
            + f" (median {r['median_paired_ratio']:.3f}); writer in upsert "
            + ", ".join(f"{x:.1f}" for x in r["writer_upsert_s"])
            + " s"
            + (
                "; first batch after " + ", ".join(f"{x:.1f}" for x in r["first_batch_after_s"]) + " s"
                if r.get("first_batch_after_s")
                else ""
            ),
        )
