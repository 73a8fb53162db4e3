"""``where_document``: the predicate and the Qdrant prefilter answer exactly what a real ChromaDB answers.

A module fixture writes documents (some None, one empty, case and punctuation variants, newlines, non-ASCII) to
a real ``PersistentClient`` and the same records to Qdrant local mode and to a Qdrant Edge shard (the server's
engine, with the word text index the migration plans on the document); hypothesis draws filters in the shape of
chromadb's own ``recursive_where_doc_clause`` strategy (``chromadb/test/property/strategies.py``), with regexes
from the dialect both engines share, and every answer is compared with Chroma's.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

from runbook_lib.config.settings import QdrantSettings
from runbook_lib.core.document_filters import document_predicate, python_regex, to_qdrant_prefilter
from runbook_lib.core.mapping import build_payload, point_id
from runbook_lib.errors import ConfigError
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.qdrant.connect import open_target

WORDS = ("Hello", "hello", "World", "wor", "a", "ab", "b.c", "100%", "x_y", "café", "É", "-", " ", "\n", "line")
ALPHABET = "aAbBcl .\n%_-éÉo"


def _documents() -> list[str | None]:
    rng = random.Random(7)
    docs: list[str | None] = [None, None, "", "Hello World", "hello world", "line1\nline2\n", "café Ünïcode"]
    for _ in range(73):
        docs.append("".join(rng.choice(WORDS + tuple(ALPHABET)) for _ in range(rng.randint(1, 8))))
    return docs


@dataclass(frozen=True, repr=False)
class Stores:
    chroma: Any
    qdrant: QdrantClient
    edge: QdrantStore  # Qdrant Edge (the server's engine), with the text index the migration plans on the document
    documents: dict[str, str | None]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    root: Path = tmp_path_factory.mktemp("document_filters")
    documents = {f"d{i:03d}": doc for i, doc in enumerate(_documents())}
    ids = list(documents)
    client = chromadb.PersistentClient(path=str(root / "chroma"))
    col = client.create_collection("docs", embedding_function=None)
    col.add(ids=ids, embeddings=[[1.0, float(i)] for i in range(len(ids))], documents=list(documents.values()))
    qdrant = QdrantClient(path=str(root / "qdrant"))
    qdrant.create_collection("docs", vectors_config=models.VectorParams(size=2, distance=models.Distance.EUCLID))
    qdrant.upsert(
        "docs",
        points=[
            models.PointStruct(id=point_id(rid), vector=[1.0, float(i)], payload=build_payload(rid, doc, None, None))
            for i, (rid, doc) in enumerate(documents.items())
        ],
    )
    edge = open_target(QdrantSettings(edge_path=root / "edge"))
    edge.create_collection("docs", size=2, distance="Euclid")
    edge.create_payload_index("docs", "document", "text")
    assert edge.payload_indexes("docs") == {"document": "text"}
    edge.upsert(
        "docs",
        [point_id(rid) for rid in ids],
        [[1.0, float(i)] for i in range(len(ids))],
        [build_payload(rid, doc, None, None) for rid, doc in documents.items()],
    )
    yield Stores(col, qdrant, edge, documents)
    edge.close()
    qdrant.close()
    client.close()


def _chroma(stores: Stores, where_document: dict[str, Any]) -> set[str]:
    return set(stores.chroma.get(where_document=where_document, include=[])["ids"])


def _predicate(stores: Stores, where_document: dict[str, Any]) -> set[str]:
    matches = document_predicate(where_document)
    return {rid for rid, doc in stores.documents.items() if matches(doc)}


def _qdrant(stores: Stores, where_document: dict[str, Any]) -> set[str]:
    """The app's Qdrant read: the prefilter narrows, the predicate decides."""
    prefilter = to_qdrant_prefilter(where_document, "document")
    points, _ = stores.qdrant.scroll("docs", scroll_filter=prefilter, limit=len(stores.documents) + 1)
    matches = document_predicate(where_document)
    return {str(p.payload["chroma_id"]) for p in points if p.payload and matches(p.payload.get("document"))}


