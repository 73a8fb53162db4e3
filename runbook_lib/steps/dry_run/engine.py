"""The dry run: inventory every source collection and show the exact plan. Writes nothing but ``outputs/``.

The source is read from a scratch copy (removed afterwards); the Qdrant target is only inspected
(an embedded local-mode folder that does not exist yet is not created).

The step's result is :mod:`runbook_lib.steps.dry_run.result`; its chart :mod:`runbook_lib.steps.dry_run.charts`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import numpy as np

from runbook_lib.chroma.base import ChromaReader
from runbook_lib.chroma.connect import open_source
from runbook_lib.chroma.tenant import NAMING_RULE, QDRANT_CLOUD_MAX_COLLECTIONS
from runbook_lib.core.layouts import Layout, detect_framework, get_layout, is_llamaindex_record, recommended_layout
from runbook_lib.core.mapping import id_collisions
from runbook_lib.core.payload_indexes import (
    add_key_types,
    filterable_paths,
    missing_keys,
    plan_payload_indexes,
    strict_mode_refusals,
)
from runbook_lib.core.plan import plan_collection
from runbook_lib.errors import ConfigError, DimensionMismatchError, RunbookError
from runbook_lib.kernel.display import progress
from runbook_lib.kernel.step import Step
from runbook_lib.qdrant.connect import holds_storage, open_target
from runbook_lib.steps.dry_run.charts import dry_run_charts
from runbook_lib.steps.dry_run.result import DryRunResult

#: Write rates used for the time estimate (points/s for 1536-d points); the estimate scales them by dimension.
#: Local mode: ~340 points/s on a quiet disk, ~100 on a busy one (qdrant-client flushes the disk once per point);
#: Edge: ~3,100 (benchmarks/local_write_bench.py, before its HNSW index is built).
ESTIMATED_POINTS_PER_S = {"local": 300.0, "edge": 3000.0, "server": 1500.0}


def inventory(
    source: ChromaReader, name: str, ids: list[str], batch_size: int, layout: Layout | None = None
) -> dict[str, Any]:
    """Scan one collection once: dimensions, zero vectors, metadata keys and types, documents, uris, sizes, which
    framework wrote it, and what the chosen payload ``layout`` cannot carry (with one real record's payload)."""
    layout = layout or Layout()
    info = source.info(name)
    llama_records = 0
    layout_refused: list[str] = []
    null_as_empty = 0
    example: dict[str, Any] | None = None
    dims: Counter[int] = Counter()
    key_types: dict[str, set[str]] = {}
    zero_vectors = documents = uris = no_metadata = 0
    doc_bytes = meta_bytes = id_bytes = 0
    for start in progress(range(0, len(ids), batch_size), desc=f"scan {name}", unit="batch", leave=False):
        chunk = ids[start : start + batch_size]
        try:
            batch = source.fetch(name, chunk)
        except DimensionMismatchError:
            batch = None
        if batch is None:  # mixed dimensions: count them record by record
            for rid in chunk:
                b = source.fetch(name, [rid])
                dims[b.embeddings.shape[1]] += 1
            continue
        dims[batch.embeddings.shape[1]] += len(batch)
        zero_vectors += int(np.count_nonzero(~batch.embeddings.any(axis=1)))
        for rid, doc, meta, uri in zip(batch.ids, batch.documents, batch.metadatas, batch.uris, strict=True):
            problem = layout.check(rid, doc, meta, uri)
            if problem:
                layout_refused.append(problem)
            else:
                null_as_empty += layout.substitutes(doc, meta)
                if example is None:
                    example = {"chroma_id": rid, "payload": layout.to_payload(rid, doc, meta, uri)}
            llama_records += is_llamaindex_record(meta)
            id_bytes += len(rid.encode())
            if doc is not None:
                documents += 1
                doc_bytes += len(doc.encode())
            if uri is not None:
                uris += 1
            if not meta:
                no_metadata += 1
                continue
            meta_bytes += len(json.dumps(meta, ensure_ascii=False).encode())
            add_key_types(key_types, [meta])
    dimension = dims.most_common(1)[0][0] if dims else info.dimension
    vector_bytes = sum(d * n * 4 for d, n in dims.items())
    warnings: list[str] = []
    if not ids:
        warnings.append(f"{name}: empty collection; nothing to migrate and no dimension to create it with.")
    if len(dims) > 1:
        warnings.append(f"{name}: mixed vector dimensions {dict(dims)}; the migration will stop this collection.")
    if zero_vectors and info.space == "cosine":
        warnings.append(
            f"{name}: {zero_vectors} zero vector(s) in a cosine collection; they have no direction, so they are "
            "copied as zeros and never rank in cosine search."
        )
    if info.embedding_function and info.embedding_function not in ("default", "legacy", "None"):
        warnings.append(
            f"{name}: embedding function {info.embedding_function!r} is Chroma-side configuration; Qdrant stores "
            "vectors only, so the app must keep computing query embeddings itself."
        )
    framework = detect_framework(len(ids), llama_records, documents)
    if layout_refused:
        warnings.append(
            f"{name}: payload_layout={layout.name} cannot carry {len(layout_refused):,} record(s) (first: "
            f"{layout_refused[0]}); the migration would stop this collection."
        )
    if framework != "unknown" and recommended_layout(framework) != layout.name:
        warnings.append(
            f"{name}: looks written by {framework}; payload_layout={recommended_layout(framework)} lets its Qdrant "
            f"store read the migrated collection (this plan uses {layout.name})."
        )
    return {
        "collection": name,
        "framework": framework,
        "recommended_layout": recommended_layout(framework),
        "payload_layout": layout.name,
        "layout_refuses": len(layout_refused),
        "null_documents_as_empty": null_as_empty,
        "example_payload": example,
        "count": len(ids),
        "dimension": dimension,
        "dimensions_seen": {str(k): v for k, v in dims.items()},
        "space": info.space,
        "space_declared_in": "metadata" if "hnsw:space" in info.metadata else "configuration or default",
        "metadata_keys": ", ".join(f"{k}:{'/'.join(sorted(t))}" for k, t in sorted(key_types.items())),
        "key_types": {k: sorted(t) for k, t in sorted(key_types.items())},
        "records_without_metadata": no_metadata,
        "documents": documents,
        "uris": uris,
        "zero_vectors": zero_vectors,
        "embedding_function": info.embedding_function,
        "collection_metadata": {k: v for k, v in info.metadata.items()},
        "bytes": {"vectors": vector_bytes, "documents": doc_bytes, "metadata": meta_bytes, "ids": id_bytes},
        "mb": round((vector_bytes + doc_bytes + meta_bytes + id_bytes) / 1e6, 2),
        "warnings": warnings,
    }


def dry_run(step: Step) -> DryRunResult:
    """The dry-run step (``01_dry_run.ipynb``)."""
    p = step.params
    settings = step.settings
    result = DryRunResult(ok=True, source=settings.chroma.describe(), target=settings.qdrant.describe())
    t0 = time.perf_counter()
    layout = get_layout(p.payload_layout, p.null_documents)
    with open_source(settings.chroma) as source:
        if source.upgraded_on_open:
            result.warnings.append(
                "The source was written by an older chromadb version: opening it upgrades the database, so the "
                "migration reads a scratch copy and keeps your directory as it is. Keep the backup."
            )
        names = source.resolve_collections(p.collections)
        result.other_databases = source.other_databases()
        for db in result.other_databases:
            result.warnings.append(
                f"Another database exists: tenant {db['tenant']!r} database {db['database']!r} "
                f"({db['collections']} collections) — not part of this migration; set CHROMA_TENANT/CHROMA_DATABASE "
                "and run again to migrate it."
            )
        for name in progress(names, desc="collections", unit="col"):
            ids = source.snapshot_ids(name)
            inv = inventory(source, name, ids, p.batch_size, layout)
            result.collections.append(inv)
            result.warnings.extend(inv["warnings"])
            pairs = id_collisions(ids)
            if pairs:
                result.id_collisions[name] = [list(pair) for pair in pairs]
                result.warnings.extend(
                    f"{name}: Chroma ids {a!r} and {b!r} map to the same Qdrant point id; the migration will "
                    "refuse until one of them is renamed."
                    for a, b in pairs[:5]
                )
                if len(pairs) > 5:
                    result.warnings.append(f"{name}: {len(pairs) - 5} more colliding id pairs (see id_collisions).")
            entry = plan_collection(source, name, run_id="<run_id>", cutover="plain", ids=ids)
            plan = entry.to_dict()
            dim = entry.dimension or 0
            rate = ESTIMATED_POINTS_PER_S[settings.qdrant.kind] * 1536 / max(dim, 64)
            plan["estimated_s"] = round(entry.count / rate, 1)
            plan["framework"] = inv["framework"]
            plan["recommended_layout"] = inv["recommended_layout"]
            plan["payload_layout"] = layout.name
            plan["example_payload"] = inv["example_payload"]
            indexes, unindexed = plan_payload_indexes(
                inv["key_types"],
                p.payload_indexes,
                collection=name,
                flat=layout.flat,
                document_path=layout.document_path,
                has_documents=inv["documents"] > 0,
            )
            plan["payload_indexes"] = [i.to_dict() for i in indexes]
            plan["unindexed_keys"] = [u.to_dict() for u in unindexed]
            result.plan.append(plan)
            source.release()
        quotas = source.quotas()
    if quotas:  # Chroma Cloud: the requests and the reading time each collection takes, in its plan and estimate
        result.source_quotas = quotas
        for plan in result.plan:
            read = quotas["collections"].get(plan["source"], {})
            plan["source_requests"] = read.get("expected_requests")
            plan["source_read_s"] = read.get("expected_s")
            plan["estimated_s"] = round(plan["estimated_s"] + float(read.get("expected_s") or 0.0), 1)
    unknown = missing_keys(p.payload_indexes, {c["collection"]: c["key_types"] for c in result.collections})
    if unknown:
        raise ConfigError(
            f"payload_indexes names {', '.join(map(repr, unknown))}, which no planned collection has as a metadata "
            "key: check the spelling against the inventory's metadata keys, or use auto."
        )
    result.total_records = sum(c["count"] for c in result.collections)
    result.estimated_seconds = sum(pl["estimated_s"] for pl in result.plan) + (time.perf_counter() - t0)
    result.existing_targets = _existing_targets(step, [pl["target"] for pl in result.plan])
    result.naming = _naming(step, result)
    for name in result.existing_targets:
        result.warnings.append(
            f"Qdrant already has {name!r}: migrate stops unless on_existing=resume or recreate (or cutover=alias)."
        )
    result.strict_mode = strict_mode_report(step, result, layout.flat, layout.document_path)
    for sentences in result.strict_mode.values():
        result.warnings.extend(sentences)
    result.figures = dry_run_charts(step, result)
    return result


def _naming(step: Step, result: DryRunResult) -> dict[str, Any]:
    """How the plan names the Qdrant collections (several databases: ``<database>__<collection>``) and Qdrant
    Cloud's cap on collections, checked against the plan (a plan over it is refused by migrate on a server)."""
    databases = step.settings.chroma.databases
    planned = len(result.plan)
    existing = 0
    if step.settings.qdrant.is_server:
        try:
            with open_target(step.settings.qdrant) as target:
                existing = len(set(target.collection_names()) - {pl["target"] for pl in result.plan})
        except RunbookError:
            existing = 0
    over = step.settings.qdrant.is_server and planned + existing > QDRANT_CLOUD_MAX_COLLECTIONS
    if over:
        result.warnings.append(
            f"The plan makes {planned:,} Qdrant collections beside {existing:,} already there: over Qdrant Cloud's "
            f"cap of {QDRANT_CLOUD_MAX_COLLECTIONS:,} per cluster, so migrate will refuse; migrate fewer databases "
            "or collections per cluster."
        )
    return {
        "rule": NAMING_RULE if databases else "<collection> (the Chroma name)",
        "databases": list(databases) if databases else None,
        "planned_collections": planned,
        "existing_collections": existing,
        "qdrant_cloud_cap": QDRANT_CLOUD_MAX_COLLECTIONS,
        "within_cap": not over,
    }


def strict_mode_report(step: Step, result: DryRunResult, flat: bool, document_path: str | None) -> dict[str, list[str]]:
    """Existing target collection -> what its strict mode would refuse of the filters the app could send (only a
    server has strict mode: Edge and local mode report none, so nothing is said for them)."""
    if not result.existing_targets:
        return {}
    inventory_by_name = {c["collection"]: c for c in result.collections}
    report: dict[str, list[str]] = {}
    with open_target(step.settings.qdrant) as target:
        for plan in result.plan:
            name = plan["target"]
            if name not in result.existing_targets:
                continue
            strict = target.strict_mode(name)
            if strict is None or not strict.enabled:
                continue
            inv = inventory_by_name.get(plan["source"], {})
            filterable = filterable_paths(
                inv.get("key_types") or {},
                flat=flat,
                document_path=document_path,
                has_documents=(inv.get("documents") or 0) > 0,
            )
            indexed = {ix["path"] for ix in plan.get("payload_indexes") or []} | set(target.payload_indexes(name) or {})
            sentences = strict_mode_refusals(strict, collection=name, filterable=filterable, indexed=indexed)
            if sentences:
                report[name] = sentences
    return report


def _existing_targets(step: Step, targets: list[str]) -> list[str]:
    q = step.settings.qdrant
    if not holds_storage(q):
        return []  # no embedded storage yet: do not create one in a dry run
    try:
        with open_target(q) as target:
            return [t for t in targets if target.exists(t)]
    except RunbookError:
        raise
