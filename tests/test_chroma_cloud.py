"""Chroma Cloud as a source (``CHROMA_API_KEY``), proven against a loopback stand-in of Cloud's quotas
(:mod:`runbook_fixtures.cloud_quota_proxy`) in front of a real ``chroma run`` server: chromadb's ``CloudClient``
with the key in Cloud's header, at most 300 records per request, at most 10 reads in flight per collection, 429s
with Retry-After at random; migrate, verify and sync (both ways) exact through it, nothing over quota, every 429
retried, and the key nowhere under outputs/."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest

from runbook_fixtures.cloud_quota_proxy import CloudQuotaProxy
from runbook_lib.config.settings import SECRET_VARIABLES, load_settings
from runbook_lib.core.mapping import build_payload, normalise_rows, point_id
from runbook_lib.errors import ConfigError
from runbook_lib.steps.dry_run.engine import dry_run
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.rollback.engine import rollback
from runbook_lib.steps.sync.engine import sync
from runbook_lib.steps.verify.engine import verify

from conftest import fill_server, open_qdrant, read_qdrant, run_step_inprocess

API_KEY = "ck-cloud-SECRET-4f1e9a7b2c"
SERVER_TOKEN = "srv-token-0d9c8b7a"
BIG = 1_234  # five pages of 300, the last one short


def add_big_collection(host: str, port: int, database: str, n: int = BIG) -> None:
    """A collection over several Cloud pages, with every kind of value the copy must keep."""
    client = chromadb.HttpClient(host=host, port=port, database=database)
    col = client.create_collection("cloud_big", metadata={"hnsw:space": "cosine"}, embedding_function=None)
    rng = np.random.default_rng(7)
    for s in range(0, n, 250):
        ids = [f"c-{i:05d}" for i in range(s, min(n, s + 250))]
        col.add(
            ids=ids,
            embeddings=rng.normal(size=(len(ids), 16)).astype(np.float32).tolist(),
            documents=[None if i % 13 == 0 else f"cloud document {i} — ✓" for i in range(s, s + len(ids))],
            metadatas=[
                None if i % 11 == 0 else {"i": i, "half": i / 2, "whole": 1.0, "even": i % 2 == 0, "t": f"t{i % 3}"}
                for i in range(s, s + len(ids))
            ],
            uris=[f"s3://cloud/{i}" if i % 4 == 0 else None for i in range(s, s + len(ids))],
        )


@pytest.fixture
def cloud_env(
    chroma_server: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """``runbook_env`` whose source is "Chroma Cloud": the quota proxy on loopback in front of the `chroma run`
    server, a fresh database with the small server data and a collection of several pages."""
    host, port = chroma_server["host"], chroma_server["port"]
    filled = fill_server(host, port)
    add_big_collection(host, port, filled["database"])
    with CloudQuotaProxy(
        f"http://{host}:{port}", API_KEY, server_token=SERVER_TOKEN, throttle_rate=0.06, retry_after="0", seed=3
    ) as proxy:
        for var, value in {
            "CHROMA_API_KEY": API_KEY,
            "CHROMA_HOST": "127.0.0.1",
            "CHROMA_PORT": str(proxy.port),
            "CHROMA_SSL": "false",
            "CHROMA_TENANT": "default_tenant",
            "CHROMA_DATABASE": filled["database"],
        }.items():
            monkeypatch.setenv(var, value)
        server = chromadb.HttpClient(host=host, port=port, database=filled["database"])
        yield {**filled, **runbook_env, "proxy": proxy, "server": server}


def server_records(server: Any, name: str) -> dict[str, Any]:
    col = server.get_collection(name, embedding_function=None)
    got = col.get(include=["embeddings", "documents", "metadatas", "uris"])
    return {
        cid: (
            np.asarray(got["embeddings"][k], dtype=np.float32),
            got["documents"][k],
            got["metadatas"][k],
            got["uris"][k],
        )
        for k, cid in enumerate(got["ids"])
    }


def assert_qdrant_equals_server(env: dict[str, Any], names: list[str]) -> int:
    """Every record of the server, exactly, in Qdrant (vectors, documents, metadata with types, uris)."""
    checked = 0
    for name in names:
        records = server_records(env["server"], name)
        target = read_qdrant(env["qdrant"], name)
        assert len(target["points"]) == len(records), name
        cosine = env["server"].get_collection(name).metadata.get("hnsw:space") == "cosine"
        for cid, (vec, doc, meta, uri) in records.items():
            got_vec, payload = target["points"][point_id(cid)]
            want = normalise_rows(vec[None, :])[0] if cosine else vec
            assert np.allclose(got_vec, want, atol=1e-6), (name, cid)
            assert payload["chroma_id"] == cid and payload["document"] == doc, (name, cid)
            assert payload["metadata"] == (meta or {}), (name, cid)
            for key, value in (meta or {}).items():
                assert type(payload["metadata"][key]) is type(value), (name, cid, key)
            assert payload.get("uri") == uri, (name, cid)
            checked += 1
    return checked


def assert_key_nowhere(outputs: Path) -> None:
    files = [p for p in outputs.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        assert API_KEY.encode() not in data, path
        assert SERVER_TOKEN.encode() not in data, path


def retries_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.name == "runbook_lib.chroma.server" and "retry" in r.getMessage())


# --- settings --------------------------------------------------------------------------------------------------
def test_api_key_makes_the_source_chroma_cloud() -> None:
    settings = load_settings({"CHROMA_API_KEY": API_KEY, "CHROMA_TENANT": "t1", "CHROMA_DATABASE": "d1"})
    chroma = settings.chroma
    assert chroma.is_cloud and chroma.is_server
    assert (chroma.host, chroma.port, chroma.ssl) == ("api.trychroma.com", 443, True)
    assert chroma.describe() == "Chroma Cloud https://api.trychroma.com:443 (tenant t1, database d1)"
    assert "CHROMA_API_KEY" in SECRET_VARIABLES and API_KEY in settings.secrets()
    public = settings.public()
    assert public["chroma_api_key_set"] is True and public["chroma_cloud"] is True
    assert API_KEY not in repr(settings) and API_KEY not in str(public)
    # another address: loopback over http is fine, https by default elsewhere
    proxy = load_settings(
        {"CHROMA_API_KEY": API_KEY, "CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": "9000", "CHROMA_SSL": "0"}
    )
    assert proxy.chroma.url == "http://127.0.0.1:9000"
    assert load_settings({"CHROMA_API_KEY": API_KEY, "CHROMA_HOST": "cloud.example"}).chroma.url == (
        "https://cloud.example:443"
    )


def test_api_key_over_plain_http_to_another_host_is_refused() -> None:
    env = {"CHROMA_API_KEY": API_KEY, "CHROMA_HOST": "chroma.example.com", "CHROMA_SSL": "false"}
    with pytest.raises(ConfigError, match="Refusing to send CHROMA_API_KEY over plain http") as err:
        load_settings(env)
    assert API_KEY not in str(err.value)
    allowed = load_settings({**env, "RUNBOOK_ALLOW_INSECURE_API_KEY": "true"})
    assert allowed.chroma.url == "http://chroma.example.com:8000"
    with pytest.raises(ConfigError, match="CHROMA_HOST is not"):
        load_settings({"CHROMA_API_KEY": API_KEY, "CHROMA_PORT": "8000"})


def test_retry_after_is_honoured_with_jitter() -> None:
    from tenacity import RetryCallState

    from runbook_lib.chroma.server import ChromaServerBusy
    from runbook_lib.core.retries import PATIENT, retry_after_seconds

    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.set_exception((ChromaServerBusy, ChromaServerBusy(429, "/get", "slow down", 2.0), None))
    waits = {PATIENT.wait(state) for _ in range(20)}
    assert all(2.0 <= w <= 2.5 for w in waits) and len(waits) > 1  # the server's wait, plus jitter


# --- the stand-in itself ---------------------------------------------------------------------------------------
def test_the_stand_in_enforces_cloud_quotas(cloud_env: dict[str, Any]) -> None:
    """The proxy is a fair stand-in: the key in Cloud's header is required, a request over 300 records is refused,
    and chromadb's own CloudClient talks to it."""
    proxy: CloudQuotaProxy = cloud_env["proxy"]
    with pytest.raises(ValueError, match="invalid x-chroma-token"):  # no key: refused from the first request
        chromadb.HttpClient(host="127.0.0.1", port=proxy.port, database=cloud_env["database"])
    client = chromadb.CloudClient(
        tenant="default_tenant",
        database=cloud_env["database"],
        api_key=API_KEY,
        cloud_host="127.0.0.1",
        cloud_port=proxy.port,
        enable_ssl=False,
    )
    col = client.get_collection("cloud_big")
    with pytest.raises(Exception, match="Quota exceeded"):
        col.get(include=[])  # a whole collection in one request
    with pytest.raises(Exception, match="Quota exceeded"):
        col.get(ids=[f"c-{i:05d}" for i in range(301)])
    assert len(col.get(limit=300, include=[])["ids"]) == 300
    assert proxy.stats.rejected == 3 and proxy.stats.rejected_reasons["no or wrong API key"] == 1


