"""The ChromaDB part of the rollback: plan it, restore the directory from the run's backup when it must be, check
its health.

* :func:`plan_chroma` (reads only): loads the run's backup and verifies *every* checksum, then decides whether the
  live directory is kept (:class:`ChromaPlan` ``mode="keep"``: the app's writes made to it during the migration
  stay), restored from the backup (``"restore"``: only when it is missing, or damaged (SQLite's integrity check
  fails, or chromadb cannot open a scratch copy of it), or ``restore_from_backup=True``), or not touched at all
  (``"skipped"``);
* :func:`stage_restore` and :func:`swap_in` (the change, restore only): the backup's data is copied to a temporary
  sibling and verified, then the live directory (if any) is renamed to ``<dir>.old-<time>`` (kept, never deleted)
  and the copy renamed into place;
* :func:`chroma_health` and :func:`count_rows` (the check afterwards): every collection answers a query; its count
  is compared with the backup only when that comparison means something (restored, and nothing came back from
  Qdrant).
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from runbook_lib.chroma import files as chroma_files
from runbook_lib.chroma.backup import Backup, load_backup, verify_backup
from runbook_lib.chroma.connect import open_source
from runbook_lib.chroma.writer import replace_directory
from runbook_lib.config.settings import ChromaSettings
from runbook_lib.errors import BackupError, ConfigError
from runbook_lib.kernel.step import Step
from runbook_lib.steps.rollback.plan import KEEP_DIR, RESTORE_DIR, SKIP, Action


# --- the plan --------------------------------------------------------------------------------------
@dataclass
class ChromaPlan:
    """The ChromaDB side of the plan."""

    mode: str  # "keep" (the live directory stays) | "restore" (swap in the backup) | "skipped"
    note: str
    persist_dir: Path | None = None
    backup: Backup | None = None
    live_differences: list[str] = field(default_factory=list)
    backup_counts: dict[str, int] = field(default_factory=dict)
    damage: str | None = None  # why the live directory cannot be kept (restore because damaged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "note": self.note,
            "persist_dir": str(self.persist_dir) if self.persist_dir else None,
            "backup": self.backup.summary() if self.backup else None,
            "live_differences": self.live_differences[:50],
            "backup_counts": self.backup_counts,
            "damage": self.damage,
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


def live_damage(settings: ChromaSettings, persist_dir: Path) -> str | None:
    """Why the live directory cannot be kept (it is damaged), or None: its SQLite database must exist and pass
    SQLite's integrity check (read-only), and chromadb must open a scratch copy of it and list its collections."""
    db = persist_dir / chroma_files.SQLITE_NAME
    if not db.is_file():
        return f"it has no {chroma_files.SQLITE_NAME}"
    try:
        integrity = chroma_files.sqlite_integrity(db)
    except sqlite3.Error as exc:
        return f"SQLite cannot read {db.name} ({exc})"
    if integrity != "ok":
        return f"SQLite's integrity check of {db.name} fails ({integrity[:200]})"
    try:
        with open_source(settings) as source:
            source.collection_names()
    except Exception as exc:  # any failure to open it is damage, whatever chromadb raises
        return f"chromadb cannot open a scratch copy of it ({type(exc).__name__}: {str(exc)[:200]})"
    return None


