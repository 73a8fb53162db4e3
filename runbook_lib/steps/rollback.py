"""Undo a migration run (``05_rollback.ipynb`` · ``runbook rollback --run-id ID``).

The rollback reads what the migrate step recorded in ``outputs/<run_id>/state/migrate_checkpoint.json``
and first builds a plan, changing nothing:

* **ChromaDB**: the run's backup is loaded and *every* checksum verified (a missing or corrupt backup
  stops the rollback here, before anything is changed). When the live directory is still byte-identical
  to its state when the backup was taken (the manifest's ``source_files``; the migration never writes
  its source) there is nothing to restore and it is left in place. Otherwise the backup's ``data/`` is
  copied to a temporary sibling, the copy's checksums are verified against the manifest, then the live
  directory is renamed to ``<dir>.old-<time>`` (kept, never deleted) and the copy renamed into place.
* **Qdrant**: collections the run created (``created_by_run``) are deleted; an alias the run pointed at
  its own collection is put back on the collection it pointed at before (``alias_previous``) in one
  atomic request, or deleted when it did not exist before. Anything the run did not create is left
  untouched, and so is an alias someone has since moved elsewhere.
* **The app**: ``outputs/<run_id>/rollback.env`` holds the settings that point the app back at ChromaDB
  (``VECTOR_DB=chroma`` and where ChromaDB is; never a secret).

Only with ``confirm=True`` is the plan carried out; the step then ends with a health check of ChromaDB
(opened from a scratch copy) and a count check of every collection against the backup.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from runbook_lib.config.params import RollbackParams
from runbook_lib.config.settings import ChromaSettings, Settings
from runbook_lib.core.plan import target_names
from runbook_lib.errors import BackupError, ConfigError, RunbookError
from runbook_lib.runtime.display import in_notebook, show
from runbook_lib.runtime.step import Step
from runbook_lib.source import chroma_files
from runbook_lib.source.backup import Backup, load_backup, verify_backup
from runbook_lib.source.chroma import ChromaSource
from runbook_lib.state.checkpoint import read_checkpoint
from runbook_lib.state.run import Run, utc_now, write_text_scrubbed
from runbook_lib.target.qdrant import QdrantTarget

log = logging.getLogger(__name__)

#: The file, in the run folder, with the settings that point the app back at ChromaDB.
ENV_FILE = "rollback.env"
#: The variable the app wrapper (:mod:`runbook_lib.app.client`) reads to choose its backend.
VECTOR_DB_VARIABLE = "VECTOR_DB"
_TRANSIENT_SUFFIXES = ("-wal", "-journal")

# ``Action.op`` values.
RESTORE_DIR = "restore directory"
KEEP_DIR = "keep directory"
DELETE_COLLECTION = "delete collection"
PUT_BACK_ALIAS = "put back alias"
DELETE_ALIAS = "delete alias"
LEAVE = "leave untouched"
SKIP = "skip"
WRITE_ENV = "write settings"
_CHANGES = (RESTORE_DIR, DELETE_COLLECTION, PUT_BACK_ALIAS, DELETE_ALIAS)


# --- the plan --------------------------------------------------------------------------------------
@dataclass
class Action:
    """One line of the plan: what happens to which object, and (after confirm) whether it happened."""

    system: str  # "ChromaDB" | "Qdrant" | "app"
    op: str
    name: str
    detail: str
    to: str | None = None  # PUT_BACK_ALIAS: the collection the alias goes back to
    status: str = "planned"

    @property
    def is_change(self) -> bool:
        return self.op in _CHANGES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChromaPlan:
    """The ChromaDB side of the plan."""

    mode: str  # "restore" (swap in the backup) | "unchanged" (live dir identical to backup time) | "skipped"
    note: str
    persist_dir: Path | None = None
    backup: Backup | None = None
    live_differences: list[str] = field(default_factory=list)
    backup_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "note": self.note,
            "persist_dir": str(self.persist_dir) if self.persist_dir else None,
            "backup": self.backup.summary() if self.backup else None,
            "live_differences": self.live_differences[:50],
            "backup_counts": self.backup_counts,
        }


@dataclass
class RollbackResult:
    ok: bool
    run_id: str
    confirmed: bool
    actions: list[Action] = field(default_factory=list)
    chroma: dict[str, Any] = field(default_factory=dict)
    qdrant_before: dict[str, Any] | None = None
    qdrant_after: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    counts: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    env_file: str | None = None
    env_written: str = ""  # the text written to env_file
    restored_from: str | None = None
    kept_old_dir: str | None = None
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def _n(self, op: str, status: str = "done") -> int:
        return sum(1 for a in self.actions if a.op == op and a.status == status)

    @property
    def verdict(self) -> str:
        if not self.confirmed:
            changes = [a for a in self.actions if a.is_change]
            what = "; ".join(f"{a.op} {a.name}" for a in changes[:6]) + ("; ..." if len(changes) > 6 else "")
            if not changes:
                return (
                    f"Plan only, nothing changed: rolling back run {self.run_id} has nothing to change "
                    "in ChromaDB or Qdrant; re-run with confirm=True to write rollback.env and check ChromaDB."
                )
            return (
                f"Plan only, nothing changed: rolling back run {self.run_id} makes {len(changes)} change(s) "
                f"({what}); re-run with confirm=True to carry them out."
            )
        if not self.ok:
            return f"Rollback of run {self.run_id} FAILED: " + "; ".join(self.errors)
        chroma = {
            "restore": f"ChromaDB restored from {self.restored_from} (the previous directory is kept as "
            f"{self.kept_old_dir or 'n/a: there was none'})",
            "unchanged": "ChromaDB was already byte-identical to its backup-time state (left in place)",
            "skipped": "ChromaDB not restored (" + str(self.chroma.get("note", "")).rstrip(".") + ")",
        }[str(self.chroma.get("mode", "skipped"))]
        n_records = sum(int(r.get("restored_count") or 0) for r in self.counts)
        checked = (
            f"; every count matches the backup ({len(self.counts)} collections, {n_records:,} records)"
            if self.counts
            else ""
        )
        return (
            f"Rolled back run {self.run_id}: {chroma}; removed {self._n(DELETE_COLLECTION)} Qdrant collection(s) and "
            f"{self._n(DELETE_ALIAS)} alias(es), put back {self._n(PUT_BACK_ALIAS)} alias(es){checked}; "
            f"point the app at ChromaDB with {self.env_file}."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "confirmed": self.confirmed,
            "rolled_back_run": self.run_id,
            "plan": [a.to_dict() for a in self.actions],
            "chroma": self.chroma,
            "restored_from": self.restored_from,
            "kept_old_dir": self.kept_old_dir,
            "qdrant_before": self.qdrant_before,
            "qdrant_after": self.qdrant_after,
            "health": self.health,
            "counts": self.counts,
            "env_file": self.env_file,
            "env": self.env,
            "warnings": self.warnings,
            "errors": self.errors,
        }

    def plan_table(self) -> Any:
        import pandas as pd

        cols = ["system", "op", "name", "detail", "status"]
        return pd.DataFrame([{k: a.to_dict()[k] for k in cols} for a in self.actions], columns=cols)

    def counts_table(self) -> Any:
        import pandas as pd

        cols = ["collection", "backup_count", "restored_count", "query_ok", "match"]
        return pd.DataFrame(self.counts, columns=cols).set_index("collection") if self.counts else pd.DataFrame()

    def env_text(self) -> str:
        """What ``rollback.env`` holds (or, before confirm, would hold)."""
        return self.env_written or render_env(self.env, self.run_id)


# --- reading what the run did ----------------------------------------------------------------------
def read_run_checkpoint(run: Run) -> dict[str, Any]:
    """The migrate step's checkpoint of ``run``; :class:`ConfigError` when the run has no migration."""
    data = read_checkpoint(run)
    if data is not None:
        return data
    if "migrate" not in run.manifest().get("steps", {}):
        raise ConfigError(
            f"Run {run.run_id} has no migrate step, so there is nothing to roll back: pass the run id of the "
            "migration to undo (`runbook runs` lists the runs)."
        )
    return {"collections": {}}


