"""What the rollback deletes from Qdrant is kept: right before a collection is deleted every point is exported to
``outputs/<run_id>/rollback_export/<collection>.jsonl`` (kept until the run folder is removed) and, for a
collection whose changes were just brought back into ChromaDB, compared with the run's ledger. A point that differs
(the app still writing to Qdrant after the bring-back) stops that deletion: nothing written since is lost.

One JSON object per line: ``{"id": point id, "vector": base64 of the little-endian float32 values (a named vector:
{name: base64}), "payload": the payload}``; ``numpy.frombuffer(base64.b64decode(v), "<f4")`` reads a vector back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from runbook_lib.core.fingerprint import target_fingerprints
from runbook_lib.core.layouts import Layout
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.state.ledger import Ledger
from runbook_lib.state.run import outputs_guard
from runbook_lib.state.scrub import current_secrets, scrub
from runbook_lib.steps.sync.diff import point_record, same_target_state

EXPORT_DIR = "rollback_export"
_PAGE = 1024


def _encode(vector: Any) -> Any:
    if vector is None:
        return None
    if isinstance(vector, dict):
        return {name: _encode(v) for name, v in vector.items()}
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def export_path(run_dir: Path, collection: str) -> Path:
    """A new export file for ``collection`` (an earlier attempt's export is never overwritten)."""
    folder = run_dir / EXPORT_DIR
    with outputs_guard(folder):
        folder.mkdir(exist_ok=True)
    path = folder / f"{collection}.jsonl"
    k = 1
    while path.exists():
        path = folder / f"{collection}-{k}.jsonl"
        k += 1
    return path


def export_points(
    target: QdrantStore,
    name: str,
    path: Path,
    *,
    ledger: Ledger | None = None,
    collection: str | None = None,
    layout: Layout | None = None,
    allowed: Collection[str] = (),
) -> tuple[int, int]:
    """Write every point of Qdrant collection ``name`` to ``path``; returns (points written, points that differ
    from the ledger's ``collection``). With no ledger nothing is compared. ``allowed``: chroma ids known to differ
    (conflicts the bring-back left in ChromaDB's favour). A ledger id with no point counts as differing."""
    secrets = current_secrets()
    written = differ = 0
    seen: set[str] = set()
    partial = path.with_name(path.name + ".partial")
    with outputs_guard(path):
        with open(partial, "w", encoding="utf-8") as fh:
            offset: Any = None
            while True:
                points, offset = target.scroll(name, limit=_PAGE, offset=offset, with_vectors=True)
                rows = []
                for point in points:
                    line = json.dumps({"id": str(point.id), "vector": _encode(point.vector), "payload": point.payload})
                    fh.write(scrub(line, secrets) + "\n")
                    written += 1
                    if ledger is not None:
                        cid, vector, document, metadata, uri = point_record(point, layout)
                        if cid is None or str(cid) in allowed:
                            continue
                        seen.add(str(cid))
                        if vector is None:
                            differ += 1
                        else:
                            rows.append((str(cid), vector, document, metadata, uri))
                if rows and ledger is not None and collection is not None:
                    differ += _differing(ledger, collection, rows)
                if offset is None:
                    break
        partial.rename(path)
    if ledger is not None and collection is not None:
        differ += len(set(ledger.sequences(collection)) - seen - set(allowed))
    return written, differ


def _differing(ledger: Ledger, collection: str, rows: list[tuple[str, Any, Any, Any, Any]]) -> int:
    fps = target_fingerprints(
        np.asarray([r[1] for r in rows], dtype=np.float32),
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
    )
    known = ledger.get(collection, [r[0] for r in rows])
    return sum(
        1
        for (cid, *_), fp in zip(rows, fps, strict=True)
        if known.get(cid) is None or not same_target_state(fp, known[cid])
    )
