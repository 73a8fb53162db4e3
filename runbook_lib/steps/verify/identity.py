"""The ``identity`` check of one collection: the set of Chroma ids equals the set of payload ``chroma_id`` values.

Every point id must follow the SPEC rule (:func:`runbook_lib.core.mapping.point_id`) and no ``chroma_id`` may be
carried by two points. The streaming pass of :mod:`runbook_lib.steps.verify.checks` retrieves the expected points;
the target is scanned point by point (payload ``chroma_id`` only) only when the count or the expected points do not
match: when Qdrant's exact count equals the number of source ids and every expected point id is present carrying
its own ``chroma_id``, the point sets are equal by counting (expected ids are distinct, so there is no room for an
extra or duplicate point).
"""

from __future__ import annotations

from runbook_lib.core.compare import ABSENT
from runbook_lib.core.mapping import point_id
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.steps.verify.result import MAX_LISTED, CollectionReport


def check_identity(
    target: QdrantStore,
    rep: CollectionReport,
    ids: list[str],
    tcount: int,
    missing_expected: int,
    foreign_ids: int,
    pid_collisions: list[tuple[str, str]],
    page: int,
) -> None:
    """Set ``rep``'s ``identity`` check from the streaming pass's findings, scanning the target if they differ."""
    assert rep.differences is not None
    diffs = rep.differences
    n = len(ids)
    for cid, pid in pid_collisions[:MAX_LISTED]:
        diffs.add("identity", cid, "point id", "a point of its own", pid, "two Chroma ids map to one point id")
    if tcount == n and missing_expected == 0 and foreign_ids == 0:
        # Every expected (distinct) point exists with its own chroma_id and the exact count is n: nothing else.
        rep.checks["identity"].set(
            not pid_collisions,
            f"{n:,} ids equal; every point id follows the id rule",
            source_ids=n,
            target_chroma_ids=n,
            missing=0,
            missing_ids=[],
            extra=0,
            extra_ids=[],
            duplicated=0,
            wrong_point_id=0,
            point_id_collisions=len(pid_collisions),
            full_scan=False,
        )
        return
    # Something is off: scan every point's chroma_id to name the missing, extra and duplicated ids.
    holders: dict[str, list[str]] = {}
    no_chroma_id: list[str] = []
    wrong_pid: list[tuple[str, str]] = []
    scanned = 0
    for pid, cid in target.iter_chroma_ids(rep.target, page=max(page, 256)):
        scanned += 1
        if not isinstance(cid, str):
            no_chroma_id.append(pid)
            continue
        holders.setdefault(cid, []).append(pid)
        if point_id(cid) != pid:
            wrong_pid.append((cid, pid))
    source_set = set(ids)
    missing = [i for i in ids if i not in holders]
    extra = sorted(c for c in holders if c not in source_set)
    duplicated = sorted(c for c, pids in holders.items() if len(pids) > 1)
    for cid in missing[:MAX_LISTED]:
        diffs.add("identity", cid, "presence", "present", ABSENT, f"no point carries chroma_id {cid!r}")
    for cid in extra[:MAX_LISTED]:
        diffs.add("identity", cid, "presence", ABSENT, f"point {holders[cid][0]}", "not a source id")
    for pid in no_chroma_id[:MAX_LISTED]:
        diffs.add("identity", f"(point {pid})", "chroma_id", ABSENT, ABSENT, "point without a payload chroma_id")
    for cid in duplicated[:MAX_LISTED]:
        diffs.add(
            "identity",
            cid,
            "duplicate",
            "1 point",
            f"{len(holders[cid])} points: {holders[cid][:5]}",
            "one chroma_id on several points",
        )
    for cid, pid in wrong_pid[:MAX_LISTED]:
        diffs.add("identity", cid, "point id", point_id(cid), pid, "point id does not follow the id rule")
    ok = not (missing or extra or no_chroma_id or duplicated or wrong_pid or pid_collisions or foreign_ids)
    parts = [f"source {n:,} ids, Qdrant {len(holders):,} distinct chroma_ids on {scanned:,} points"]
    parts += [
        f"{label} {len(items):,}" + (f" (first {items[0]!r})" if items else "")
        for label, items in (
            ("missing", missing),
            ("extra", extra),
            ("duplicated", duplicated),
            ("wrong point id", [c for c, _ in wrong_pid]),
            ("without chroma_id", no_chroma_id),
        )
        if items
    ]
    if foreign_ids:
        parts.append(f"{foreign_ids} expected point(s) carry another chroma_id")
    rep.checks["identity"].set(
        ok,
        "; ".join(parts),
        source_ids=n,
        target_points=scanned,
        target_chroma_ids=len(holders),
        missing=len(missing),
        missing_ids=missing[:MAX_LISTED],
        extra=len(extra) + len(no_chroma_id),
        extra_ids=extra[:MAX_LISTED] + [f"(point {pid} without chroma_id)" for pid in no_chroma_id[:MAX_LISTED]],
        duplicated=len(duplicated),
        duplicated_ids=duplicated[:MAX_LISTED],
        wrong_point_id=len(wrong_pid),
        wrong_point_ids=[
            {"chroma_id": c, "point_id": pid, "expected": point_id(c)} for c, pid in wrong_pid[:MAX_LISTED]
        ],
        foreign_chroma_id=foreign_ids,
        point_id_collisions=len(pid_collisions),
        full_scan=True,
    )
