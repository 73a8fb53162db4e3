"""The SPEC's data mapping rules, as pure functions."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from runbook_lib.core.mapping import (
    build_payload,
    chroma_distances,
    chroma_space,
    id_scheme,
    normalise_rows,
    point_id,
    qdrant_distance,
    qdrant_score_to_chroma_distance,
)
from runbook_lib.errors import ConfigError

CANON = "123e4567-e89b-12d3-a456-426614174000"


def test_canonical_uuid_is_kept() -> None:
    assert point_id(CANON) == CANON


@pytest.mark.parametrize(
    "spelling",
    [CANON.upper(), CANON.replace("-", ""), "{" + CANON + "}", "urn:uuid:" + CANON, " " + CANON],
)
def test_other_uuid_spellings_are_hashed_and_distinct(spelling: str) -> None:
    pid = point_id(spelling)
    assert pid == str(uuid.uuid5(uuid.NAMESPACE_URL, spelling))
    assert pid != CANON


def test_distinct_ids_never_share_a_point() -> None:
    ids = ["1", "01", "001", "a", "A", "日本語-id", "x" * 2000, CANON, CANON.upper(), CANON.replace("-", "")]
    points = [point_id(i) for i in ids]
    assert len(set(points)) == len(ids)
    assert all(uuid.UUID(p) for p in points)
    assert point_id("x" * 2000) == point_id("x" * 2000)  # deterministic


def test_payload_layout_nests_metadata_so_nothing_shadows() -> None:
    meta = {"document": "m-doc", "chroma_id": "m-id", "__id__": 1, "uri": "m-uri", "tags": ["a", "b"]}
    payload = build_payload("real-id", "real doc", meta, "s3://x")
    assert payload == {"chroma_id": "real-id", "document": "real doc", "metadata": meta, "uri": "s3://x"}
    assert build_payload("i", None, None) == {"chroma_id": "i", "document": None, "metadata": {}}


def test_space_metadata_wins_over_configuration() -> None:
    cfg = {"hnsw": {"space": "l2"}}
    assert chroma_space({"hnsw:space": "cosine"}, cfg) == "cosine"
    assert chroma_space({}, {"hnsw": {"space": "ip"}}) == "ip"
    assert chroma_space(None, {"hnsw": None, "spann": {"space": "cosine"}}) == "cosine"
    assert chroma_space(None, None) == "l2"
    with pytest.raises(ConfigError, match="Unknown Chroma distance space 'manhattan'"):
        chroma_space({"hnsw:space": "manhattan"}, None)


def test_distance_mapping() -> None:
    assert [qdrant_distance(s) for s in ("cosine", "l2", "ip")] == ["Cosine", "Euclid", "Dot"]


def test_score_conversion_matches_chroma_distances() -> None:
    rng = np.random.default_rng(1)
    q, m = rng.normal(size=8), rng.normal(size=(5, 8))
    cos = (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    np.testing.assert_allclose(qdrant_score_to_chroma_distance(cos, "cosine"), chroma_distances(q, m, "cosine"))
    np.testing.assert_allclose(qdrant_score_to_chroma_distance(m @ q, "ip"), chroma_distances(q, m, "ip"))
    euclid = np.linalg.norm(m - q, axis=1)
    np.testing.assert_allclose(qdrant_score_to_chroma_distance(euclid, "l2"), chroma_distances(q, m, "l2"))


def test_normalise_keeps_zero_rows() -> None:
    out = normalise_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


def test_id_scheme_description() -> None:
    assert id_scheme([CANON]) == "chroma id (canonical UUIDs)"
    assert id_scheme(["a"]).startswith("uuid5")
    assert id_scheme([CANON, "a"]).startswith("mixed")


def test_id_collisions_finds_an_id_equal_to_another_ids_hash() -> None:
    from runbook_lib.core.mapping import id_collisions

    url = "https://x/doc1"
    hashed = str(uuid.uuid5(uuid.NAMESPACE_URL, url))
    assert point_id(url) == point_id(hashed)
    assert id_collisions([url, "other", hashed]) == [(url, hashed)]
    assert id_collisions([hashed, url]) == [(hashed, url)]


def test_id_collisions_none_for_distinct_points() -> None:
    from runbook_lib.core.mapping import id_collisions

    ids = [CANON, CANON.upper(), "a", "b", "a"]  # a repeated id is not a collision with itself
    assert id_collisions(ids) == []
    assert id_collisions([]) == []