def test_throttled_reads_wait_for_retry_after(cloud_env: dict[str, Any]) -> None:
    """A 429 with Retry-After: 1 is retried after about a second; reads never exceed read_concurrency in flight."""
    from runbook_lib.chroma.connect import open_source

    proxy: CloudQuotaProxy = cloud_env["proxy"]
    settings = load_settings().chroma.model_copy(update={"read_concurrency": 3})
    proxy.throttle_rate, proxy.retry_after = 1.0, "1"
    with open_source(settings) as source:
        proxy.throttle_rate = 1.0
        t0 = time.perf_counter()
        threading_reset = proxy.stats.throttled
        import threading

        def relent() -> None:
            time.sleep(0.3)
            proxy.throttle_rate = 0.0

        threading.Thread(target=relent).start()
        assert source.count("cloud_big") == BIG
        assert time.perf_counter() - t0 >= 0.9  # waited as asked
        assert proxy.stats.throttled > threading_reset
        proxy.reset()
        assert len(source.snapshot_ids("cloud_big")) == BIG
        assert proxy.stats.max_reads_in_flight <= 3 and proxy.stats.rejected == 0
        assert "Chroma Cloud was read within its quotas" in source.read_summary()


def test_dry_run_reports_the_quotas_requests_and_expected_time(cloud_env: dict[str, Any]) -> None:
    from runbook_lib.chroma.cloud import request_count
    from runbook_lib.steps.dry_run import report

    proxy: CloudQuotaProxy = cloud_env["proxy"]
    proxy.throttle_rate = 0.0
    _, result = run_step_inprocess("dry-run", dry_run, read_concurrency=5)
    q = result.source_quotas
    assert q is not None and q["max_records_per_request"] == 300 and q["read_concurrency"] == 5
    assert q["collections"]["cloud_big"]["expected_requests"] == request_count(BIG, 5) == 2 * (1 + 5)
    assert q["collections"]["cloud_big"]["requests"] == request_count(BIG, 5)  # what it took, as planned
    assert q["expected_requests"] == sum(request_count(n, 5) for n in (BIG, 250, 90))
    plan = {pl["source"]: pl for pl in result.plan}
    assert plan["cloud_big"]["source_requests"] == 12 and plan["cloud_big"]["source_read_s"] is not None
    assert "read within its quotas" in result.verdict and "requests" in result.verdict
    assert "cloud_big: 1,234 records, 12 requests" in report.source_quotas(result)
    assert proxy.stats.rejected == 0 and proxy.stats.max_reads_in_flight <= 5