def _target_key(described: str) -> str:
    return described.replace(" (API key set)", "").strip()


def _check_same_target(step: Step, checkpoint: dict[str, Any], warnings: list[str]) -> None:
    """Refuse to clean up a Qdrant other than the one the run wrote to (from the checkpoint's ``target``
    when migrate records it, else from the run's step results)."""
    recorded = checkpoint.get("target") if isinstance(checkpoint.get("target"), str) else None
    steps = ("migrate", "verify", "monitor", "dry-run") if recorded is None else ()
    for name in steps:
        data = step.run.read_result(name)
        if data and data.get("target"):
            recorded = str(data["target"])
            break
    now = step.settings.qdrant.describe()
    if recorded is None:
        warnings.append(
            "The run filed no step result naming its Qdrant target, so the rollback could not confirm that "
            f"{now} is the Qdrant the run wrote to."
        )
        return
    if _target_key(recorded) != _target_key(now):
        raise ConfigError(
            f"Run {step.run.run_id} migrated into {recorded} but the settings now point at {now}: set QDRANT_URL "
            "or QDRANT_PATH as they were for that run (or pass remove_qdrant=false to leave Qdrant alone)."
        )


# --- ChromaDB ---------------------------------------------------------------------------------------
def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def _load_verified_backup(run_id: str, path: Path) -> Backup:
    """The run's backup with every checksum verified; one-sentence :class:`BackupError` otherwise."""
    try:
        backup = load_backup(path)
        if not isinstance(backup.manifest.get("files"), dict) or not backup.manifest["files"]:
            raise BackupError(f"The backup manifest in {path} lists no files: the backup is corrupt.")
        verify_backup(backup)
    except BackupError as exc:
        raise BackupError(
            f"Rollback of run {run_id} stopped before changing anything: {_lower_first(exc.message.rstrip('.'))}.",
            problems=getattr(exc, "problems", []),
        ) from exc
    return backup


