"""Strict mode: what a Qdrant server would refuse of the filters the app could send, named by the dry run.

A server's collection may refuse a filter on a payload key without an index (``unindexed_filtering_retrieve`` /
``unindexed_filtering_update`` false: Qdrant Cloud's default for new collections). The decision is tested with
qdrant-client's own model objects (``models.StrictModeConfigOutput``, what ``get_collection`` returns); the read
path on local mode and Edge, which have no strict mode (``strict_mode`` is None, the dry run says nothing). There is
no server here: reading a real server's settings is where these tests stop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdrant_client import models

from runbook_lib.config.settings import QdrantSettings
from runbook_lib.core.payload_indexes import filterable_paths, plan_payload_indexes, strict_mode_refusals
from runbook_lib.qdrant.connect import open_target
from runbook_lib.steps.dry_run.engine import dry_run
from runbook_lib.steps.migrate.engine import migrate

from conftest import on_both_targets, run_step_inprocess

KEY_TYPES = {"tag": ["str"], "i": ["int"], "mixed": ["int", "str"], 'a"b': ["str"]}


def _cloud(**changes: Any) -> models.StrictModeConfigOutput:
    """Qdrant Cloud's strict mode for a new collection: unindexed filtering refused on reads and writes."""
    config: dict[str, Any] = {
        "enabled": True,
        "unindexed_filtering_retrieve": False,
        "unindexed_filtering_update": False,
    }
    return models.StrictModeConfigOutput(**{**config, **changes})


def _refusals(strict: Any, choice: str = "auto", existing: set[str] | None = None) -> list[str]:
    indexes, _ = plan_payload_indexes(KEY_TYPES, choice, collection="c", document_path="document", has_documents=True)
    filterable = filterable_paths(KEY_TYPES, flat=False, document_path="document", has_documents=True)
    return strict_mode_refusals(
        strict, collection="c", filterable=filterable, indexed={i.path for i in indexes} | (existing or set())
    )


def test_filterable_paths_name_every_key_a_filter_can_address_and_the_document() -> None:
    paths = filterable_paths(KEY_TYPES, flat=False, document_path="document", has_documents=True)
    assert paths == {
        "metadata key 'i'": "metadata.i",
        "metadata key 'mixed'": "metadata.mixed",
        "metadata key 'tag'": "metadata.tag",
        "where_document": "document",
    }  # 'a"b' has no payload path: no filter can name it
    assert "where_document" not in filterable_paths(KEY_TYPES, flat=True, document_path=None, has_documents=True)


def test_cloud_defaults_refuse_only_the_keys_without_an_index() -> None:
    refused = _refusals(_cloud())
    assert len(refused) == 1  # auto indexes tag, i and the document; the mixed-type key stays unindexed
    assert "'metadata.mixed'" in refused[0] and "query and get and delete with where" in refused[0]
    assert refused[0].count(". ") == 0 and refused[0].endswith(".")
    everything = _refusals(_cloud(), choice="none")
    assert sorted(s.split("(payload path ")[1].split(")")[0] for s in everything) == [
        "'document'",
        "'metadata.i'",
        "'metadata.mixed'",
        "'metadata.tag'",
    ]
    assert _refusals(_cloud(), existing={"metadata.mixed"}) == []  # an index the collection already has counts


def test_what_strict_mode_allows_is_not_named() -> None:
    assert _refusals(None) == []  # Edge, local mode: no strict mode
    assert _refusals(_cloud(enabled=False)) == []
    assert _refusals(_cloud(unindexed_filtering_retrieve=None, unindexed_filtering_update=None)) == []  # default
    reads_only = _refusals(_cloud(unindexed_filtering_update=True), choice="none")
    assert reads_only and all("query and get filtering" in s and "delete" not in s for s in reads_only)


def test_limits_a_call_can_exceed_are_named() -> None:
    said = _refusals(
        _cloud(
            unindexed_filtering_retrieve=True,
            unindexed_filtering_update=True,
            max_query_limit=50,
            filter_max_conditions=8,
        )
    )
    assert len(said) == 2 and "more than 50 records" in said[0] and "more than 8 conditions" in said[1]


@on_both_targets
def test_targets_without_strict_mode_report_none_and_the_dry_run_says_nothing(
    qdrant_kind: str, small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    q = runbook_env["qdrant"]
    settings = QdrantSettings(edge_path=q) if qdrant_kind == "edge" else QdrantSettings(path=q)
    _, migrated = run_step_inprocess("migrate", migrate)
    assert migrated.ok
    with open_target(settings) as target:
        assert target.exists("beta_docs") and target.strict_mode("beta_docs") is None
    _, result = run_step_inprocess("dry-run", dry_run)
    assert "beta_docs" in result.existing_targets and result.strict_mode == {}
    assert result.to_dict()["strict_mode"] == {}
