"""The payload index plan (pure): which keys get which index type, what is left out and why, the Cloud cap."""

from __future__ import annotations

import pytest

from runbook_lib.core.payload_indexes import (
    DOCUMENT_KEY,
    index_type_for,
    missing_keys,
    plan_payload_indexes,
    value_type,
)
from runbook_lib.errors import ConfigError


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["a", "b"], "keyword"),
        ([1, 2], "integer"),
        ([1.5], "float"),
        ([True, False], "bool"),
        ([1, 2.5], "float"),
        ([["a", "b"], "c"], "keyword"),
        ([[1, 2]], "integer"),
        (["a", 1], None),
        ([True, 1], None),
        ([["a", 1]], None),
        ([[]], None),
    ],
)
def test_index_type_from_the_values_found(values: list, expected: str | None) -> None:
    index_type, why = index_type_for({value_type(v) for v in values})
    assert index_type == expected
    assert why  # always says why


def test_auto_indexes_every_key_and_the_document() -> None:
    indexes, unindexed = plan_payload_indexes(
        {"tag": {"str"}, "n": {"int"}, "a.b": {"float"}, "mixed": {"str", "int"}},
        "auto",
        collection="c",
        document_path="document",
        has_documents=True,
    )
    assert [(i.key, i.path, i.index_type) for i in indexes] == [
        ("a.b", 'metadata."a.b"', "float"),
        ("n", "metadata.n", "integer"),
        ("tag", "metadata.tag", "keyword"),
        (DOCUMENT_KEY, "document", "text"),
    ]
    assert [u.key for u in unindexed] == ["mixed"]
    assert "one type per key" in unindexed[0].why


def test_flat_layout_paths_and_no_text_field() -> None:
    indexes, _ = plan_payload_indexes({"k": {"str"}}, "auto", collection="c", flat=True, has_documents=True)
    assert [(i.path, i.index_type) for i in indexes] == [("k", "keyword")]


def test_none_and_a_list() -> None:
    assert plan_payload_indexes({"k": {"str"}}, "none", collection="c")[0] == []
    indexes, unindexed = plan_payload_indexes(
        {"k": {"str"}, "j": {"int"}}, "k,#document", collection="c", document_path="document", has_documents=True
    )
    assert [i.key for i in indexes] == ["k", DOCUMENT_KEY]
    assert [u.key for u in unindexed] == ["j"]
    assert missing_keys("k,zz", {"c": {"k": {"str"}}}) == ["zz"]
    with pytest.raises(ConfigError, match="payload_indexes is empty"):
        plan_payload_indexes({}, " , ", collection="c")


def test_over_the_cloud_cap_stops_and_says_to_choose() -> None:
    keys = {f"k{i}": {"int"} for i in range(101)}
    with pytest.raises(ConfigError, match=r"101 payload indexes, more than Qdrant Cloud's cap of 100.*payload_indexes"):
        plan_payload_indexes(keys, "auto", collection="big")
    indexes, _ = plan_payload_indexes(keys, ",".join(list(keys)[:100]), collection="big")
    assert len(indexes) == 100


def test_a_key_qdrant_cannot_address_is_left_out() -> None:
    indexes, unindexed = plan_payload_indexes({'a"b': {"str"}}, "auto", collection="c")
    assert indexes == [] and "cannot address" in unindexed[0].why


def test_the_dry_run_plans_the_indexes_from_the_data(small_source: dict) -> None:
    from runbook_lib.steps.dry_run import report
    from runbook_lib.steps.dry_run.engine import dry_run

    from conftest import run_step_inprocess

    _, result = run_step_inprocess("dry-run", dry_run)
    by_name = {pl["source"]: pl for pl in result.plan}
    planned = {(i["key"], i["path"], i["index_type"]) for i in by_name["alpha_docs"]["payload_indexes"]}
    assert planned == {
        ("i", "metadata.i", "integer"),
        ("half", "metadata.half", "float"),
        ("even", "metadata.even", "bool"),
        ("tag", "metadata.tag", "keyword"),
        (DOCUMENT_KEY, "document", "text"),
    }
    assert by_name["empty_docs"]["payload_indexes"] == []
    table = report.payload_index_table(result)
    assert ("alpha_docs", "tag") in table.index

    _, chosen = run_step_inprocess("dry-run", dry_run, payload_indexes="tag")
    assert {i["key"] for pl in chosen.plan for i in pl["payload_indexes"]} == {"tag"}
    with pytest.raises(ConfigError, match="'nope', which no planned collection has"):
        run_step_inprocess("dry-run", dry_run, payload_indexes="tag,nope")