def collection_counts(settings: ChromaSettings, *, copy_from: Path | None = None) -> dict[str, int]:
    """Records per collection, read from a scratch copy (of ``copy_from`` or the live directory)."""
    with open_source(settings, copy_from=copy_from) as source:
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
                "The run read from a Chroma server, which has no file backup and is kept as it is (the migration "
                "never writes its source); Qdrant's changes since the last sync are brought back into it.",
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
    if not persist_dir.exists():
        plan.note = f"{persist_dir} is missing: it is restored from the verified backup."
    elif not persist_dir.is_dir():
        raise ConfigError(f"CHROMA_PERSIST_DIR points to {persist_dir}, which is a file, not a ChromaDB directory.")
    elif not chroma_files.compare_checksums(backup.manifest["files"], persist_dir):
        plan.mode = "keep"
        plan.note = f"{persist_dir} is a byte-identical copy of the verified backup (restored earlier): it stays."
    elif (damage := live_damage(chroma, persist_dir)) is not None:
        plan.damage = damage
        plan.note = (
            f"{persist_dir} is damaged ({damage}): it is restored from the verified backup and kept as "
            "<dir>.old-<time>."
        )
        warnings.append(
            f"ChromaDB at {persist_dir} is damaged ({damage}): it is restored from the backup of run {run_id}; writes "
            "made to it since then that never reached Qdrant stay only in <dir>.old-<time>."
        )
    elif step.p.restore_from_backup:
        plan.note = (
            f"restore_from_backup=True: {persist_dir} is replaced by the verified backup and kept as <dir>.old-<time>."
        )
        warnings.append(
            f"restore_from_backup=True: writes made to {persist_dir} since the backup of run {run_id} that never "
            "reached Qdrant are not in the restored directory (they stay in <dir>.old-<time>)."
        )
    else:
        plan.mode = "keep"
        source_files = backup.manifest.get("source_files")
        plan.live_differences = chroma_files.compare_checksums(source_files, persist_dir) if source_files else []
        if source_files is not None and not plan.live_differences:
            plan.note = (
                f"{persist_dir} is unchanged since the backup (all {len(source_files)} checksums match): it stays."
            )
        else:
            changed = f" ({len(plan.live_differences)} file difference(s))" if plan.live_differences else ""
            plan.note = (
                f"{persist_dir} changed since the backup{changed}: it stays, so every write the app made to it "
                "during the migration is kept (it is not replaced by the older backup)."
            )
    plan.backup_counts = collection_counts(chroma, copy_from=backup.data_dir)
    return plan


def chroma_actions(plan: ChromaPlan) -> list[Action]:
    if plan.mode == "restore":
        assert plan.backup is not None and plan.persist_dir is not None
        return [Action("ChromaDB", RESTORE_DIR, str(plan.persist_dir), f"from {plan.backup.path}: {plan.note}")]
    if plan.mode == "keep":
        return [Action("ChromaDB", KEEP_DIR, str(plan.persist_dir), plan.note, status="kept")]
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
    """Rename the live directory to ``<dir>.old-<time>`` and the verified copy into its place (with an intent
    record first: :func:`~runbook_lib.chroma.writer.replace_directory`, so a crash between the renames is finished
    by the next step).

    Returns where the previous directory was kept (None when there was none)."""
    old: Path | None = None
    if persist_dir.exists() or persist_dir.is_symlink():
        old = _free_name(persist_dir.with_name(f"{persist_dir.name}.old-{_stamp()}"))
    try:
        replace_directory(persist_dir, staging, old)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BackupError(
            f"Could not swap the restored copy into {persist_dir} ({exc}): the directory was put back as it was "
            "(nothing was changed); stop whatever holds it (or restore it by hand from the backup) and run the "
            "rollback again."
        ) from exc
    return old


# --- the check afterwards --------------------------------------------------------------------------
def chroma_health(settings: ChromaSettings) -> dict[str, Any]:
    """Open ChromaDB (a scratch copy of a directory, or the server) and check every collection answers."""
    where = settings.describe()
    report: dict[str, Any] = {"checked": where, "ok": False, "collections": {}, "error": None}
    try:
        with open_source(settings) as source:
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


def count_rows(backup_counts: dict[str, int], health: dict[str, Any], *, compare: bool) -> list[dict[str, Any]]:
    """Per collection: the backup's count, the count now, whether it answered a query, and (``compare``: the
    directory was restored from the backup and nothing came back from Qdrant) whether the counts match; otherwise
    ``match`` is None: ChromaDB holds more than the backup by design (the app's writes, Qdrant's changes)."""
    now = health.get("collections", {})
    rows = []
    for name in sorted(set(backup_counts) | set(now)):
        after = now.get(name, {})
        match = (name in backup_counts and backup_counts.get(name) == after.get("count")) if compare else None
        rows.append(
            {
                "collection": name,
                "backup_count": backup_counts.get(name),
                "count": after.get("count"),
                "query_ok": after.get("query_ok"),
                "match": match,
            }
        )
    return rows