# --- the proof -------------------------------------------------------------------------------------------------
@pytest.mark.server
def test_migrate_verify_and_sync_are_exact_through_cloud_quotas(
    cloud_env: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    proxy: CloudQuotaProxy = cloud_env["proxy"]
    names = ["cloud_big", "srv_cosine", "srv_l2"]
    caplog.set_level(logging.WARNING, logger="runbook_lib.chroma.server")

    step, migrated = run_step_inprocess("migrate", migrate, batch_size=256, read_concurrency=8)
    assert migrated.ok, migrated.errors
    assert migrated.total_records == BIG + 250 + 90
    assert "Chroma Cloud was read within its quotas" in migrated.verdict
    assert assert_qdrant_equals_server(cloud_env, names) == BIG + 340
    run_id = step.run.run_id

    _, verified = run_step_inprocess("verify", verify, run_id=run_id, read_concurrency=8)
    assert verified.ok, verified.problems
    assert "Chroma Cloud" in verified.source_read and "paged again" in verified.source_read

    # the app writes into Cloud: forward sync carries them, through the same quota-aware reader
    col = cloud_env["server"].get_collection("cloud_big", embedding_function=None)
    col.add(ids=["c-new-1", "c-new-2"], embeddings=[[0.5] * 16, [-0.5] * 16], documents=["a", None], uris=[None, "u"])
    col.update(ids=["c-00005"], metadatas=[{"i": 5.0, "changed": True}])
    col.delete(ids=["c-00006", "c-01200"])
    _, forward = run_step_inprocess("sync", sync, run_id=run_id)
    assert forward.totals()["applied"] == 5, forward.collections
    assert assert_qdrant_equals_server(cloud_env, names) == BIG + 340

    # the app writes into Qdrant: reverse sync writes them into Cloud, at most 300 records per request
    with open_qdrant(cloud_env["qdrant"]) as q:
        q.upsert(
            "srv_l2",
            [point_id(f"q-{i}") for i in range(450)],
            [[float(i % 7) + 1.0] * 6 for i in range(450)],
            [build_payload(f"q-{i}", f"q {i}", {"k": i}, None) for i in range(450)],
        )
    _, reverse = run_step_inprocess("sync", sync, run_id=run_id, direction="reverse", confirm=True, batch_size=1000)
    assert reverse.totals()["applied"] == 450, reverse.collections
    assert cloud_env["server"].get_collection("srv_l2").count() == 90 + 450
    _, verified = run_step_inprocess("verify", verify, run_id=run_id)
    assert verified.ok, verified.problems
    _, again = run_step_inprocess("sync", sync, run_id=run_id)
    assert again.verdict.startswith("IN SYNC"), again.verdict

    stats = proxy.stats
    assert stats.rejected == 0, stats.rejected_reasons  # nothing over quota, never without the key
    assert stats.largest_request <= 300 and stats.max_reads_in_flight <= 8
    assert stats.throttled_concurrency == 0 and stats.throttled_random > 0
    assert retries_logged(caplog) == stats.throttled  # every 429 was retried (and each retry was one)
    assert_key_nowhere(cloud_env["outputs"])


@pytest.mark.server
def test_cli_through_cloud_quotas_keeps_the_key_out_of_outputs(cloud_env: dict[str, Any]) -> None:
    from conftest import run_cli

    env = {k: os.environ[k] for k in ("CHROMA_API_KEY", "CHROMA_HOST", "CHROMA_PORT", "CHROMA_SSL", "CHROMA_DATABASE")}
    dry = run_cli("dry-run", env=env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    run_id = next(p.name for p in cloud_env["outputs"].iterdir() if p.is_dir())
    done = run_cli("migrate", "--run-id", run_id, "-p", "read_concurrency", "10", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    checked = run_cli("verify", "--run-id", run_id, env=env)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert cloud_env["proxy"].stats.rejected == 0
    assert API_KEY not in dry.stdout + dry.stderr + done.stdout + done.stderr
    assert_key_nowhere(cloud_env["outputs"])


# --- every database of a tenant ---------------------------------------------------------------------------------
def test_qualified_names_collisions_and_the_collection_cap() -> None:
    from runbook_lib.chroma.tenant import QDRANT_CLOUD_MAX_COLLECTIONS, check_collection_cap, check_names

    assert check_names([("db1", "docs"), ("db2", "docs")]) == {
        "db1__docs": ("db1", "docs"),
        "db2__docs": ("db2", "docs"),
    }
    with pytest.raises(ConfigError, match="would both become the Qdrant collection 'a__b__c'"):
        check_names([("a__b", "c"), ("a", "b__c")])
    check_collection_cap(QDRANT_CLOUD_MAX_COLLECTIONS)
    with pytest.raises(ConfigError, match="over Qdrant Cloud's cap of 1,000"):
        check_collection_cap(990, 11)


@pytest.mark.server
def test_several_databases_in_one_run(cloud_env: dict[str, Any], chroma_server: dict[str, Any]) -> None:
    """``-p databases a,b``: each (database, collection) becomes ``<database>__<collection>`` in Qdrant, shown by the
    dry run; migrate, verify and a forward sync are exact across both databases; ``all`` lists the tenant's."""
    from runbook_lib.chroma.tenant import list_databases

    first = cloud_env["database"]
    second = fill_server(chroma_server["host"], chroma_server["port"], seed=5)["database"]  # same collection names
    databases = f"{first},{second}"
    assert {first, second} <= set(list_databases(load_settings().chroma))

    _, planned = run_step_inprocess("dry-run", dry_run, databases=databases)
    targets = sorted(pl["target"] for pl in planned.plan)
    assert targets == sorted(
        [
            f"{first}__cloud_big",
            f"{first}__srv_cosine",
            f"{first}__srv_l2",
            f"{second}__srv_cosine",
            f"{second}__srv_l2",
        ]
    )
    assert planned.naming["rule"] == "<database>__<collection>" and planned.naming["within_cap"] is True
    assert "each collection goes to Qdrant as <database>__<collection>" in planned.verdict
    assert set(planned.source_quotas["collections"]) == set(targets)

    step, migrated = run_step_inprocess("migrate", migrate, databases=databases)
    assert migrated.ok, migrated.errors
    assert migrated.total_records == BIG + 2 * 340
    run_id = step.run.run_id
    other = chromadb.HttpClient(host=chroma_server["host"], port=chroma_server["port"], database=second)
    for database, server in ((first, cloud_env["server"]), (second, other)):
        for name in ("srv_cosine", "srv_l2"):
            records = server_records(server, name)
            points = read_qdrant(cloud_env["qdrant"], f"{database}__{name}")["points"]
            assert len(points) == len(records)
            for cid, (vec, doc, meta, _uri) in records.items():
                got_vec, payload = points[point_id(cid)]
                assert payload["document"] == doc and payload["metadata"] == meta
                want = normalise_rows(vec[None, :])[0] if name == "srv_cosine" else vec
                assert np.allclose(got_vec, want, atol=1e-6)

    _, verified = run_step_inprocess("verify", verify, run_id=run_id, databases=databases)
    assert verified.ok, verified.problems
    other.get_collection("srv_l2", embedding_function=None).add(ids=["x-1"], embeddings=[[0.1] * 6], documents=["new"])
    _, forward = run_step_inprocess("sync", sync, run_id=run_id, databases=databases)
    assert forward.totals()["applied"] == 1, forward.collections
    assert read_qdrant(cloud_env["qdrant"], f"{second}__srv_l2")["points"][point_id("x-1")][1]["document"] == "new"
    assert cloud_env["proxy"].stats.rejected == 0
    with open_qdrant(cloud_env["qdrant"]) as q:
        payload = build_payload("q-9", "from qdrant", {"k": 9}, None)
        q.upsert(f"{second}__srv_l2", [point_id("q-9")], [[1.0] * 6], [payload])
    with pytest.raises(ConfigError, match="one database at a time"):  # written back one database per run
        run_step_inprocess("sync", sync, run_id=run_id, databases=databases, direction="reverse", confirm=True)
    # the run says it read several databases: without `databases` a reverse sync or a rollback is refused too
    with pytest.raises(ConfigError, match="one database at a time"):
        run_step_inprocess("sync", sync, run_id=run_id, direction="reverse", confirm=True)
    with pytest.raises(ConfigError, match="database"):
        run_step_inprocess("rollback", rollback, run_id=run_id, confirm=True)


def test_catch_up_passes_follow_writes_made_while_paging(
    cloud_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes between (and during) passes: the snapshot takes what was added, changed and deleted, and stops only
    after a pass that found nothing new; it equals the collection as it then is."""
    from runbook_lib.chroma.cloud import CloudSource
    from runbook_lib.chroma.connect import open_source

    col = cloud_env["server"].get_collection("cloud_big", embedding_function=None)
    real_pass = CloudSource._pass
    writes = [
        lambda: col.delete(ids=[f"c-{i:05d}" for i in range(0, 40)]),  # shifts every later page by 40
        lambda: (
            col.add(ids=["c-late"], embeddings=[[0.5] * 16]),
            col.update(ids=["c-01000"], metadatas=[{"moved": True}]),
        ),
    ]

    def pass_then_write(self: CloudSource, name: str, spool: Any, *, first: bool) -> int:
        changes = real_pass(self, name, spool, first=first)
        if writes:
            writes.pop(0)()
        return changes

    monkeypatch.setattr(CloudSource, "_pass", pass_then_write)
    with open_source(load_settings().chroma) as source:
        ids = source.snapshot_ids("cloud_big")
        assert source.stats.passes["cloud_big"] == 4 and source.stats.settled["cloud_big"]
        expected = server_records(cloud_env["server"], "cloud_big")
        assert ids == sorted(expected) and len(ids) == BIG - 40 + 1
        batch = source.fetch("cloud_big", ids)
        for k, cid in enumerate(batch.ids):
            vec, doc, meta, uri = expected[cid]
            assert np.array_equal(batch.embeddings[k], vec) and batch.documents[k] == doc
            assert batch.metadatas[k] == meta and batch.uris[k] == uri
        assert batch.metadatas[ids.index("c-01000")]["moved"] is True  # the change made between passes
    assert cloud_env["proxy"].stats.rejected == 0
