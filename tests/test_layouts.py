"""Payload layouts (runbook_lib.core.layouts): lossless round trips, type-strict, and what each layout refuses."""

from __future__ import annotations

import json

import pytest

from runbook_lib.core.compare import strict_equal
from runbook_lib.core.layouts import (
    LAYOUT_NAMES,
    Layout,
    LayoutError,
    detect_framework,
    get_layout,
    is_llamaindex_record,
    recommended_layout,
)
from runbook_lib.core.mapping import build_payload

NODE = json.dumps(
    {"id_": "n1", "metadata": {"page": 3}, "text": "", "relationships": {"1": {"node_id": "doc-7"}}, "embedding": None},
    ensure_ascii=False,
)

PLAIN = [
    ("a", "hello", {"int": 3, "float": 3.0, "bool": True, "str": "x"}, None),
    ("b", "", {}, None),
    ("c", "ünïcode ✓", {"nested": {"l": [1, 2.5, False, None, "s"]}, "neg": -0.0}, "s3://bucket/c.png"),
    ("d", "zero", {"zero": 0, "false": False, "zf": 0.0, "list": [[1], {"k": 1.0}]}, None),
]
NULL_DOC = ("e", None, {"k": 1}, None)
NONE_META = ("f", "text only", None, "file:///x")
LLAMA = (
    "n1",
    "the node's text",
    {
        "page": 3,
        "_node_content": NODE,
        "_node_type": "TextNode",
        "doc_id": "doc-7",
        "document_id": "doc-7",
        "ref_doc_id": "doc-7",
    },
    None,
)