def _has_transient_files(persist_dir: Path) -> bool:
    """SQLite write-ahead or journal files with content: the database is open or was not closed cleanly."""
    return any(
        p.is_file() and p.name.endswith(_TRANSIENT_SUFFIXES) and p.stat().st_size > 0 for p in persist_dir.rglob("*")
    )


def collection_counts(settings: ChromaSettings, *, copy_from: Path | None = None) -> dict[str, int]:
    """Records per collection, read from a scratch copy (of ``copy_from`` or the live directory)."""
    with ChromaSource.open(settings, copy_from=copy_from) as source:
        return {name: source.count(name) for name in source.collection_names()}


def plan_chroma(step: Step, checkpoint: dict[str, Any], warnings: list[str]) -> ChromaPlan:
    """Decide what happens to ChromaDB; verifies the backup (raises before anything is changed)."""
    chroma = step.settings.chroma
    run_id = step.run.run_id
    if not step.p.restore_chroma:
        return ChromaPlan("skipped", "restore_chroma=False: ChromaDB is left as it is.")
    backup_path = checkpoint.get("backup_path")
    if not backup_path:
        if chroma.is_server or checkpoint.get("collections"):
            return ChromaPlan(
                "skipped",
                "The run read from a Chroma server, which has no file backup; the migration never writes its "
                "source, so there is nothing to restore (back the server up and restore it yourself if needed).",
            )
        return ChromaPlan("skipped", f"Run {run_id} took no backup: its migration stopped before copying anything.")
    if chroma.is_server:
        raise ConfigError(
            f"Run {run_id} migrated a ChromaDB directory (backup at {backup_path}) but the settings now point at "
            f"{chroma.describe()}: unset CHROMA_HOST and set CHROMA_PERSIST_DIR to that directory, or pass "
            "restore_chroma=false."
        )
    backup = _load_verified_backup(run_id, Path(backup_path))
    persist_dir = chroma.persist_dir
    recorded = backup.manifest.get("source")
    if recorded and Path(recorded).resolve() != persist_dir.resolve():
        raise ConfigError(
            f"The backup of run {run_id} was taken from {recorded} but CHROMA_PERSIST_DIR is {persist_dir}: set "
            "CHROMA_PERSIST_DIR to the directory that was migrated, or pass restore_chroma=false."
        )
    plan = ChromaPlan("restore", "", persist_dir=persist_dir, backup=backup)
    source_files = backup.manifest.get("source_files")
    if not persist_dir.exists():
        plan.note = f"{persist_dir} is missing: it is restored from the verified backup."
    elif not persist_dir.is_dir():
        raise ConfigError(f"CHROMA_PERSIST_DIR points to {persist_dir}, which is a file, not a ChromaDB directory.")
    elif _has_transient_files(persist_dir):
        plan.note = (
            f"{persist_dir} has SQLite write-ahead/journal files (an app has it open, or it was not closed "
            "cleanly): it is replaced by the verified backup and kept as <dir>.old-<time>."
        )
        warnings.append(
            f"{persist_dir} looks open (SQLite -wal/-journal files): stop every app using it before confirming."
        )
    elif not chroma_files.compare_checksums(backup.manifest["files"], persist_dir):
        plan.mode = "unchanged"
        plan.note = (
            f"{persist_dir} is already a byte-identical copy of the verified backup (restored earlier): "
            "nothing to restore, it stays in place."
        )
    elif source_files is None:
        plan.note = "The backup has no checksums of the live directory: the directory is restored from the backup."
    else:
        plan.live_differences = chroma_files.compare_checksums(source_files, persist_dir)
        if not plan.live_differences:
            plan.mode = "unchanged"
            plan.note = (
                f"{persist_dir} is byte-identical to its state when the backup was taken (all {len(source_files)} "
                "checksums match): nothing to restore, it stays in place."
            )
        else:
            shown = "; ".join(plan.live_differences[:3])
            plan.note = (
                f"{persist_dir} changed since the backup ({len(plan.live_differences)} difference(s): {shown}): "
                "it is replaced by the verified backup and kept as <dir>.old-<time>."
            )
            warnings.append(
                f"ChromaDB changed since the backup of run {run_id} ({len(plan.live_differences)} file difference(s)): "
                "writes made since then are not in the restored directory (they stay in <dir>.old-<time>)."
            )
    plan.backup_counts = collection_counts(chroma, copy_from=backup.data_dir)
    return plan


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _free_name(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(1, 1000):
        candidate = path.with_name(f"{path.name}-{i}")
        if not candidate.exists():
            return candidate
    raise BackupError(f"Could not find a free name next to {path}.")  # pragma: no cover


def stage_restore(backup: Backup, persist_dir: Path) -> Path:
    """Copy the backup's data next to ``persist_dir`` and verify the copy; the live directory is untouched."""
    chroma_files.ensure_free_space(persist_dir.parent, backup.total_bytes, f"restoring {persist_dir}")
    staging = _free_name(persist_dir.with_name(f"{persist_dir.name}.restore-{_stamp()}"))
    try:
        chroma_files.copy_chroma_dir(backup.data_dir, staging, consistent_sqlite=False)
        problems = chroma_files.compare_checksums(backup.manifest["files"], staging)
        if problems:
            raise BackupError(
                f"The copy of the backup at {staging} fails its checksum verification ({'; '.join(problems[:5])}): "
                "nothing was changed; check the disk and run the rollback again.",
                problems=problems,
            )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def swap_in(staging: Path, persist_dir: Path) -> Path | None:
    """Rename the live directory to ``<dir>.old-<time>`` and the verified copy into its place.

    Returns where the previous directory was kept (None when there was none)."""
    old: Path | None = None
    if persist_dir.exists() or persist_dir.is_symlink():
        old = _free_name(persist_dir.with_name(f"{persist_dir.name}.old-{_stamp()}"))
        try:
            os.rename(persist_dir, old)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BackupError(
                f"Could not move {persist_dir} aside to {old} ({exc}): nothing was changed; stop whatever holds the "
                "directory (or restore it by hand from the backup) and run the rollback again."
            ) from exc
    try:
        os.rename(staging, persist_dir)
    except OSError as exc:
        if old is not None:
            os.rename(old, persist_dir)
        shutil.rmtree(staging, ignore_errors=True)
        raise BackupError(
            f"Could not move the restored copy into {persist_dir} ({exc}): the directory was put back as it was."
        ) from exc
    return old


def chroma_health(settings: ChromaSettings) -> dict[str, Any]:
    """Open ChromaDB (a scratch copy of a directory, or the server) and check every collection answers."""
    where = settings.describe()
    report: dict[str, Any] = {"checked": where, "ok": False, "collections": {}, "error": None}
    try:
        with ChromaSource.open(settings) as source:
            for name in source.collection_names():
                col = source.collection(name)
                count = int(col.count())
                query_ok: bool | None = None
                if count:
                    first = col.get(limit=1, include=["embeddings"])
                    emb = first.get("embeddings")
                    if emb is not None and len(emb):
                        query = np.asarray([emb[0]], dtype=np.float32)
                        answer = col.query(query_embeddings=query, n_results=1, include=[])
                        query_ok = bool(answer["ids"] and answer["ids"][0])
                    else:
                        query_ok = False
                report["collections"][name] = {"count": count, "query_ok": query_ok}
    except Exception as exc:
        report["error"] = f"ChromaDB at {where} failed its health check: {type(exc).__name__}: {exc}"
        return report
    report["ok"] = all(c["query_ok"] is not False for c in report["collections"].values())
    if not report["ok"]:
        bad = [n for n, c in report["collections"].items() if c["query_ok"] is False]
        report["error"] = f"ChromaDB at {where} did not answer a query on {', '.join(bad)}."
    return report


# --- Qdrant -----------------------------------------------------------------------------------------
def qdrant_state(target: QdrantTarget) -> dict[str, Any]:
    return {"collections": target.collection_names(), "aliases": target.aliases()}


def plan_qdrant(checkpoint: dict[str, Any], run_id: str, state: dict[str, Any]) -> tuple[list[Action], list[str]]:
    """Qdrant actions (alias changes first, then collection deletions) and warnings, from the current state."""
    collections = set(state["collections"])
    aliases: dict[str, str] = dict(state["aliases"])
    alias_ops: list[Action] = []
    coll_ops: list[Action] = []
    warnings: list[str] = []
    for source, st in sorted(checkpoint.get("collections", {}).items()):
        target = st.get("target")
        alias = st.get("alias")
        versioned = bool(target) and target == target_names(source, run_id, "alias")[0]
        created = bool(st.get("created_by_run")) or (versioned and target in collections)
        if alias:
            current = aliases.get(alias)
            previous = st.get("alias_previous")
            if current is None:
                if st.get("alias_set"):
                    alias_ops.append(Action("Qdrant", SKIP, alias, "alias already gone", status="skipped"))
            elif current != target:
                alias_ops.append(
                    Action(
                        "Qdrant",
                        LEAVE,
                        alias,
                        f"alias now points at {current!r}, not at this run's {target!r}: someone moved it since",
                        status="skipped",
                    )
                )
            elif previous and previous != target and previous in collections:
                alias_ops.append(
                    Action("Qdrant", PUT_BACK_ALIAS, alias, f"{target!r} -> {previous!r} (atomic switch)", to=previous)
                )
            else:
                if not previous:
                    why = "it did not exist before this run"
                elif previous == target:
                    why = "the collection it pointed at before this run is not recorded"
                else:
                    why = f"the collection it pointed at before this run, {previous!r}, no longer exists"
                    warnings.append(
                        f"Alias {alias!r} pointed at {previous!r} before run {run_id}, which no longer exists: the "
                        "alias is deleted instead of put back."
                    )
                alias_ops.append(Action("Qdrant", DELETE_ALIAS, alias, f"points at {target!r}; {why}"))
        if not target:
            continue
        if target not in collections:
            if created:
                coll_ops.append(Action("Qdrant", SKIP, target, "created by this run; already gone", status="skipped"))
            continue
        if created:
            points = st.get("records_done") if st.get("status") != "done" else st.get("source_count")
            coll_ops.append(
                Action(
                    "Qdrant",
                    DELETE_COLLECTION,
                    target,
                    f"created by this run for {source!r} (migration status {st.get('status', '?')}"
                    + (f", {points} records written" if points is not None else "")
                    + ")",
                )
            )
            if st.get("replaced_existing"):
                warnings.append(
                    f"Run {run_id} replaced an existing Qdrant collection {target!r} (on_existing=recreate): the "
                    "rollback deletes the new one but cannot bring the old one back."
                )
            continue
        detail = "not created by this run: left untouched"
        if st.get("created_by_run") is False and st.get("status") in ("copying", "done", "failed"):
            detail += " (the points this run wrote into it with on_existing=resume stay)"
            warnings.append(
                f"Qdrant collection {target!r} existed before run {run_id}, which wrote points into it "
                "(on_existing=resume): the rollback leaves it, and those points, as they are."
            )
        coll_ops.append(Action("Qdrant", LEAVE, target, detail, status="skipped"))
    return alias_ops + coll_ops, warnings


def apply_qdrant(target: QdrantTarget, actions: list[Action], errors: list[str]) -> None:
    """Carry out the planned Qdrant actions; a failure is recorded and the others still run."""
    for action in actions:
        if action.status != "planned":
            continue
        try:
            if action.op == PUT_BACK_ALIAS:
                assert action.to is not None
                target.set_alias(action.name, action.to)
            elif action.op == DELETE_ALIAS:
                target.delete_alias(action.name)
            elif action.op == DELETE_COLLECTION:
                target.delete_collection(action.name)
            else:  # pragma: no cover - only the three changes above are ever "planned"
                continue
        except RunbookError as exc:
            action.status = "failed"
            errors.append(str(exc))
            continue
        action.status = "done"
        log.info("Qdrant: %s %s: done", action.op, action.name)


def _open_target(step: Step) -> QdrantTarget | None:
    """The Qdrant target, or None when local mode has no storage folder (nothing can be there)."""
    q = step.settings.qdrant
    if not q.is_server and not q.path.is_dir():
        return None
    return QdrantTarget(q)


# --- the app's settings -----------------------------------------------------------------------------
def chroma_env(settings: Settings) -> dict[str, str]:
    """The non-secret settings that point the app (``vector_db.py``) back at ChromaDB."""
    chroma = settings.chroma
    env = {VECTOR_DB_VARIABLE: "chroma"}
    if chroma.is_server:
        env.update(CHROMA_HOST=str(chroma.host), CHROMA_PORT=str(chroma.port), CHROMA_SSL=str(chroma.ssl).lower())
    else:
        env["CHROMA_PERSIST_DIR"] = str(chroma.persist_dir)
    if chroma.tenant:
        env["CHROMA_TENANT"] = chroma.tenant
    if chroma.database:
        env["CHROMA_DATABASE"] = chroma.database
    return env


def render_env(env: dict[str, str], run_id: str) -> str:
    lines = [
        f"# Written by `runbook rollback` for run {run_id} at {utc_now()}: point the app back at ChromaDB.",
        "# Load it before starting the app, e.g. `set -a; . ./rollback.env; set +a`.",
    ]
    if "CHROMA_HOST" in env:
        lines.append(
            "# CHROMA_AUTH_TOKEN (if the server needs one) stays in your environment; it is never written here."
        )
    lines += [f"{k}={shlex.quote(v)}" for k, v in env.items()]
    return "\n".join(lines) + "\n"


# --- the step ---------------------------------------------------------------------------------------
def _chroma_actions(plan: ChromaPlan) -> list[Action]:
    if plan.mode == "restore":
        assert plan.backup is not None and plan.persist_dir is not None
        return [Action("ChromaDB", RESTORE_DIR, str(plan.persist_dir), f"from {plan.backup.path}: {plan.note}")]
    if plan.mode == "unchanged":
        return [Action("ChromaDB", KEEP_DIR, str(plan.persist_dir), plan.note)]
    return [Action("ChromaDB", SKIP, "ChromaDB", plan.note, status="skipped")]


def _count_rows(backup_counts: dict[str, int], health: dict[str, Any]) -> list[dict[str, Any]]:
    restored = health.get("collections", {})
    rows = []
    for name in sorted(set(backup_counts) | set(restored)):
        after = restored.get(name, {})
        rows.append(
            {
                "collection": name,
                "backup_count": backup_counts.get(name),
                "restored_count": after.get("count"),
                "query_ok": after.get("query_ok"),
                "match": name in backup_counts and backup_counts.get(name) == after.get("count"),
            }
        )
    return rows


def rollback(step: Step) -> RollbackResult:
    """The rollback step (``05_rollback.ipynb``): plan, and with ``confirm=True`` carry the plan out."""
    p: RollbackParams = step.p
    run_id = step.run.run_id
    result = RollbackResult(ok=True, run_id=run_id, confirmed=bool(p.confirm))
    checkpoint = read_run_checkpoint(step.run)
    if not checkpoint.get("collections") and not checkpoint.get("backup_path"):
        result.warnings.append(f"Run {run_id} recorded no migration work (it stopped before the backup).")

    # 1. Plan. Everything here only reads; a bad backup or a mismatched setting stops the rollback now.
    if p.remove_qdrant:
        _check_same_target(step, checkpoint, result.warnings)
    chroma_plan = plan_chroma(step, checkpoint, result.warnings)
    result.chroma = chroma_plan.to_dict()
    result.actions = _chroma_actions(chroma_plan)
    target: QdrantTarget | None = None
    try:
        if p.remove_qdrant:
            target = _open_target(step)
        if target is not None:
            result.qdrant_before = qdrant_state(target)
            qdrant_actions, qdrant_warnings = plan_qdrant(checkpoint, run_id, result.qdrant_before)
            result.actions += qdrant_actions
            result.warnings += qdrant_warnings
        elif p.remove_qdrant:
            result.actions.append(
                Action("Qdrant", SKIP, "Qdrant", f"no local storage at {step.settings.qdrant.path}", status="skipped")
            )
        else:
            result.actions.append(
                Action("Qdrant", SKIP, "Qdrant", "remove_qdrant=False: Qdrant is left as it is", status="skipped")
            )
        result.env = chroma_env(step.settings)
        env_path = step.run.dir / ENV_FILE
        result.actions.append(
            Action("app", WRITE_ENV, str(env_path), ", ".join(f"{k}={v}" for k, v in result.env.items()))
        )
        log.info("rollback plan for run %s (%s):", run_id, "carrying it out" if p.confirm else "plan only")
        for a in result.actions:
            log.info("  %s: %s %s - %s", a.system, a.op, a.name, a.detail)
        table = result.plan_table()
        show(table if in_notebook() else table.to_string(index=False))
        if not p.confirm:
            for a in result.actions:
                if a.status == "planned":
                    a.status = "not done (confirm=False)"
            return result

        # 2. Stage the restore (copy + verify) before changing anything, then change ChromaDB, then Qdrant.
        if chroma_plan.mode == "restore":
            assert chroma_plan.backup is not None and chroma_plan.persist_dir is not None
            staging = stage_restore(chroma_plan.backup, chroma_plan.persist_dir)
            old = swap_in(staging, chroma_plan.persist_dir)
            result.restored_from = str(chroma_plan.backup.path)
            result.kept_old_dir = str(old) if old else None
            result.actions[0].status = "done"
            after = chroma_files.compare_checksums(chroma_plan.backup.manifest["files"], chroma_plan.persist_dir)
            if after:
                result.errors.append(
                    f"The restored {chroma_plan.persist_dir} differs from the backup's checksums: "
                    + "; ".join(after[:5])
                    + "."
                )
            log.info(
                "ChromaDB: restored %s from %s (previous kept as %s)",
                chroma_plan.persist_dir,
                result.restored_from,
                old,
            )
        elif chroma_plan.mode == "unchanged":
            result.actions[0].status = "done (unchanged)"
        if target is not None:
            apply_qdrant(target, result.actions, result.errors)
            result.qdrant_after = qdrant_state(target)
    finally:
        if target is not None:
            target.close()

    # 3. Point the app back at ChromaDB, then prove ChromaDB is healthy and complete.
    result.env_written = render_env(result.env, run_id)
    write_text_scrubbed(env_path, result.env_written)
    result.env_file = str(env_path)
    result.actions[-1].status = "done"
    if chroma_plan.mode != "skipped" or step.settings.chroma.is_server:
        result.health = chroma_health(step.settings.chroma)
        if result.health["error"]:
            result.errors.append(result.health["error"])
        if chroma_plan.mode != "skipped":
            result.counts = _count_rows(chroma_plan.backup_counts, result.health)
            bad = [r for r in result.counts if not r["match"]]
            if bad:
                result.errors.append(
                    "Counts differ from the backup for "
                    + ", ".join(
                        f"{r['collection']} (backup {r['backup_count']}, now {r['restored_count']})" for r in bad
                    )
                    + "."
                )
    result.ok = not result.errors
    return result
