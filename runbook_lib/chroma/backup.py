"""Checksummed backups of a ChromaDB persistent directory (SPEC "Backup").

Layout: ``<CHROMA_PERSIST_DIR>.backup/<run_id>/data/`` holds the copy, ``manifest.json`` beside it
the sha256 of every copied file and of every live file at backup time (so verify can prove the
source was not modified) and the SQLite integrity check. A backup is verified right after it is
written and again before any restore.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook_lib.chroma import files as chroma_files
from runbook_lib.errors import BackupError

MANIFEST_NAME = "manifest.json"
DATA_DIR = "data"


def backup_root(persist_dir: Path) -> Path:
    return persist_dir.with_name(persist_dir.name + ".backup")


@dataclass(frozen=True)
class Backup:
    path: Path
    manifest: dict[str, Any]

    @property
    def data_dir(self) -> Path:
        return self.path / DATA_DIR

    @property
    def total_bytes(self) -> int:
        return sum(int(m["size"]) for m in self.manifest["files"].values())

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "files": len(self.manifest["files"]),
            "bytes": self.total_bytes,
            "sqlite_integrity": self.manifest.get("sqlite_integrity"),
            "created_at": self.manifest.get("created_at"),
            "verified": True,
        }


def create_backup(persist_dir: Path, run_id: str) -> Backup:
    """Copy ``persist_dir`` to its backup folder for ``run_id``, write the manifest, verify it."""
    dest = backup_root(persist_dir) / run_id
    if dest.exists():
        raise BackupError(
            f"A backup for run {run_id} already exists at {dest}; resume that run (it reuses its backup) "
            "or start a new run id."
        )
    db = persist_dir / chroma_files.SQLITE_NAME
    problem = chroma_files.sqlite_problem(db)
    if problem is not None:  # before anything is written: no empty backup folder is left behind
        raise chroma_files.damaged_sqlite_error(db, problem)
    needed = chroma_files.tree_size(persist_dir)
    chroma_files.ensure_free_space(dest.parent, needed, f"the backup of {persist_dir}")
    before = chroma_files.stat_tree(persist_dir)
    source_files = chroma_files.checksum_tree(persist_dir, with_wal=True)
    root_existed = dest.parent.exists()
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        try:
            chroma_files.copy_chroma_dir(persist_dir, tmp / DATA_DIR)
            data = tmp / DATA_DIR
            integrity = chroma_files.sqlite_integrity(data / chroma_files.SQLITE_NAME)
        except sqlite3.DatabaseError as exc:  # damaged pages the schema read did not reach
            raise chroma_files.damaged_sqlite_error(db, str(exc)) from exc
        changed = _changed_files(before, chroma_files.stat_tree(persist_dir))
        if changed:
            raise BackupError(
                f"{persist_dir} changed while it was being backed up ({', '.join(changed[:5])}): a live app is "
                "writing to it; run the migration again (it takes a new snapshot), or pause the app's writes "
                "for the few seconds of the backup.",
                changed=changed,
            )
        if integrity != "ok":
            raise BackupError(
                f"The SQLite copy of {persist_dir} failed its integrity check ({integrity}): {db} is damaged; "
                "repair or restore CHROMA_PERSIST_DIR before migrating it."
            )
        manifest = {
            "format": 1,
            "run_id": run_id,
            "source": str(persist_dir),
            "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),  # orders runs within a second
            "sqlite_integrity": integrity,
            "files": chroma_files.checksum_tree(data),
            "source_files": source_files,
            "source_files_with_wal": True,
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not root_existed:  # the backup root this call created, if nothing else is in it
            with contextlib.suppress(OSError):
                dest.parent.rmdir()
        raise
    backup = Backup(dest, manifest)
    verify_backup(backup)
    return backup


def load_backup(path: Path) -> Backup:
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BackupError(f"No backup manifest at {manifest_path}: the backup is missing or incomplete.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(
            f"The backup manifest {manifest_path} cannot be read ({exc}): the backup is corrupt."
        ) from exc
    return Backup(path, manifest)


def verify_backup(backup: Backup) -> None:
    """Check every file of the backup against its manifest; raise :class:`BackupError` on any difference."""
    problems = chroma_files.compare_checksums(backup.manifest["files"], backup.data_dir)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise BackupError(
            f"The backup at {backup.path} fails its checksum verification ({shown}): it cannot be trusted; "
            "do not restore from it.",
            problems=problems,
        )


def _changed_files(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def source_unchanged(backup: Backup, persist_dir: Path) -> list[str]:
    """Differences between the live directory now and the checksums taken at backup time, SQLite's ``-wal`` and
    ``-journal`` included when the backup recorded them (backups made before they were recorded: data files only)."""
    expected = backup.manifest.get("source_files", {})
    with_wal = bool(backup.manifest.get("source_files_with_wal"))
    return chroma_files.compare_checksums(expected, persist_dir, with_wal=with_wal)
