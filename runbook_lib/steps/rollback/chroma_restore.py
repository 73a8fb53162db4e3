"""The ChromaDB part of the rollback: plan it, restore the directory from the run's backup, check its health.

* :func:`plan_chroma` (reads only): loads the run's backup and verifies *every* checksum, then decides whether the
  live directory is restored (:class:`ChromaPlan` ``mode="restore"``), left in place because it is still
  byte-identical to its backup-time state (``"unchanged"``), or not touched at all (``"skipped"``);
* :func:`stage_restore` and :func:`swap_in` (the change): the backup's data is copied to a temporary sibling and
  verified, then the live directory is renamed to ``<dir>.old-<time>`` (kept, never deleted) and the copy renamed
  into place;
* :func:`chroma_health` and :func:`count_rows` (the check afterwards): every collection answers a query, and its
  count matches the backup.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from runbook_lib.config.settings import ChromaSettings
from runbook_lib.errors import BackupError, ConfigError
from runbook_lib.runtime.step import Step
from runbook_lib.source import chroma_files
from runbook_lib.source.backup import Backup, load_backup, verify_backup
from runbook_lib.source.chroma import ChromaSource
from runbook_lib.steps.rollback.plan import KEEP_DIR, RESTORE_DIR, SKIP, Action

_TRANSIENT_SUFFIXES = ("-wal", "-journal")


# --- the plan --------------------------------------------------------------------------------------
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


def chroma_actions(plan: ChromaPlan) -> list[Action]:
    if plan.mode == "restore":
        assert plan.backup is not None and plan.persist_dir is not None
        return [Action("ChromaDB", RESTORE_DIR, str(plan.persist_dir), f"from {plan.backup.path}: {plan.note}")]
    if plan.mode == "unchanged":
        return [Action("ChromaDB", KEEP_DIR, str(plan.persist_dir), plan.note)]
    return [Action("ChromaDB", SKIP, "ChromaDB", plan.note, status="skipped")]


# --- the restore -----------------------------------------------------------------------------------
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


# --- the check afterwards --------------------------------------------------------------------------
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


def count_rows(backup_counts: dict[str, int], health: dict[str, Any]) -> list[dict[str, Any]]:
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
