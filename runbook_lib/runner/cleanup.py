"""Post-migration cleanup of backups: ``runbook cleanup --older-than 7d [--yes] [--force]``.

Lists the backups under ``<CHROMA_PERSIST_DIR>.backup/`` (one folder per migration run, plus any
``<run_id>.partial`` left by an interrupted backup) that are older than the limit; ``--yes`` deletes them.
Without ``--force`` these are kept, however old:

* the backup of a run that has not finished (its manifest says a step is running or failed, or cannot be read):
  the run may still be resumed or rolled back;
* the backup of the newest run of each collection that is still live in Qdrant (the run's target collection exists,
  or its alias still points at it): what a rollback of the live data restores from; when Qdrant cannot be read,
  every run that migrated something keeps its backup;
* the newest backup that passes its checksum verification.

Without ``--yes`` nothing is deleted. A deleted backup cannot be restored: a rollback of that run can then only keep
what is still in the live directory.

What the live-data steps leave beside the directory is listed too, with its size, and deleted with ``--yes`` when
older than the limit (:func:`plan_leftovers`): the staged copies of a killed reverse sync or rollback
(``<dir>.sync-staging-*``, ``<dir>.restore-*``), the directories a sync replaced or a rollback set aside
(``<dir>.pre-sync-*``, ``<dir>.old-*``) and the exports of what a rollback deleted from Qdrant
(``outputs/<run_id>/rollback_export/``). Never deleted, even with ``--force``: one that the record of a swap in
progress (``<dir>.swap.json``) names, and a staged copy while a run is being driven or a process holds it open.
Kept unless ``--force``: the newest replaced or set-aside directory (the only copy of what the last swap replaced)
and the export of a run that has not finished.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runbook_lib.chroma.backup import backup_root, load_backup, verify_backup
from runbook_lib.chroma.writer import honour_swap, intent_path, processes_holding
from runbook_lib.config.settings import QdrantSettings, load_settings
from runbook_lib.errors import BackupError, RunbookError
from runbook_lib.state.checkpoint import CHECKPOINT, load_checkpoint
from runbook_lib.state.run import MANIFEST, Run
from runbook_lib.steps.rollback.export import EXPORT_DIR

DEFAULT_OLDER_THAN = "7d"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
PARTIAL_SUFFIX = ".partial"


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w`` (a number and a unit) as a :class:`timedelta`."""
    match = _DURATION.match(text or "")
    if not match:
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit (s, m, h, d or w), for example 7d, 12h or 30m."
        )
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


def _duration_arg(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_age(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.0f}{unit}" if seconds % size == 0 else f"{value:.1f}{unit}"
    return f"{seconds // 60}m"


def format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


@dataclass
class BackupInfo:
    """One backup folder and what cleanup decides about it."""

    name: str
    path: Path
    created_at: datetime
    bytes: int
    status: str  # verified | corrupt: ... | incomplete | unreadable manifest | not checked
    action: str = "keep"  # delete | keep: ... | deleted | failed: ...
    delete: bool = False

    def age(self, now: datetime) -> timedelta:
        return now - self.created_at

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "backup": self.name,
            "path": str(self.path),
            "created_at": self.created_at.isoformat(timespec="seconds"),
            "age": format_age(self.age(now)),
            "bytes": self.bytes,
            "status": self.status,
            "action": self.action,
        }


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def find_backups(root: Path) -> list[BackupInfo]:
    """Every backup folder under ``root``, newest first."""
    found: list[BackupInfo] = []
    if not root.is_dir():
        return found
    for path in root.iterdir():
        if not path.is_dir():
            continue
        if path.name.endswith(PARTIAL_SUFFIX):
            found.append(BackupInfo(path.name, path, _mtime(path), _tree_bytes(path), "incomplete"))
            continue
        try:
            manifest = load_backup(path).manifest
            created = datetime.fromisoformat(str(manifest["created_at"]))
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            status = "not checked"
        except (BackupError, KeyError, ValueError):
            created, status = _mtime(path), "unreadable manifest"
        found.append(BackupInfo(path.name, path, created, _tree_bytes(path), status))
    found.sort(key=lambda b: (b.created_at, b.name), reverse=True)
    return found


