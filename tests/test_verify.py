"""The verify step: an undamaged migration verifies clean, and every kind of damage is caught and named.

Real chromadb (persistent directory and a `chroma run` server), real Qdrant (Qdrant Edge, the engine), real papermill.
The damage tests share one migration of the small database (done once per module) and each work on a copy of
its Qdrant storage and run folder, so each test damages its own copy and verifies it.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from qdrant_client import models

from runbook_lib.config.params import VerifyParams
from runbook_lib.core.compare import (
    ABSENT,
    RunningTopK,
    payload_differences,
    strict_equal,
    value_differences,
)
from runbook_lib.core.mapping import chroma_distances, point_id
from runbook_lib.errors import ConfigError, VerificationFailed
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.verify import report
from runbook_lib.steps.verify.engine import verify
from runbook_lib.steps.verify.result import load_result

from conftest import make_small_db, open_qdrant, run_cli, run_step_inprocess
from data_builders import create_awkward_db

CHECKS = ("config", "count", "identity", "vectors", "payload", "search")


# --- helpers ---------------------------------------------------------------------------------------------
def result_json(outputs: Path, run_id: str) -> dict[str, Any]:
    return dict(json.loads((outputs / run_id / "03_verify.json").read_text()))


def collection(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in result["collections"] if c["collection"] == name)


def failed_checks(col: dict[str, Any]) -> set[str]:
    return {name for name, chk in col["checks"].items() if chk["result"] == "FAIL"}


def diffs(col: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [d for d in col["differences"] if d["check"] == check]


def verify_run(run_id: str, **params: Any) -> tuple[bool, Any]:
    """Verify in-process; (ok, result). A failed verification raises after filing its JSON."""
    try:
        _, result = run_step_inprocess("verify", verify, run_id=run_id, **params)
    except VerificationFailed:
        return False, None
    return True, result


class Qdrant:
    """Direct access to the target's storage through the runbook's ``open_target`` (Edge or local mode), to damage
    it (closed before verifying: one process holds a folder)."""

    def __init__(self, path: Path) -> None:
        self.store = open_qdrant(path)

    def __enter__(self) -> Qdrant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()

    def get(self, name: str, chroma_id: str) -> models.Record:
        (rec,) = self.store.retrieve(name, [point_id(chroma_id)], with_payload=True, with_vectors=True)
        return rec

    def put(self, name: str, pid: str, vector: list[float], payload: dict[str, Any]) -> None:
        self.store.upsert(name, [pid], [vector], [payload])

    def delete(self, name: str, chroma_id: str) -> None:
        self.store.delete_points(name, [point_id(chroma_id)])

    def replace_payload(self, name: str, chroma_id: str, change: Callable[[dict[str, Any]], None]) -> None:
        rec = self.get(name, chroma_id)
        payload = dict(rec.payload or {})
        change(payload)
        self.store.overwrite_payloads(name, {point_id(chroma_id): payload})


# --- one migration of the small database, copied per test -----------------------------------------------------
@pytest.fixture(scope="module")
def migrated_small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("migrated_small")
    paths = {"chroma": root / "chroma_db", "qdrant": root / "qdrant", "outputs": root / "outputs"}
    spec = make_small_db(paths["chroma"])
    with pytest.MonkeyPatch.context() as mp:
        for var in ("CHROMA_HOST", "CHROMA_PORT", "CHROMA_DATABASE", "QDRANT_URL", "QDRANT_API_KEY", "QDRANT_PATH"):
            mp.delenv(var, raising=False)
        mp.setenv("CHROMA_PERSIST_DIR", str(paths["chroma"]))
        mp.setenv("QDRANT_EDGE_PATH", str(paths["qdrant"]))
        mp.setenv("RUNBOOK_OUTPUTS", str(paths["outputs"]))
        mp.setenv("RUNBOOK_PROGRESS", "off")
        mp.setenv("MPLBACKEND", "Agg")
        step, result = run_step_inprocess("migrate", migrate)
        assert result.ok, result.errors
    yield {**paths, "run_id": step.run.run_id, "spec": spec}


@pytest.fixture
def small_copy(
    migrated_small: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """This test's own copy of the migrated Qdrant storage and run folder (the source stays shared, unchanged)."""
    qdrant = shutil.copytree(migrated_small["qdrant"], runbook_env["qdrant"])
    outputs = shutil.copytree(migrated_small["outputs"], runbook_env["outputs"])
    monkeypatch.setenv("CHROMA_PERSIST_DIR", str(migrated_small["chroma"]))
    return {"qdrant": Path(qdrant), "outputs": Path(outputs), "run_id": migrated_small["run_id"]}