def _same(a: tuple, b: tuple) -> bool:
    return all(strict_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", LAYOUT_NAMES)
@pytest.mark.parametrize("record", [*PLAIN, NONE_META, LLAMA], ids=lambda r: r[0])
def test_round_trip_is_lossless_and_type_strict(name: str, record: tuple) -> None:
    layout = get_layout(name)
    cid, doc, meta, uri = record
    assert layout.check(cid, doc, meta, uri) is None
    payload = layout.to_payload(cid, doc, meta, uri)
    json.loads(json.dumps(payload))  # JSON-serialisable, as Qdrant stores it
    back = layout.from_payload(payload)
    assert _same(back, (cid, doc, dict(meta or {}), uri)), (payload, back)


def test_runbook_layout_is_the_spec_payload() -> None:
    for cid, doc, meta, uri in [*PLAIN, NULL_DOC, NONE_META]:
        assert get_layout().to_payload(cid, doc, meta, uri) == build_payload(cid, doc, meta, uri)
    assert get_layout().name == "runbook"
    assert _same(get_layout().from_payload(build_payload(*NULL_DOC)), ("e", None, {"k": 1}, None))


def test_langchain_shape() -> None:
    payload = get_layout("langchain").to_payload("c", "doc", {"k": 1}, "u")
    assert payload == {"page_content": "doc", "metadata": {"k": 1}, "chroma_id": "c", "uri": "u"}
    assert "uri" not in get_layout("langchain").to_payload("c", "doc", None)


def test_langchain_null_document_refused_or_mapped() -> None:
    refuse = get_layout("langchain")
    assert "'e'" in (refuse.check(*NULL_DOC) or "")
    with pytest.raises(LayoutError, match="null_documents=empty"):
        refuse.to_payload(*NULL_DOC)
    empty = get_layout("langchain", "empty")
    assert empty.check(*NULL_DOC) is None and empty.substitutes(None, {"k": 1})
    assert empty.to_payload(*NULL_DOC)["page_content"] == ""
    assert not empty.substitutes("x", None)


def test_llamaindex_shape_writes_text_into_node_content() -> None:
    payload = get_layout("llamaindex").to_payload(*LLAMA)
    assert set(payload) == {"page", "_node_content", "_node_type", "doc_id", "document_id", "ref_doc_id", "chroma_id"}
    assert json.loads(payload["_node_content"])["text"] == "the node's text"
    assert payload["page"] == 3 and type(payload["page"]) is int
    assert payload["doc_id"] == "doc-7"
    # a record not written by LlamaIndex keeps its text under "text" (the Qdrant store's fallback)
    plain = get_layout("llamaindex").to_payload("a", "t", {"k": 1.0})
    assert plain == {"k": 1.0, "text": "t", "chroma_id": "a"}


@pytest.mark.parametrize("key", ["chroma_id", "uri", "text"])
def test_llamaindex_refuses_a_colliding_metadata_key(key: str) -> None:
    layout = get_layout("llamaindex")
    problem = layout.check("r", "doc", {key: 1}, None)
    assert problem is not None and repr(key) in problem
    with pytest.raises(LayoutError, match=repr(key)):
        layout.to_payload("r", "doc", {key: 1}, None)
    # "text" is the layout's own key only when there is no _node_content
    if key == "text":
        meta = {**LLAMA[2], "text": 1}
        assert layout.check("n1", "doc", meta, None) is None
        assert _same(layout.from_payload(layout.to_payload("n1", "doc", meta, None)), ("n1", "doc", meta, None))


def test_llamaindex_refuses_what_it_could_not_give_back() -> None:
    layout = get_layout("llamaindex")
    filled = {**LLAMA[2], "_node_content": json.dumps({"text": "already"})}
    assert "already has text" in (layout.check("n1", "doc", filled, None) or "")
    odd = {**LLAMA[2], "_node_content": '{"text":""}'}  # not LlamaIndex's own serialisation
    assert "not a LlamaIndex node JSON" in (layout.check("n1", "doc", odd, None) or "")
    assert "no document" in (layout.check("n1", None, LLAMA[2], None) or "")
    assert layout.check("p", None, {"k": 1}, None) is None  # no node content: a null text is carried
    assert _same(layout.from_payload(layout.to_payload("p", None, {"k": 1})), ("p", None, {"k": 1}, None))


def test_unknown_layout_is_a_config_error() -> None:
    with pytest.raises(Exception, match="Unknown payload layout"):
        get_layout("haystack")


def test_detect_framework() -> None:
    assert is_llamaindex_record(LLAMA[2]) and not is_llamaindex_record({"k": 1}) and not is_llamaindex_record(None)
    assert detect_framework(2, 2, 2) == "llamaindex"
    assert detect_framework(2, 0, 2) == "langchain"
    assert detect_framework(1, 0, 0) == "unknown"
    assert detect_framework(2, 1, 2) == "unknown"
    assert detect_framework(0, 0, 0) == "unknown"
    assert recommended_layout("unknown") == "runbook"
    assert recommended_layout("llamaindex") == "llamaindex"


def test_one_class_per_layout() -> None:
    assert [get_layout(name).name for name in LAYOUT_NAMES] == list(LAYOUT_NAMES)
    assert [get_layout(name).flat for name in LAYOUT_NAMES] == [False, False, True]
    assert get_layout("llamaindex").document_path is None and get_layout("langchain").document_path == "page_content"
    assert get_layout() == Layout() and get_layout("langchain", "empty") != get_layout("langchain")
    with pytest.raises(Exception, match="null_documents"):
        get_layout("langchain", "drop")  # type: ignore[arg-type]


def test_to_points_uses_the_layout_and_counts_substitutions() -> None:
    import numpy as np

    from runbook_lib.chroma.source import RecordBatch
    from runbook_lib.steps.migrate.pipeline import to_points

    batch = RecordBatch(["a", "b"], np.ones((2, 3), dtype=np.float32), ["x", None], [{"k": 1}, None], [None, None])
    assert to_points(0, batch).payloads[1] == build_payload("b", None, None)  # default: the SPEC layout
    with pytest.raises(LayoutError, match="'b'"):
        to_points(0, batch, layout=get_layout("langchain"))
    points = to_points(0, batch, layout=get_layout("langchain", "empty"))
    assert points.substituted == 1 and points.payloads[1]["page_content"] == ""