# --- what the runs say ---------------------------------------------------------------------------------------
#: Step statuses of a run that has finished cleanly.
_FINISHED = {"ok"}


@dataclass
class RunFacts:
    """What cleanup needs to know about one run folder."""

    run_id: str
    created_at: str
    unfinished: str | None  # why the run is not finished (a step running or failed, an unreadable file), or None
    #: source collection -> (Qdrant collection the run wrote, alias it set or None)
    migrated: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def read_runs(outputs: Path) -> dict[str, RunFacts]:
    """run id -> :class:`RunFacts` for every run folder under ``outputs`` (nothing is written)."""
    runs: dict[str, RunFacts] = {}
    if not outputs.is_dir():
        return runs
    for folder in sorted(outputs.iterdir()):
        if not (folder / MANIFEST).is_file():
            continue
        facts = RunFacts(folder.name, folder.name, None)
        runs[folder.name] = facts
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            facts.created_at = str(manifest.get("created_at") or folder.name)
            steps = manifest.get("steps") or {}
            bad = {name: str(st.get("status")) for name, st in steps.items() if st.get("status") not in _FINISHED}
            if bad:
                facts.unfinished = "run not finished (" + ", ".join(f"{k} {v}" for k, v in sorted(bad.items())) + ")"
        except (OSError, ValueError, AttributeError):
            facts.unfinished = "run manifest unreadable"
            continue
        try:
            checkpoint = load_checkpoint(folder / "state" / CHECKPOINT) or {"collections": {}}
        except RunbookError:
            facts.unfinished = "migration checkpoint unreadable"
            continue
        for source, state in checkpoint["collections"].items():
            if isinstance(state, dict) and state.get("target") and state.get("status") not in ("pending", "skipped"):
                facts.migrated[str(source)] = (str(state["target"]), state.get("alias"))
    return runs


@dataclass(frozen=True)
class LiveNames:
    """The collections and aliases (alias -> collection) present in Qdrant."""

    collections: frozenset[str]
    aliases: Mapping[str, str]

    def holds(self, target: str, alias: str | None) -> bool:
        """True when a run's target collection is still there, or its alias still points at it."""
        return target in self.collections or (alias is not None and self.aliases.get(alias) == target)


def read_live(settings: QdrantSettings) -> LiveNames | None:
    """What is live in Qdrant, or None when it cannot be read (a server down, local storage open elsewhere).
    An embedded local-mode folder that does not exist holds nothing (and is not created)."""
    from runbook_lib.qdrant.connect import holds_storage, open_target

    if not holds_storage(settings):
        return LiveNames(frozenset(), {})

    try:
        with open_target(settings) as target:
            return LiveNames(frozenset(target.collection_names()), dict(target.aliases()))
    except Exception:
        return None


def protected_backups(runs: Mapping[str, RunFacts], live: LiveNames | None) -> dict[str, str]:
    """run id -> why its backup must be kept without ``--force``: the run is unfinished, or it is the newest run of
    a collection still live in Qdrant (every run that migrated something when ``live`` is None: unknown)."""
    keep: dict[str, str] = {}
    newest: dict[str, RunFacts] = {}
    for facts in runs.values():
        if facts.unfinished:
            keep[facts.run_id] = facts.unfinished
        for source, (target, alias) in facts.migrated.items():
            if live is None:
                keep.setdefault(facts.run_id, "Qdrant could not be read to tell whether its collections are live")
            elif live.holds(target, alias):
                best = newest.get(source)
                if best is None or (facts.created_at, facts.run_id) > (best.created_at, best.run_id):
                    newest[source] = facts
    live_of: dict[str, list[str]] = {}
    for source, facts in sorted(newest.items()):
        target, alias = facts.migrated[source]
        name = alias or target
        live_of.setdefault(facts.run_id, []).append(repr(source) + ("" if name == source else f" (as {name!r})"))
    for run_id, names in live_of.items():
        reason = f"newest run of {', '.join(names)}, live in Qdrant"
        keep[run_id] = keep[run_id] + "; " + reason if run_id in keep else reason
    return keep