# --- an undamaged migration ---------------------------------------------------------------------------------------
def test_undamaged_small_verifies_clean(small_copy: dict[str, Any]) -> None:
    ok, result = verify_run(small_copy["run_id"])
    assert ok and result.ok, result.verdict
    data = result_json(small_copy["outputs"], small_copy["run_id"])
    assert data["ok"] is True and data["status"] == "ok" and data["verdict"].startswith("VERIFIED")
    assert data["total_records"] == 1120
    for name, n in (("alpha_docs", 700), ("beta_docs", 300), ("gamma_docs", 120)):
        col = collection(data, name)
        assert col["status"] == "verified"
        assert {c["result"] for c in col["checks"].values()} == {"pass"}
        assert col["checks"]["count"]["numbers"] == {"source": n, "target": n}
        assert col["checks"]["identity"]["numbers"]["missing"] == 0
        assert col["checks"]["vectors"]["numbers"]["compared"] == n
        assert col["checks"]["vectors"]["numbers"]["max_abs_diff"] <= 1e-6
        assert col["checks"]["payload"]["numbers"]["records_compared"] == n
        search = col["checks"]["search"]["numbers"]
        assert search["queries"] == 20 and search["k"] == 10 and search["recall_min"] == 1.0
        assert search["score_mismatches"] == 0
        assert 0.0 <= search["approximate"]["qdrant_recall"] <= 1.0
        assert col["differences"] == []
    assert collection(data, "alpha_docs")["checks"]["vectors"]["numbers"]["normalised_source"] is True
    assert collection(data, "empty_docs")["status"] == "skipped (empty)"
    assert data["source_unchanged"]["result"] == "pass"
    assert "backup" in data["source_read"]
    assert sum(data["vector_histogram"]["counts"]) == 1120
    assert set(data["figures"]) >= {"figures/verify_checks.png", "figures/verify_vector_differences.png"}
    for fig in data["figures"]:
        assert (small_copy["outputs"] / small_copy["run_id"] / fig).stat().st_size > 0
    assert report.table(result).loc[("alpha_docs", "identity"), "result"] == "pass"
    assert report.differences_table(result).empty


def test_sampled_vector_check(small_copy: dict[str, Any]) -> None:
    ok, _ = verify_run(small_copy["run_id"], vector_check="50", sample_queries=4, k=3)
    assert ok
    data = result_json(small_copy["outputs"], small_copy["run_id"])
    for name in ("alpha_docs", "beta_docs", "gamma_docs"):
        checks = collection(data, name)["checks"]
        assert checks["vectors"]["numbers"]["compared"] == 50
        assert checks["vectors"]["numbers"]["mode"] == "sample of 50"
        assert checks["payload"]["numbers"]["records_compared"] > 50  # payloads are always all compared
        assert checks["search"]["numbers"]["queries"] == 4 and checks["search"]["numbers"]["k"] == 3


# --- each damage is caught and the record named --------------------------------------------------------------------
def _delete(q: Qdrant) -> None:
    q.delete("alpha_docs", "a-0005")


def _extra(q: Qdrant) -> None:
    q.put("beta_docs", point_id("intruder"), [50.0] * 8, {"chroma_id": "intruder", "document": "x", "metadata": {}})


def _swap(q: Qdrant) -> None:  # one lost, one added: the counts still match
    q.delete("gamma_docs", "g-0003")
    q.put(
        "gamma_docs",
        point_id("g-impostor"),
        [0.1, 0.2, 0.3, 0.4],
        {"chroma_id": "g-impostor", "document": None, "metadata": {}},
    )