def _edge(stores: Stores, where_document: dict[str, Any]) -> set[str]:
    """The app's read on Qdrant Edge: the prefilter narrows (on a text-indexed document), the predicate decides."""
    prefilter = to_qdrant_prefilter(where_document, "document")
    records, _ = stores.edge.scroll("docs", limit=len(stores.documents) + 1, with_vectors=False, query_filter=prefilter)
    matches = document_predicate(where_document)
    return {str(r.payload["chroma_id"]) for r in records if r.payload and matches(r.payload.get("document"))}


# --- strategies: chromadb's where_doc_clause shape, regexes of the shared dialect -----------------------
_text = st.one_of(st.sampled_from(WORDS), st.text(alphabet=ALPHABET, min_size=1, max_size=3))
_literal = st.sampled_from(["a", "b", "l", "o", "é", "É", " ", "H", "\\.", "\\n", "%", "_", "-", "\\x{e9}"])
_class = st.sampled_from(["[a-c]", "[^a]", "[A-Z]", "[\\n ]", "[é-ï]", "[a\\-]", "[^\\n]", "[.%_]"])
_anchor = st.sampled_from(["^", "$", "\\A", "\\z"])
_quantifier = st.sampled_from(["", "", "*", "+", "?", "{2}", "{1,2}", "{0,}", "*?", "+?"])
_atom = st.one_of(_literal, _class, st.just("."))
_piece = st.builds(lambda atom, q: atom + q, _atom, _quantifier)
_regex_body = st.recursive(
    st.lists(st.one_of(_piece, _anchor), min_size=1, max_size=4).map("".join),
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a}|{b}", inner, inner),
        st.builds(lambda a, q: f"({a}){q}", inner, _quantifier),
        st.builds(lambda a: f"(?:{a})", inner),
    ),
    max_leaves=4,
)
_regex = st.builds(lambda flag, body: flag + body, st.sampled_from(["", "(?s)"]), _regex_body)
_leaf = st.one_of(
    st.builds(lambda op, t: {op: t}, st.sampled_from(["$contains", "$not_contains"]), _text),
    st.builds(lambda op, r: {op: r}, st.sampled_from(["$regex", "$not_regex"]), _regex),
)
_where_document = st.recursive(
    _leaf,
    lambda inner: st.builds(
        lambda op, parts: {op: parts}, st.sampled_from(["$and", "$or"]), st.lists(inner, min_size=2, max_size=2)
    ),
    max_leaves=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where_document=_where_document)
def test_where_document_selects_what_chroma_selects(stores: Stores, where_document: dict[str, Any]) -> None:
    expected = _chroma(stores, where_document)
    assert _predicate(stores, where_document) == expected, where_document
    assert _qdrant(stores, where_document) == expected, where_document
    assert _edge(stores, where_document) == expected, where_document


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(needle=_text, negated=st.booleans())
def test_the_substring_prefilter_alone_is_exact_on_edge_with_the_text_index(
    stores: Stores, needle: str, negated: bool
) -> None:
    """MatchSubstring on the server's engine, over the word text index the migration plans: exactly the substring
    test (case-sensitive, null documents never contain), so the prefilter can never drop a true match."""
    operator = "$not_contains" if negated else "$contains"
    prefilter = to_qdrant_prefilter({operator: needle}, "document")
    assert prefilter is not None
    records, _ = stores.edge.scroll("docs", limit=len(stores.documents) + 1, with_vectors=False, query_filter=prefilter)
    assert {str(r.payload["chroma_id"]) for r in records if r.payload} == _chroma(stores, {operator: needle})