def plan_cleanup(
    root: Path,
    older_than: timedelta,
    *,
    force: bool = False,
    now: datetime | None = None,
    protect: Mapping[str, str] | None = None,
) -> list[BackupInfo]:
    """The backups under ``root`` with ``action`` decided (nothing is deleted here).

    ``protect`` (run id -> reason, from :func:`protected_backups`) names backups kept unless ``force``; so is the
    newest backup that passes :func:`verify_backup` (backups are verified newest first until one passes)."""
    now = now or datetime.now(UTC)
    protect = protect or {}
    backups = find_backups(root)
    newest_verified: BackupInfo | None = None
    for info in backups:
        if info.status != "not checked":
            continue
        try:
            verify_backup(load_backup(info.path))
        except (BackupError, KeyError) as exc:
            info.status = "corrupt: " + (str(exc) if isinstance(exc, BackupError) else "manifest lists no files")
            continue
        info.status = "verified"
        newest_verified = info
        break
    for info in backups:
        run_id = info.name.removesuffix(PARTIAL_SUFFIX)
        if info.age(now) < older_than:
            info.action = f"keep: newer than {format_age(older_than)}"
        elif run_id in protect and not force:
            info.action = f"keep: {protect[run_id]} (--force to delete it)"
        elif info is newest_verified and not force:
            info.action = "keep: newest verified backup (--force to delete it)"
        else:
            info.action = "delete"
            info.delete = True
    return backups


def delete_backups(backups: list[BackupInfo]) -> list[str]:
    """Delete the backups marked for deletion; returns the errors (empty: all deleted)."""
    errors: list[str] = []
    for info in backups:
        if not info.delete:
            continue
        try:
            shutil.rmtree(info.path)
        except OSError as exc:
            info.action = f"failed: {exc}"
            errors.append(f"Could not delete {info.path}: {exc}.")
            continue
        info.action = "deleted"
    return errors