def _duplicate(q: Qdrant) -> None:
    rec = q.get("beta_docs", "b-0010")
    q.put("beta_docs", str(uuid.uuid4()), list(rec.vector), dict(rec.payload or {}))  # type: ignore[arg-type]


def _wrong_point_id(q: Qdrant) -> None:
    rec = q.get("beta_docs", "b-0011")
    q.delete("beta_docs", "b-0011")
    q.put("beta_docs", str(uuid.uuid4()), list(rec.vector), dict(rec.payload or {}))  # type: ignore[arg-type]


def _vector(q: Qdrant) -> None:
    rec = q.get("beta_docs", "b-0020")  # l2: stored as written, no normalisation
    vec = [float(x) for x in rec.vector]  # type: ignore[union-attr, arg-type]
    vec[3] += 1e-3
    q.put("beta_docs", point_id("b-0020"), vec, dict(rec.payload or {}))


def _int_to_float(q: Qdrant) -> None:
    q.replace_payload("alpha_docs", "a-0020", lambda p: p["metadata"].update(i=20.0))


def _document(q: Qdrant) -> None:
    q.replace_payload("gamma_docs", "g-0007", lambda p: p.update(document="document 7 of gamma_docs — edited"))


def _uri_removed(q: Qdrant) -> None:
    q.replace_payload("beta_docs", "b-0003", lambda p: p.pop("uri"))


def _foreign_chroma_id(q: Qdrant) -> None:
    q.replace_payload("beta_docs", "b-0030", lambda p: p.update(chroma_id="b-0031"))


def _extra_key(q: Qdrant) -> None:
    q.replace_payload("alpha_docs", "a-0001", lambda p: p.update(page=3))


def _drop_collection(q: Qdrant) -> None:
    q.store.delete_collection("gamma_docs")


def _wrong_distance(q: Qdrant) -> None:
    points, _ = q.store.scroll("gamma_docs", limit=1000, with_payload=True, with_vectors=True)
    q.store.delete_collection("gamma_docs")
    q.store.create_collection("gamma_docs", size=4, distance="Euclid")
    q.store.upsert(
        "gamma_docs",
        [str(p.id) for p in points],
        [list(p.vector) for p in points],  # type: ignore[arg-type]
        [dict(p.payload or {}) for p in points],
    )