def test_null_and_empty_documents(stores: Stores) -> None:
    nulls = {rid for rid, doc in stores.documents.items() if doc is None}
    empty = {rid for rid, doc in stores.documents.items() if doc == ""}
    for where_document, nulls_match in (
        ({"$contains": "a"}, False),
        ({"$regex": ".*"}, False),
        ({"$not_contains": "a"}, True),
        ({"$not_regex": "zzz"}, True),
    ):
        chroma = _chroma(stores, where_document)
        assert nulls & chroma == (nulls if nulls_match else set())
        assert _predicate(stores, where_document) == chroma == _qdrant(stores, where_document)
    assert _chroma(stores, {"$regex": "^$"}) & (empty | nulls) == empty


def test_case_and_end_of_text_follow_chroma(stores: Stores) -> None:
    for where_document in (
        {"$contains": "Hello"},
        {"$contains": "hello"},
        {"$regex": "line2$"},
        {"$regex": "line2\n$"},
        {"$regex": "(?i)hello"},  # Rust's inline case-insensitivity, to the end of the group, across alternatives
        {"$regex": "(?i)h(?-i)ello"},
        {"$regex": "x|(?i:HEL)lo|(?i)WOR"},
    ):
        assert _predicate(stores, where_document) == _chroma(stores, where_document), where_document
        assert _qdrant(stores, where_document) == _chroma(stores, where_document), where_document
    assert _chroma(stores, {"$regex": "line2$"}) == set()  # Rust's $ is the end of the text, not before a final \n


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        ("(?=a)", "look-around"),
        ("a(?<!b)", "look-around"),
        ("(a)\\1", "backreference"),
        ("a*+", "repeats a repetition"),
        ("a\\Z", "\\Z"),
        ("(?x)hello", "inline flag"),
        ("(?m)^a", "inline flag"),
        ("\\d+", "\\d"),
        ("\\bword", "\\b"),
        ("[[:alpha:]]", "POSIX"),
        ("[a-z&&[^c]]", "class set operation"),
        ("a{,2}", "counted repetition"),
        ("\\p{L}", "\\p"),
    ],
)
def test_patterns_the_engines_do_not_share_are_refused_in_one_sentence(pattern: str, named: str) -> None:
    with pytest.raises(ConfigError, match="regex") as raised:
        python_regex(pattern)
    message = str(raised.value)
    assert named in message and repr(pattern) in message and message.count(". ") == 0


@pytest.mark.parametrize(
    "where_document",
    [{}, {"$contains": ""}, {"$contains": 3}, {"$and": [{"$contains": "a"}]}, {"$like": "a"}, "a", {"$regex": "a("}],
)
def test_invalid_filters_are_config_errors(where_document: Any) -> None:
    with pytest.raises(ConfigError):
        document_predicate(where_document)


def test_prefilter_is_exact_substring_and_the_literal_runs_a_regex_needs() -> None:
    def substrings(*texts: str) -> list[models.FieldCondition]:
        return [models.FieldCondition(key="document", match=models.MatchSubstring(substring=t)) for t in texts]

    assert to_qdrant_prefilter({"$regex": "a|b"}, "document") is None  # no literal every match needs
    assert to_qdrant_prefilter({"$not_regex": "abc"}, "document") is None
    assert to_qdrant_prefilter({"$regex": "ab+c.d"}, "document") == models.Filter(must=substrings("ab", "bc", "d"))
    assert to_qdrant_prefilter({"$contains": "a"}, None) is None  # a layout with no plain document key
    either = to_qdrant_prefilter({"$or": [{"$contains": "a"}, {"$regex": "x|y"}]}, "page_content")
    assert either is None  # one branch unconstrained: the disjunction is too
    narrowed = to_qdrant_prefilter({"$and": [{"$contains": "a"}, {"$not_regex": "b"}]}, "page_content")
    assert narrowed == models.Filter(
        must=[models.FieldCondition(key="page_content", match=models.MatchSubstring(substring="a"))]
    )