def _print_table(backups: list[BackupInfo], now: datetime) -> None:
    rows = [b.to_dict(now) for b in backups]
    headers = ("backup", "created_at", "age", "size", "status", "action")
    cells = [
        (r["backup"], r["created_at"], r["age"], format_bytes(int(r["bytes"])), r["status"], r["action"]) for r in rows
    ]
    widths = [max(len(h), *(len(str(c[i])) for c in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for c in cells:
        print("  ".join(str(v).ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


# --- what the live-data steps leave beside the directory ---------------------------------------------------------
#: sibling suffix -> what it is; staged copies come first
LEFTOVER_KINDS: dict[str, str] = {
    ".sync-staging-": "staged copy of a reverse sync or rollback that did not finish",
    ".restore-": "staged copy of a rollback's restore that did not finish",
    ".pre-sync-": "directory a reverse sync or rollback replaced",
    ".old-": "directory a rollback set aside",
}
_STAGED = (".sync-staging-", ".restore-")


@dataclass
class Leftover:
    """A copy left beside CHROMA_PERSIST_DIR (or a rollback export in a run folder) and what cleanup decides."""

    path: Path
    kind: str
    created_at: datetime
    bytes: int
    action: str = "keep"
    delete: bool = False
    #: the suffix it was found by (``.old-`` ...), or the run id for a rollback export
    group: str = ""

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "created_at": self.created_at.isoformat(timespec="seconds"),
            "age": format_age(now - self.created_at),
            "bytes": self.bytes,
            "action": self.action,
        }


def _tree_mtime(path: Path) -> datetime:
    """The newest modification under ``path`` (a staged copy written for an hour is as old as its last write)."""
    times = [p.stat().st_mtime for p in path.rglob("*")] + [path.stat().st_mtime]
    return datetime.fromtimestamp(max(times), UTC)


def find_leftovers(persist_dir: Path, outputs: Path) -> list[Leftover]:
    """Every copy the live-data steps left: siblings of ``persist_dir`` and run folders' rollback exports."""
    found: list[Leftover] = []
    parent = persist_dir.parent
    if parent.is_dir():
        for path in sorted(parent.iterdir()):
            suffix = next((k for k in LEFTOVER_KINDS if path.name.startswith(persist_dir.name + k)), None)
            if suffix is not None and path.is_dir():
                found.append(Leftover(path, LEFTOVER_KINDS[suffix], _tree_mtime(path), _tree_bytes(path), group=suffix))
    if outputs.is_dir():
        for folder in sorted(outputs.iterdir()):
            export = folder / EXPORT_DIR
            if (folder / MANIFEST).is_file() and export.is_dir():
                kind = f"export of what run {folder.name}'s rollback deleted from Qdrant"
                found.append(Leftover(export, kind, _tree_mtime(export), _tree_bytes(export), group=folder.name))
    return found


def runs_driven_now(outputs: Path) -> list[str]:
    """The runs whose lock a process holds right now (a step of theirs is running)."""
    busy = []
    for facts in read_runs(outputs).values():
        try:
            with Run.open(outputs, facts.run_id).driving():
                pass
        except RunbookError:
            busy.append(facts.run_id)
    return busy


def _named_by_swap_record(persist_dir: Path) -> set[Path]:
    record = intent_path(persist_dir)
    try:
        data = json.loads(record.read_text()) if record.is_file() else {}
    except (OSError, ValueError):
        return {p for p in persist_dir.parent.iterdir() if p.name.startswith(persist_dir.name + ".")}  # unknown: all
    return {Path(str(data[k])) for k in ("staged", "previous") if isinstance(data, dict) and data.get(k)}


def plan_leftovers(
    persist_dir: Path,
    outputs: Path,
    older_than: timedelta,
    *,
    force: bool = False,
    now: datetime | None = None,
    runs: Mapping[str, RunFacts] | None = None,
) -> list[Leftover]:
    """The leftovers with ``action`` decided (nothing is deleted here); see the module's docstring for what is kept."""
    now = now or datetime.now(UTC)
    runs = read_runs(outputs) if runs is None else runs
    leftovers = find_leftovers(persist_dir, outputs)
    needed = _named_by_swap_record(persist_dir)
    driven = runs_driven_now(outputs)
    newest_set_aside = max(
        (item for item in leftovers if item.group in (".pre-sync-", ".old-")),
        key=lambda item: (item.created_at, item.path.name),
        default=None,
    )
    for item in leftovers:
        holders = processes_holding(item.path) if item.group in _STAGED else []
        if item.path in needed:
            item.action = f"keep: named by the swap record {intent_path(persist_dir)}"
        elif item.group in _STAGED and driven:
            item.action = f"keep: run {driven[0]} is running now and may be writing it"
        elif holders:
            item.action = f"keep: open in process {holders[0]}"
        elif item.path.name == EXPORT_DIR and item.group in driven:
            item.action = f"keep: run {item.group} is running now"
        elif now - item.created_at < older_than:
            item.action = f"keep: newer than {format_age(older_than)}"
        elif item is newest_set_aside and not force:
            item.action = "keep: the newest directory a swap replaced (--force to delete it)"
        elif item.path.name == EXPORT_DIR and item.group in runs and runs[item.group].unfinished and not force:
            item.action = f"keep: {runs[item.group].unfinished} (--force to delete it)"
        else:
            item.action = "delete"
            item.delete = True
    return leftovers


def delete_leftovers(leftovers: list[Leftover]) -> list[str]:
    """Delete the leftovers marked for deletion; returns the errors (empty: all deleted)."""
    errors: list[str] = []
    for item in leftovers:
        if not item.delete:
            continue
        try:
            shutil.rmtree(item.path)
        except OSError as exc:
            item.action = f"failed: {exc}"
            errors.append(f"Could not delete {item.path}: {exc}.")
            continue
        item.action = "deleted"
    return errors


def _print_leftovers(leftovers: list[Leftover], now: datetime) -> None:
    for item in leftovers:
        row = item.to_dict(now)
        print(f"  {row['path']}  ({row['kind']}; {format_bytes(item.bytes)}, {row['age']} old): {row['action']}")


def rollback_warning(doomed: list[BackupInfo], persist_dir: Path) -> str:
    """What deleting these backups means for a rollback, in one sentence."""
    names = ", ".join(b.name.removesuffix(PARTIAL_SUFFIX) for b in doomed[:5]) + (", ..." if len(doomed) > 5 else "")
    return (
        f"A deleted backup cannot be restored: a rollback of run(s) {names} can then only keep what is still in the "
        f"live directory {persist_dir} (CHROMA_PERSIST_DIR), with no older copy to fall back on if it is damaged."
    )


def add_parser(subparsers: Any) -> None:
    """Add the ``cleanup`` subcommand to the ``runbook`` command's subparsers."""
    sp = subparsers.add_parser(
        "cleanup",
        help="list (and with --yes delete) migration backups older than a limit",
        description=(
            "List the backups under <CHROMA_PERSIST_DIR>.backup/ older than --older-than; --yes deletes them. "
            "Kept unless --force: the backup of an unfinished run, of the newest run of each collection still live "
            "in Qdrant, and the newest verified backup. A deleted backup cannot be restored: a rollback can then "
            "only keep what is still in the live directory. Also listed, and deleted with --yes when older than the "
            "limit: the copies syncs and rollbacks leave beside the directory (.sync-staging-*, .restore-*, "
            ".pre-sync-*, .old-*) and rollback exports; one a swap record names or a running step may use is never "
            "deleted, the newest replaced directory only with --force."
        ),
    )
    sp.add_argument(
        "--older-than",
        type=_duration_arg,
        default=DEFAULT_OLDER_THAN,
        metavar="AGE",
        help=f"age limit such as 7d, 12h or 30m (default {DEFAULT_OLDER_THAN})",
    )
    sp.add_argument("--yes", action="store_true", help="delete the listed backups (default: only list them)")
    sp.add_argument(
        "--force",
        action="store_true",
        help="also delete the backups kept for unfinished runs, live collections and the newest verified one",
    )


def run(args: argparse.Namespace) -> int:
    """``runbook cleanup``: 0 done (or nothing to do), 1 a deletion failed, 2 a bad option or setting."""
    raw = getattr(args, "older_than", DEFAULT_OLDER_THAN)
    try:
        older_than = raw if isinstance(raw, timedelta) else parse_duration(str(raw))
    except ValueError as exc:
        print(f"runbook: error: --older-than {exc}", file=sys.stderr)
        return 2
    yes = bool(getattr(args, "yes", False))
    force = bool(getattr(args, "force", False))
    try:
        settings = load_settings()
    except RunbookError as exc:
        print(f"runbook: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if settings.chroma.is_server:
        print("The source is a Chroma server (CHROMA_HOST is set): the runbook keeps no file backups of it.")
        return 0
    persist_dir = settings.chroma.persist_dir
    try:  # a swap a crash interrupted is finished (or undone) first: what is left beside the directory is then known
        swap_note = honour_swap(settings.chroma)
    except RunbookError as exc:
        print(f"runbook: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if swap_note:
        print(swap_note)
    root = backup_root(persist_dir)
    now = datetime.now(UTC)
    protect = {} if force else protected_backups(read_runs(settings.outputs), read_live(settings.qdrant))
    backups = plan_cleanup(root, older_than, force=force, now=now, protect=protect)
    doomed = [b for b in backups if b.delete]
    size = format_bytes(sum(b.bytes for b in doomed))
    errors = delete_backups(backups) if yes else []
    if not backups:
        print(f"No backups under {root}.")
    else:
        print(f"Backups under {root} (limit: older than {format_age(older_than)}):")
        _print_table(backups, now)
    leftovers = plan_leftovers(persist_dir, settings.outputs, older_than, force=force, now=now)
    extra = [item for item in leftovers if item.delete]
    extra_size = format_bytes(sum(item.bytes for item in extra))
    errors += delete_leftovers(leftovers) if yes else []
    if leftovers:
        total = format_bytes(sum(item.bytes for item in leftovers))
        print(f"Copies left by syncs and rollbacks ({len(leftovers)}, {total}):")
        _print_leftovers(leftovers, now)
    if not doomed and not extra:
        print(f"Nothing to delete: nothing is older than {format_age(older_than)} (or it is kept).")
        return 0
    if doomed:
        print(rollback_warning(doomed, persist_dir))
    parts = [f"{len(doomed)} backup(s), {size}"] if doomed else []
    parts += [f"{len(extra)} leftover cop(ies), {extra_size}"] if extra else []
    what = " and ".join(parts)
    if not yes:
        print(f"{what} would be deleted: run again with --yes to delete them.")
        return 0
    if errors:
        for err in errors:
            print(f"runbook: error: {err}", file=sys.stderr)
        return 1
    print(f"Deleted {what}.")
    return 0