DAMAGES: dict[str, tuple[Callable[[Qdrant], None], str, set[str], dict[str, Any]]] = {
    # name: (damage, collection, failing checks, a difference that must be listed)
    "deleted point": (_delete, "alpha_docs", {"count", "identity"}, {"id": "a-0005", "field": "presence"}),
    "extra point": (_extra, "beta_docs", {"count", "identity"}, {"id": "intruder", "field": "presence"}),
    "swap behind an equal count": (_swap, "gamma_docs", {"identity"}, {"id": "g-0003", "target": str(ABSENT)}),
    "duplicated chroma_id": (_duplicate, "beta_docs", {"count", "identity"}, {"id": "b-0010", "field": "duplicate"}),
    "point id off the rule": (_wrong_point_id, "beta_docs", {"identity"}, {"id": "b-0011", "field": "point id"}),
    "vector component +1e-3": (_vector, "beta_docs", {"vectors"}, {"id": "b-0020", "field": "vector[3]"}),
    "metadata int -> float": (
        _int_to_float,
        "alpha_docs",
        {"payload"},
        {"id": "a-0020", "field": "metadata.i", "source": 20, "target": 20.0},
    ),
    "document changed": (_document, "gamma_docs", {"payload"}, {"id": "g-0007", "field": "document"}),
    "uri removed": (
        _uri_removed,
        "beta_docs",
        {"payload"},
        {"id": "b-0003", "field": "uri", "source": "s3://bucket/beta_docs/3.txt", "target": str(ABSENT)},
    ),
    "chroma_id of another record": (
        _foreign_chroma_id,
        "beta_docs",
        {"identity"},
        {"id": "b-0030", "field": "chroma_id", "source": "b-0030", "target": "b-0031"},
    ),
    "payload key outside the layout": (
        _extra_key,
        "alpha_docs",
        {"payload"},
        {"id": "a-0001", "field": "payload keys"},
    ),
    "collection deleted": (
        _drop_collection,
        "gamma_docs",
        {"config"},
        {"field": "collection", "target": str(ABSENT)},
    ),
    "wrong distance": (_wrong_distance, "gamma_docs", {"config", "search"}, {"field": "distance", "target": "Euclid"}),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damage_is_caught_and_named(damage: str, small_copy: dict[str, Any]) -> None:
    apply, name, expected_failures, expected_diff = DAMAGES[damage]
    with Qdrant(small_copy["qdrant"]) as q:
        apply(q)
    ok, _ = verify_run(small_copy["run_id"])
    assert not ok
    data = result_json(small_copy["outputs"], small_copy["run_id"])
    assert data["ok"] is False and data["status"] == "failed"
    assert data["verdict"].startswith("NOT VERIFIED") and name in data["verdict"]
    col = collection(data, name)
    assert col["status"] == "FAILED"
    failing = failed_checks(col)
    if expected_failures != {"config", "search"}:
        # a lost, added or changed record fails search parity too when it is a neighbour of a sampled query
        failing.discard("search")
    assert failing == expected_failures, col["checks"]
    for other in ("alpha_docs", "beta_docs", "gamma_docs"):
        if other != name:
            assert collection(data, other)["status"] == "verified"
    listed = col["differences"]
    assert any(all(d.get(k) == v and type(d.get(k)) is type(v) for k, v in expected_diff.items()) for d in listed), (
        listed
    )


def test_numbers_name_what_differs(small_copy: dict[str, Any]) -> None:
    """Several damages at once: totals, first ids and values are all recorded."""
    with Qdrant(small_copy["qdrant"]) as q:
        _delete(q)
        q.delete("alpha_docs", "a-0006")
        _vector(q)
        _int_to_float(q)
    assert not verify_run(small_copy["run_id"])[0]
    data = result_json(small_copy["outputs"], small_copy["run_id"])
    alpha, beta = collection(data, "alpha_docs"), collection(data, "beta_docs")
    ident = alpha["checks"]["identity"]["numbers"]
    assert ident["missing"] == 2 and ident["missing_ids"] == ["a-0005", "a-0006"] and ident["extra"] == 0
    assert alpha["checks"]["count"]["numbers"] == {"source": 700, "target": 698}
    assert alpha["checks"]["payload"]["numbers"]["records_differing"] == 1
    assert alpha["checks"]["payload"]["numbers"]["differences_by_field"] == {"metadata": 1}
    vec = beta["checks"]["vectors"]["numbers"]
    assert vec["differing"] == 1 and vec["compared"] == 300
    assert vec["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    (vdiff,) = diffs(beta, "vectors")
    assert vdiff["target"] - vdiff["source"] == pytest.approx(1e-3, rel=1e-3)
    (mdiff,) = diffs(alpha, "payload")
    assert mdiff["source"] == 20 and isinstance(mdiff["source"], int)
    assert mdiff["target"] == 20.0 and isinstance(mdiff["target"], float)
    assert "int vs float" in mdiff["detail"]
    # the notebook reads the same numbers back from the filed JSON
    from runbook_lib.state.run import Run

    loaded = load_result(Run.open(small_copy["outputs"], small_copy["run_id"]))
    table = report.differences_table(loaded)
    assert {"a-0005", "a-0006", "b-0020", "a-0020"} <= set(table["id"])
    assert report.summary(loaded).loc["alpha_docs", "identity"] == "FAIL"
    with pytest.raises(VerificationFailed):
        loaded.raise_if_failed()


def test_unknown_collection_for_the_run(small_copy: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="did not migrate collection 'nope'"):
        run_step_inprocess("verify", verify, run_id=small_copy["run_id"], collections="nope")


# --- the awkward database, alias cutover, another tool's migration, a changed source ------------------------------
@pytest.mark.parametrize(  # the engine with a plain cutover; the alias cutover on local mode (Edge has no aliases)
    ("cutover", "qdrant_kind"), [("plain", "edge"), ("alias", "local")]
)
def test_awkward_db_alias_other_tool_and_source_change(runbook_env: dict[str, Path], cutover: str) -> None:
    spec = create_awkward_db(runbook_env["chroma"])
    step, migrated = run_step_inprocess("migrate", migrate, cutover=cutover)
    assert migrated.ok, migrated.errors
    run_id = step.run.run_id

    ok, result = verify_run(run_id)
    assert ok, result
    data = result_json(runbook_env["outputs"], run_id)
    for name, info in spec.items():
        col = collection(data, name)
        if info["count"] == 0:
            assert col["status"] == "skipped (empty)"
            continue
        assert col["status"] == "verified", col["checks"]
        if cutover == "alias":
            assert col["target"] == f"{name}__{run_id}" and col["alias"] == name
            assert col["checks"]["config"]["numbers"]["alias"] == {"name": name, "points_to": col["target"]}
        else:
            assert col["target"] == name
        assert col["checks"]["vectors"]["numbers"]["compared"] == info["count"]
        assert col["checks"]["identity"]["numbers"]["source_ids"] == info["count"]
    # five spellings of one UUID, 1 / 1.0 / True, shadowing keys, lists, a zero vector: all carried exactly
    assert collection(data, "awkward_cosine")["checks"]["payload"]["numbers"]["records_differing"] == 0

    # Verified as another tool's migration (no checkpoint in a new run): live source, collections by their own
    # name -- with the alias cutover, the aliases.
    ok, result = verify_run("")
    assert ok, result
    assert "another tool" in result.migrated_by and result.source_unchanged["result"] == "skipped"
    assert {c["collection"] for c in result.collections} == set(spec)

    # The live source changes after the backup: caught, and the file named.
    (runbook_env["chroma"] / "written-after-backup.bin").write_bytes(b"new")
    assert not verify_run(run_id)[0]
    data = result_json(runbook_env["outputs"], run_id)
    assert data["source_unchanged"]["result"] == "FAIL"
    assert data["source_unchanged"]["numbers"]["problems"] == ["written-after-backup.bin: not in the manifest"]
    assert all(c["ok"] for c in data["collections"])  # the copy itself still equals what was migrated


# --- pure parts ------------------------------------------------------------------------------------------------------
def test_strict_equality() -> None:
    assert strict_equal(1, 1) and not strict_equal(1, 1.0) and not strict_equal(1, True) and not strict_equal(1.0, True)
    assert strict_equal([1, "a", True], [1, "a", True]) and not strict_equal([1, 2], [1, 2.0])
    assert strict_equal({"a": [1.5]}, {"a": [1.5]}) and not strict_equal({"a": 1}, {"a": 1, "b": 2})
    assert value_differences("metadata", {"page": 3, "tags": [1, 2]}, {"page": 3.0, "tags": [1, True]}) == [
        ("metadata.page", 3, 3.0, "type int vs float"),
        ("metadata.tags[1]", 2, True, "type int vs bool"),
    ]
    good = {"chroma_id": "x", "document": None, "metadata": {"k": 1}}
    assert payload_differences("x", None, {"k": 1}, None, good) == []
    assert payload_differences("x", None, None, None, {**good, "metadata": {}}) == []
    assert [d[0] for d in payload_differences("x", None, {"k": 1}, None, {**good, "uri": None})] == ["uri"]
    assert [d[0] for d in payload_differences("x", None, {"k": 1}, None, {**good, "extra": 1})] == ["payload keys"]
    assert [d[0] for d in payload_differences("x", None, {"k": 1}, "u", good)] == ["uri"]


@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
def test_streaming_top_k_equals_brute_force(space: str) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(403, 6)).astype(np.float32)
    vectors[200] = vectors[10]  # a tie
    ids = [f"r{i:03d}" for i in range(len(vectors))]
    queries = np.stack([vectors[10], vectors[50], rng.normal(size=6).astype(np.float32)])
    topk = RunningTopK(queries, 10, space)
    for start in range(0, len(vectors), 37):
        topk.update(vectors[start : start + 37], ids[start : start + 37])
    for j, q in enumerate(queries):
        got_ids, got_d = topk.result(j)
        full = chroma_distances(q, vectors, space)
        np.testing.assert_allclose(got_d, np.sort(full)[:10])
        assert all(full[ids.index(i)] <= np.sort(full)[9] for i in got_ids)


def test_parameters() -> None:
    assert VerifyParams().vector_check == "all" and VerifyParams().vector_sample is None
    assert VerifyParams(vector_check=" 100 ").vector_sample == 100
    assert VerifyParams(vector_check="ALL").vector_check == "all"
    for bad in ("0", "-3", "some", True):
        with pytest.raises(ValidationError):
            VerifyParams(vector_check=bad)
    with pytest.raises(ValidationError):
        VerifyParams(k=0)
    with pytest.raises(ConfigError, match="vector_check"):
        run_step_inprocess("verify", verify, vector_check="most")


# --- through papermill and the runner ------------------------------------------------------------------------------
def _run_id(stderr: str) -> str:
    match = re.search(r"runbook: run (\S+) in", stderr)
    assert match, stderr
    return match.group(1)


def _cli_migrate_verify_damage(outputs: Path, qdrant: Path, name: str, chroma_id: str, count: int) -> dict[str, Any]:
    mig = run_cli("migrate")
    assert mig.returncode == 0, mig.stderr[-3000:]
    run_id = _run_id(mig.stderr)
    ver = run_cli("verify", "--run-id", run_id)
    assert ver.returncode == 0, ver.stderr[-3000:]
    data = result_json(outputs, run_id)
    assert data["ok"] is True and data["verdict"] in ver.stderr
    assert collection(data, name)["checks"]["count"]["numbers"] == {"source": count, "target": count}
    assert collection(data, name)["checks"]["search"]["numbers"]["recall_min"] == 1.0

    with Qdrant(qdrant) as q:
        q.delete(name, chroma_id)
    bad = run_cli("verify", "--run-id", run_id)
    assert bad.returncode == 1, bad.stderr[-3000:]
    run_dir = outputs / run_id
    for suffix in (".ipynb", ".html", ".json"):
        assert (run_dir / f"03_verify{suffix}").is_file()
    assert (run_dir / "attempts").is_dir()  # the passing attempt was kept, not overwritten
    data = result_json(outputs, run_id)
    assert data["ok"] is False
    ident = collection(data, name)["checks"]["identity"]["numbers"]
    assert ident["missing"] == 1 and ident["missing_ids"] == [chroma_id]
    notebook = (run_dir / "03_verify.ipynb").read_text()
    assert "VerificationFailed" in notebook and chroma_id in notebook
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["steps"]["verify"]["status"] == "failed" and manifest["steps"]["verify"]["exit_code"] == 1
    return data


@pytest.mark.slow
def test_cli_persistent_directory(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    data = _cli_migrate_verify_damage(runbook_env["outputs"], runbook_env["qdrant"], "beta_docs", "b-0042", 300)
    assert data["source_unchanged"]["result"] == "pass"


@pytest.mark.slow
@pytest.mark.server
def test_cli_chroma_server(server_env: dict[str, Any]) -> None:
    data = _cli_migrate_verify_damage(server_env["outputs"], server_env["qdrant"], "srv_cosine", "s17", 250)
    assert "live Chroma server" in data["source_read"]
    assert data["source_unchanged"]["result"] == "skipped"
    assert collection(data, "srv_l2")["status"] == "verified"


# --- a VERIFIED must be true: every planned collection, no relaxed check unlabelled, strongest reads -------------
def _edit_checkpoint(copy: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    path = copy["outputs"] / copy["run_id"] / "state" / "migrate_checkpoint.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_planned_collections_not_finished_fail(small_copy: dict[str, Any]) -> None:
    def stopped_part_way(data: dict[str, Any]) -> None:
        data["planned"] = list(data["collections"])
        data["collections"]["beta_docs"]["status"] = "copying"
        del data["collections"]["gamma_docs"]

    _edit_checkpoint(small_copy, stopped_part_way)
    run_id = small_copy["run_id"]
    assert not verify_run(run_id)[0]
    data = result_json(small_copy["outputs"], run_id)
    assert data["ok"] is False and data["verdict"].startswith("NOT VERIFIED")
    for name in ("beta_docs", "gamma_docs"):
        assert f"{name}: not copied" in data["verdict"] and f"runbook migrate --run-id {run_id}" in data["verdict"]
        assert collection(data, name)["status"] == "FAILED"
    assert collection(data, "gamma_docs")["migrate_status"] == "not started"
    assert collection(data, "alpha_docs")["status"] == "verified"
    assert "alpha_docs" not in data["verdict"]


def test_old_checkpoint_without_planned_and_a_failed_collection(small_copy: dict[str, Any]) -> None:
    def older_run(data: dict[str, Any]) -> None:
        data.pop("planned", None)
        data["collections"]["alpha_docs"]["status"] = "failed"

    _edit_checkpoint(small_copy, older_run)
    assert not verify_run(small_copy["run_id"])[0]
    data = result_json(small_copy["outputs"], small_copy["run_id"])
    assert "alpha_docs: not copied (migrate status 'failed'" in data["verdict"]


def test_nothing_to_verify_fails(small_copy: dict[str, Any]) -> None:
    _edit_checkpoint(small_copy, lambda data: data.update(collections={}, planned=[]))  # migrate failed early
    assert not verify_run(small_copy["run_id"])[0]
    data = result_json(small_copy["outputs"], small_copy["run_id"])
    assert data["collections"] == [] and "NOT VERIFIED: nothing to verify" in data["verdict"]


@pytest.mark.parametrize("status", ["failed", "running"])
def test_migrate_failed_without_checkpoint_fails(small_copy: dict[str, Any], status: str) -> None:
    from runbook_lib.state.run import Run

    run = Run.open(small_copy["outputs"], small_copy["run_id"])
    (run.dir / "state" / "migrate_checkpoint.json").unlink()
    run.update_step("migrate", status=status)
    assert not verify_run(run.run_id)[0]
    data = result_json(small_copy["outputs"], run.run_id)
    assert data["collections"] == [] and f"the migrate step of run {run.run_id}" in data["verdict"]
    assert "nothing to verify" not in data["verdict"]


def test_relaxed_check_is_labelled(small_copy: dict[str, Any]) -> None:
    ok, strict = verify_run(small_copy["run_id"])
    assert ok and strict.to_dict()["relaxed"] == [] and strict.verdict.startswith("VERIFIED: ")
    ok, result = verify_run(small_copy["run_id"], tolerance=1e-3, vector_check="50")
    assert ok, result
    data = result_json(small_copy["outputs"], small_copy["run_id"])
    assert data["relaxed"] == ["tolerance 0.001 > 1e-6", "vectors sampled, 50 per collection"]
    assert data["verdict"].startswith(
        "VERIFIED (RELAXED: tolerance 0.001 > 1e-6; vectors sampled, 50 per collection): "
    )
    assert load_result_of(small_copy).relaxed == data["relaxed"]


def load_result_of(copy: dict[str, Any]) -> Any:
    from runbook_lib.state.run import Run

    return load_result(Run.open(copy["outputs"], copy["run_id"]))


def test_verify_reads_with_strongest_consistency(small_copy: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from runbook_lib.steps.verify import engine

    seen: list[bool] = []
    real = engine.verify_collection
    monkeypatch.setattr(engine, "verify_collection", lambda s, t, *a: seen.append(t.strong_reads) or real(s, t, *a))
    assert verify_run(small_copy["run_id"], collections="gamma_docs")[0]
    assert seen == [True]
