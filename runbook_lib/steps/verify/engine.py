"""The verify step: prove the Qdrant copy equals the ChromaDB source, record by record (SPEC "Verification").

A matching count is where most migration tools stop; this step compares every record. This module is the step
itself, :func:`verify`: it chooses the source to read and the collections to verify, runs the per-collection checks
(:mod:`runbook_lib.steps.verify.checks`: config, count, identity, vectors, payload, and search parity in
:mod:`runbook_lib.steps.verify.queries`), checks the source is unchanged, and files the result
(:mod:`runbook_lib.steps.verify.result`) with its charts (:mod:`runbook_lib.steps.verify.charts`).

Run-wide, ``source unchanged``: when the run has a backup, the live ChromaDB directory still matches the
checksums taken when the backup was made.

Which source is read: a run migrated by this runbook has ``state/migrate_checkpoint.json``; with a backup
the source is a scratch copy of the (checksum-verified) backup -- exactly what was migrated -- and the
target names come from the checkpoint. A Chroma server source (no backup) is read live. A run without a
checkpoint (migrated by another tool) reads the live source and expects each collection under its own name.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from runbook_lib.chroma import files as chroma_files
from runbook_lib.chroma.backup import Backup, load_backup, source_unchanged, verify_backup
from runbook_lib.chroma.base import ChromaReader
from runbook_lib.chroma.connect import open_source
from runbook_lib.config.params import VerifyParams
from runbook_lib.core.compare import SCORE_RTOL
from runbook_lib.core.layouts import get_layout
from runbook_lib.core.plan import target_names
from runbook_lib.errors import ConfigError
from runbook_lib.kernel.display import progress
from runbook_lib.kernel.step import Step
from runbook_lib.qdrant.connect import open_target
from runbook_lib.state.checkpoint import read_checkpoint, run_layout_params
from runbook_lib.state.identity import check_stores
from runbook_lib.steps.verify.charts import verify_charts
from runbook_lib.steps.verify.checks import Histogram, Planned, verify_collection
from runbook_lib.steps.verify.queries import PERTURBATION, QUERY_SEED
from runbook_lib.steps.verify.result import (
    FAIL,
    MAX_LISTED,
    SKIPPED,
    SOURCE_CHECK,
    Check,
    CollectionReport,
    VerifyResult,
)

log = logging.getLogger(__name__)


# --- what to verify ------------------------------------------------------------------------------------------
#: Checkpoint statuses of a collection the migrate step finished (``skipped``: empty, nothing to copy).
FINISHED = ("done", "skipped")


def _plan(source: ChromaReader, checkpoint: dict[str, Any] | None, requested: list[str], run_id: str) -> list[Planned]:
    """The collections to verify. With a checkpoint: every collection the run planned (``planned``, written
    before the copy; older runs: the checkpoint's collections), each with its migrate status -- a planned
    collection the migration did not finish is in the list, to be reported as not copied."""
    if checkpoint is None:
        out = []
        for name in source.resolve_collections(requested):
            target, alias = target_names(name, run_id, "plain")
            out.append(Planned(name, target, alias, None))
        return out
    entries: dict[str, dict[str, Any]] = checkpoint.get("collections", {})
    planned = [str(n) for n in checkpoint.get("planned") or []]
    known = list(dict.fromkeys([*planned, *entries]))
    names = list(dict.fromkeys(requested)) if requested else known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"Run {run_id} did not migrate collection {unknown[0]!r} (it migrated {', '.join(known) or 'none'}): "
            "fix the `collections` parameter, or verify another tool's migration in a new run (empty run_id)."
        )
    out = []
    for n in names:
        entry = entries.get(n) or {}
        out.append(
            Planned(
                n,
                entry.get("target") or n,
                entry.get("alias"),
                entry.get("status") or "not started",
                list(entry.get("payload_indexes") or []),
            )
        )
    return out


def _not_copied(plan: Planned, run_id: str) -> dict[str, Any]:
    """The report of a planned collection the migration did not finish: FAILED, no check run."""
    rep = CollectionReport(collection=plan.source, target=plan.target, alias=plan.alias)
    rep.migrate_status = plan.migrate_status
    rep.error = (
        f"not copied (migrate status {plan.migrate_status!r}: the migration stopped part-way; resume it with "
        f"runbook migrate --run-id {run_id})"
    )
    rep.status = "FAILED"
    for chk in rep.checks.values():
        chk.summary = f"not run: {rep.error}"
    return rep.to_dict()


def _run_problems(step: Step, checkpoint: dict[str, Any] | None) -> list[str]:
    """Run-wide reasons the run cannot be verified: its migrate step failed or is running and left no checkpoint."""
    if checkpoint is not None:
        return []
    migrate = step.run.manifest().get("steps", {}).get("migrate", {})
    status = migrate.get("status")
    if status in ("failed", "running"):
        what = "failed" if status == "failed" else "is still running (or was killed)"
        return [
            f"the migrate step of run {step.run.run_id} {what} and left no migration checkpoint: nothing was "
            f"copied to verify (run runbook migrate --run-id {step.run.run_id})"
        ]
    return []


# --- the step ----------------------------------------------------------------------------------------------------
def _open_source(step: Step, checkpoint: dict[str, Any] | None) -> tuple[ChromaReader, Backup | None, str]:
    chroma = step.settings.chroma
    backup_path = (checkpoint or {}).get("backup_path")
    synced = (checkpoint or {}).get("sync") or {}
    if synced.get("snapshot") and Path(synced["snapshot"]).is_dir() and not chroma.is_server:
        return (
            open_source(chroma, copy_from=Path(synced["snapshot"])),
            None,
            f"a scratch copy of the source as of the run's last sync ({synced.get('synced_at')}, "
            f"{synced.get('direction')}), kept at {synced['snapshot']}",
        )
    if backup_path:
        if chroma.is_server:
            raise ConfigError(
                f"Run {step.run.run_id} was migrated from a ChromaDB directory (backup {backup_path}) but "
                "CHROMA_HOST is set: unset CHROMA_HOST to verify this run."
            )
        backup = load_backup(Path(backup_path))
        verify_backup(backup)
        return (
            open_source(chroma, copy_from=backup.data_dir),
            backup,
            f"a scratch copy of the run's checksum-verified backup {backup.path}",
        )
    where = (
        "the live Chroma Cloud"
        if chroma.is_cloud
        else "the live Chroma server"
        if chroma.is_server
        else "a scratch copy of the live directory"
    )
    return open_source(chroma), None, f"{where} ({chroma.describe()})"


def _source_unchanged(step: Step, backup: Backup | None, synced: dict[str, Any] | None = None) -> dict[str, Any]:
    chk = Check(SOURCE_CHECK)
    if synced and synced.get("live_stats") is not None and not step.settings.chroma.is_server:
        live = step.settings.chroma.persist_dir
        now = {name: list(v) for name, v in chroma_files.stat_tree(live).items()} if live.is_dir() else {}
        then = synced["live_stats"]
        changed = sorted(n for n in set(now) | set(then) if now.get(n) != then.get(n))
        chk.set(
            not changed,
            f"{live} is unchanged since the last sync ({synced.get('synced_at')})"
            if not changed
            else f"{len(changed)} file(s) of {live} changed since the last sync (first: {changed[0]}): the app wrote "
            "after it; run `runbook sync` again, then verify",
            live_directory=str(live),
            problems=changed[:MAX_LISTED],
        )
        return chk.to_dict()
    if backup is None:
        chk.result = SKIPPED
        chk.summary = "no file backup in this run (a Chroma server, or a migration by another tool): nothing to compare"
        return chk.to_dict()
    live = Path(backup.manifest.get("source") or step.settings.chroma.persist_dir)
    problems = source_unchanged(backup, live)
    files = len(backup.manifest.get("source_files", {}))
    chk.set(
        not problems,
        f"{files} files of {live} match the checksums taken at backup time"
        if not problems
        else f"{len(problems)} file(s) of {live} changed since the backup (first: {problems[0]}); records written "
        "after the backup are not in Qdrant",
        live_directory=str(live),
        backup=str(backup.path),
        files=files,
        problems=problems[:MAX_LISTED],
        problems_total=len(problems),
    )
    return chk.to_dict()


def verify(step: Step) -> VerifyResult:
    """The verify step (``03_verify.ipynb``)."""
    p: VerifyParams = step.params  # type: ignore[assignment]
    t0 = time.perf_counter()
    checkpoint = read_checkpoint(step.run)
    store_note = None
    if checkpoint is not None:  # the run's stores, before either is opened
        store_note = check_stores(step.run.run_id, checkpoint, step.settings)
    layout = get_layout(*run_layout_params(checkpoint))  # type: ignore[arg-type]
    source, backup, source_read = _open_source(step, checkpoint)
    result = VerifyResult(
        ok=False,
        run_id=step.run.run_id,
        source_read=source_read,
        migrated_by=(
            "this runbook (state/migrate_checkpoint.json)"
            if checkpoint is not None
            else "another tool (no migrate checkpoint in this run): collections are expected under their own names"
        ),
        settings={
            "vector_check": p.vector_check,
            "tolerance": p.tolerance,
            "k": p.k,
            "sample_queries": p.sample_queries,
            "batch_size": p.batch_size,
            "score_tolerance_relative": SCORE_RTOL,
            "perturbation": PERTURBATION,
            "query_seed": QUERY_SEED,
        },
    )
    result.warnings += [store_note] if store_note else []
    migrated_to = (checkpoint or {}).get("target")
    if migrated_to and store_note is None and migrated_to != step.settings.qdrant.describe():
        result.warnings.append(
            f"Run {step.run.run_id} migrated to {migrated_to}, but this verification reads "
            f"{step.settings.qdrant.describe()}: check QDRANT_URL / QDRANT_PATH."
        )
    hist = Histogram()
    result.problems.extend(_run_problems(step, checkpoint))
    try:
        with open_target(step.settings.qdrant) as target:
            target.strong_reads = True  # a server answers from every replica: no stale replica reads as equal
            plans = [] if result.problems else _plan(source, checkpoint, p.collections, step.run.run_id)
            if checkpoint is not None and not p.collections:
                others = sorted(set(source.collection_names()) - {pl.source for pl in plans})
                if others:
                    result.warnings.append(
                        f"Not migrated by run {step.run.run_id}, hence not verified: {', '.join(others)}."
                    )
            overall = progress(total=0, desc="verify", unit="rec")
            for pl in plans:
                if checkpoint is not None and pl.migrate_status not in FINISHED:
                    result.collections.append(_not_copied(pl, step.run.run_id))
                    continue
                overall.total += source.count(pl.source)  # grows as it goes: one collection in memory at a time
                overall.refresh()
                rep = verify_collection(source, target, pl, p, hist, overall, layout)
                source.release()
                result.collections.append(rep.to_dict())
                result.total_records += rep.records
            overall.close()
    finally:
        read = source.read_summary()
        source.close()
    result.source_read += f"; {read}" if read else ""
    result.source_unchanged = _source_unchanged(step, backup, (checkpoint or {}).get("sync"))
    result.vector_histogram = hist.to_dict(p.tolerance)
    result.seconds = time.perf_counter() - t0
    if not result.collections and not result.problems:
        result.problems.append(
            "nothing to verify: no collection was checked (the run planned none, or the source has none)"
        )
    result.ok = (
        not result.problems and all(c["ok"] for c in result.collections) and result.source_unchanged["result"] != FAIL
    )
    result.figures = verify_charts(step, result)
    log.info("%s", result.verdict)
    return result
