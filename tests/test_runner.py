"""The runner and the notebooks, through real papermill and a real kernel: evidence, exit codes, secrets."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.chroma.files import checksum_tree

from conftest import BIN, assert_exact_copy, free_port, on_local_mode, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _tree(root: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if skip not in p.parents and p != skip}


def _run_dir(outputs: Path) -> Path:
    runs = [p for p in outputs.iterdir() if (p / "manifest.json").is_file()]
    assert len(runs) == 1, runs
    return runs[0]


def test_dry_run_then_migrate_through_the_runner(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    tmp = runbook_env["chroma"].parent
    before_tree = _tree(tmp, runbook_env["outputs"])
    before_sums = checksum_tree(runbook_env["chroma"])

    dry = run_cli("dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    run = _run_dir(runbook_env["outputs"])
    # the dry run wrote nothing outside outputs/: no Qdrant folder, no backup, source untouched
    assert _tree(tmp, runbook_env["outputs"]) == before_tree
    assert checksum_tree(runbook_env["chroma"]) == before_sums
    for name in ("01_dry_run.ipynb", "01_dry_run.html", "01_dry_run.json", "figures/dry_run_inventory.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    result = json.loads((run / "01_dry_run.json").read_text())
    inv = {c["collection"]: c for c in result["collections"]}
    assert inv["alpha_docs"]["count"] == 700 and inv["alpha_docs"]["dimension"] == 16
    assert inv["beta_docs"]["space"] == "l2" and inv["gamma_docs"]["space"] == "ip"
    assert inv["alpha_docs"]["metadata_keys"] == "even:bool, half:float, i:int, tag:str"
    assert inv["alpha_docs"]["uris"] == len([i for i in range(700) if i % 3 == 0])
    plan = {p["source"]: p for p in result["plan"]}
    assert plan["alpha_docs"]["distance"] == "Cosine" and plan["beta_docs"]["distance"] == "Euclid"
    assert plan["gamma_docs"]["distance"] == "Dot" and plan["alpha_docs"]["target"] == "alpha_docs"
    assert plan["alpha_docs"]["id_scheme"].startswith("uuid5")
    assert any("empty_docs" in w for w in result["warnings"])
    assert result["total_records"] == 1120

    mig = run_cli("migrate", "--run-id", run.name, "-p", "batch_size", "100")
    assert mig.returncode == 0, mig.stderr[-3000:]
    result = json.loads((run / "02_migrate.json").read_text())
    assert result["ok"] and result["total_records"] == 1120
    assert result["parameters"]["batch_size"] == 100
    assert {r["collection"]: r["target_count"] for r in result["collections"]} == {
        "alpha_docs": 700,
        "beta_docs": 300,
        "empty_docs": None,
        "gamma_docs": 120,
    }
    assert (run / "figures" / "migrate_throughput.png").stat().st_size > 1000
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1120
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["steps"]["dry-run"]["status"] == "ok" and manifest["steps"]["migrate"]["status"] == "ok"
    assert manifest["steps"]["migrate"]["parameters"]["batch_size"] == 100
    assert manifest["packages"]["chromadb"] and manifest["packages"]["qdrant-client"]
    assert manifest["steps"]["migrate"]["duration_s"] > 0
    nb = json.loads((run / "02_migrate.ipynb").read_text())
    assert nb["metadata"]["papermill"]["parameters"]["run_id"] == run.name
    listed = run_cli("runs")
    assert run.name in listed.stdout and "ok" in listed.stdout

    # the terminal is a person's view: a line per step and its verdict; the chatter is in the run's logs/
    for done in (dry, mig):
        for noise in ("Executing Cell", "Input Notebook", "without encryption", "Alternative text", "Traceback"):
            assert noise not in done.stderr, (noise, done.stderr[-3000:])
    assert "Executing Cell" in (run / "logs" / "02_migrate.log").read_text()
    html = (run / "01_dry_run.html").read_text()
    assert "No description has been provided" not in html and 'alt="Source collections by size' in html

    # a retry that fails in its first cell does not leave the previous attempt's result claiming success
    from runbook_lib.runner.execute import execute_step
    from runbook_lib.state.run import Run

    outcome = execute_step("migrate", Run.open(runbook_env["outputs"], run.name), {"batch_size": 0})
    assert outcome.exit_code == 2
    retried = json.loads((run / "02_migrate.json").read_text()) if (run / "02_migrate.json").is_file() else {}
    assert retried.get("status") != "ok" and not retried.get("ok")
    assert list((run / "attempts").glob("02_migrate.*.json")), "the earlier attempt is kept in attempts/"


def test_headless_papermill_cli_from_another_directory(
    small_source: dict[str, Any], runbook_env: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "elsewhere" / "out.ipynb"
    out.parent.mkdir()
    done = subprocess.run(
        [str(BIN / "papermill"), str(ROOT / "notebooks" / "02_migrate.ipynb"), str(out), "-p", "batch_size", "512"],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = _run_dir(runbook_env["outputs"])
    assert json.loads((run / "02_migrate.json").read_text())["parameters"]["batch_size"] == 512
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1120


def test_relative_paths_resolve_against_the_project_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from runbook_lib.config.settings import load_settings

    monkeypatch.chdir(tmp_path)
    s = load_settings({"CHROMA_PERSIST_DIR": "data/chroma_db", "RUNBOOK_OUTPUTS": "outputs"})
    assert s.chroma.persist_dir == ROOT / "data" / "chroma_db"
    assert s.outputs == ROOT / "outputs" and s.qdrant.edge_path == ROOT / "data" / "qdrant_edge"
    assert s.qdrant.kind == "edge" and s.qdrant.path is None


def _assert_clean_failure(done: subprocess.CompletedProcess[str], code: int, *phrases: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    for phrase in phrases:
        assert phrase in done.stderr, (phrase, done.stderr[-3000:])


def test_missing_directory(runbook_env: dict[str, Path]) -> None:
    _assert_clean_failure(run_cli("dry-run"), 2, "CHROMA_PERSIST_DIR", "does not exist", "runbook sample-data")
    assert not runbook_env["outputs"].exists() or not any(runbook_env["outputs"].iterdir())


@pytest.mark.parametrize(
    ("env", "phrases"),
    [
        ({"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": "http"}, ["CHROMA_PORT", "not a port"]),
        ({"CHROMA_SSL": "true"}, ["CHROMA_SSL", "CHROMA_HOST is not"]),
        ({"QDRANT_URL": "localhost:6333"}, ["QDRANT_URL", "not a URL"]),
        ({"QDRANT_URL": "http://qdrant.example.com:6333", "QDRANT_API_KEY": "k-123"}, ["Refusing", "https://"]),
        ({"QDRANT_API_KEY": "k-123"}, ["QDRANT_URL is not"]),
        ({"QDRANT_TIMEOUT": "soon"}, ["QDRANT_TIMEOUT", "not a number"]),
    ],
)
def test_bad_settings_exit_2(small_source: dict[str, Any], env: dict[str, str], phrases: list[str]) -> None:
    done = run_cli("migrate", env=env)
    _assert_clean_failure(done, 2, *phrases)
    assert "k-123" not in done.stderr


def test_bad_parameters_exit_2(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    _assert_clean_failure(run_cli("migrate", "-p", "batch_size", "lots"), 2, "batch_size expects int")
    _assert_clean_failure(run_cli("migrate", "-p", "batchsize", "5"), 2, "Unknown parameter 'batchsize'")
    _assert_clean_failure(run_cli("migrate", "--run-id", "nope-123"), 2, "no run 'nope-123'")
    _assert_clean_failure(run_cli("migrate", "-p", "api_key", "x"), 2, "Unknown parameter")
    _assert_clean_failure(run_cli("frobnicate"), 2, "invalid choice")
    params = runbook_env["outputs"].parent / "p.yaml"
    params.write_text("batch_size: [1, 2]\n")
    _assert_clean_failure(run_cli("migrate", "-f", str(params)), 2, "batch_size expects int")


def test_checked_inside_the_kernel_exit_2_with_notebook_filed(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    """A parameter out of range is refused by the step's own model before a run folder exists; errors only the
    kernel can see (an unknown collection) still exit 2 and file the notebook."""
    done = run_cli("migrate", "-p", "batch_size", "0")
    _assert_clean_failure(done, 2, "batch_size", "greater than or equal to 1")
    assert not runbook_env["outputs"].exists() or not any(runbook_env["outputs"].iterdir())
    done = run_cli("migrate", "-p", "collections", "alpah_docs")
    _assert_clean_failure(done, 2, "'alpah_docs' does not exist", "alpha_docs")
    done = run_cli("migrate", "-p", "collections", "alpah_docs")
    runs = sorted(p for p in runbook_env["outputs"].iterdir() if p.is_dir())
    assert len(runs) == 2  # a run folder is never overwritten by another run
    for run in runs:
        assert (run / "02_migrate.ipynb").is_file() and (run / "02_migrate.html").is_file()
        assert json.loads((run / "02_migrate.json").read_text())["status"] == "failed"
        assert json.loads((run / "manifest.json").read_text())["steps"]["migrate"]["exit_code"] == 2


def test_unreachable_servers_exit_2(small_source: dict[str, Any]) -> None:
    port = free_port()
    _assert_clean_failure(
        run_cli("migrate", env={"QDRANT_URL": f"http://127.0.0.1:{port}"}), 2, "Cannot reach the Qdrant server"
    )
    _assert_clean_failure(
        run_cli("dry-run", env={"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(port)}),
        2,
        "Cannot reach the Chroma server",
    )


SECRET_KEY = "qk-SECRET-7f3a9c0d1e2b"
SECRET_TOKEN = "ct-SECRET-5b8e1f2a3c4d"


def test_no_secret_in_any_output_file(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    # a successful run with a Chroma token in the environment (unused by a directory source)
    ok = run_cli(
        "all",
        "-p",
        "queries",
        "5",
        "-p",
        "concurrency",
        "1",
        "-p",
        "level_seconds",
        "0.2",
        "-p",
        "sample_queries",
        "3",
        env={"CHROMA_AUTH_TOKEN": SECRET_TOKEN},
    )
    # a failing run whose error message would carry the secret (a parameter holding it)
    bad = run_cli("dry-run", "-p", "collections", SECRET_TOKEN, env={"CHROMA_AUTH_TOKEN": SECRET_TOKEN})
    # a failing run against an unreachable Qdrant server with an API key
    key = run_cli("migrate", env={"QDRANT_URL": f"http://127.0.0.1:{free_port()}", "QDRANT_API_KEY": SECRET_KEY})
    assert bad.returncode == 2 and key.returncode == 2
    assert ok.returncode == 0, ok.stderr[-3000:]
    files = [p for p in runbook_env["outputs"].rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in files) and any(p.suffix == ".png" for p in files)
    for path in files:
        data = path.read_bytes()
        assert SECRET_KEY.encode() not in data, path
        assert SECRET_TOKEN.encode() not in data, path
    for done in (ok, bad, key):
        assert SECRET_KEY not in done.stdout + done.stderr and SECRET_TOKEN not in done.stdout + done.stderr
    manifests = [json.loads(p.read_text()) for p in runbook_env["outputs"].glob("*/manifest.json")]
    full = [m for m in manifests if "monitor" in m["steps"]]
    assert len(full) == 1 and full[0]["settings"]["chroma_auth_token_set"] is True
    assert {s["status"] for s in full[0]["steps"].values()} == {"ok"}, full[0]["steps"]


# --- what the reader of an executed notebook sees ---------------------------------------------------
#: over qdrant-client local mode's 20,000-point threshold, so its "not recommended" UserWarning fires
BIG_RECORDS = 20_500


def make_big_db(path: Path, n: int = BIG_RECORDS) -> int:
    """One cosine collection of ``n`` small vectors: a migration that takes seconds, over local mode's limit."""
    import chromadb
    import numpy as np

    from conftest import _close

    client = chromadb.PersistentClient(path=str(path))
    col = client.create_collection("big_docs", embedding_function=None, metadata={"hnsw:space": "cosine"})
    rng = np.random.default_rng(7)
    for start in range(0, n, 5000):
        ids = range(start, min(n, start + 5000))
        col.add(
            ids=[f"big-{i}" for i in ids],
            embeddings=rng.normal(size=(len(ids), 8)).astype(np.float32).tolist(),
            metadatas=[{"i": i} for i in ids],
        )
    _close(client)
    return n


@pytest.fixture
def big_source(runbook_env: dict[str, Path]) -> int:
    return make_big_db(runbook_env["chroma"])


def _outputs(nb_path: Path) -> list[tuple[str, Any]]:
    """(kind, output) in reading order: "text" for stream/text output, "image" for a PNG, "error"."""
    import nbformat

    out: list[tuple[str, Any]] = []
    for cell in nbformat.read(nb_path, as_version=4).cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            kind = "image" if "image/png" in data else "error" if o["output_type"] == "error" else "text"
            out.append((kind, o))
    return out


def _text(o: Any) -> str:
    return o.get("text") or "".join(o.get("data", {}).get("text/plain", "")) or json.dumps(o.get("data", {}))


@pytest.mark.slow
@on_local_mode  # local mode's "not recommended" UserWarning is the library warning shown as one line
def test_the_verdict_comes_first_and_warnings_are_one_line(big_source: int, runbook_env: dict[str, Path]) -> None:
    for step in ("dry-run", "migrate", "verify"):
        extra = ("-p", "vector_check", "200", "-p", "sample_queries", "2") if step == "verify" else ()
        run_id = ("--run-id", _run_dir(runbook_env["outputs"]).name) if step != "dry-run" else ()
        done = run_cli(step, *run_id, *extra)
        assert done.returncode == 0, done.stderr[-3000:]
    run = _run_dir(runbook_env["outputs"])
    for stem in ("01_dry_run", "02_migrate", "03_verify"):
        verdict = json.loads((run / f"{stem}.json").read_text())["verdict"]
        outputs = _outputs(run / f"{stem}.ipynb")
        kinds = [k for k, _ in outputs]
        assert "image" in kinds, stem
        first_verdict = next(i for i, (_, o) in enumerate(outputs) if verdict in _text(o))
        assert first_verdict < kinds.index("image"), (stem, kinds)  # the verdict, then the charts
        images = [o for k, o in outputs if k == "image"]
        assert all(o["metadata"]["image/png"]["alt"] for o in images), stem  # alt text kept
        for _, o in outputs:  # library warnings: one readable line, never a UserWarning block with a path
            assert "UserWarning" not in _text(o) and "site-packages" not in _text(o), (stem, _text(o)[:500])
    texts = [_text(o) for _, o in _outputs(run / "02_migrate.ipynb")]
    local_mode = [t for t in texts if "Local mode is not recommended" in t]
    assert len(local_mode) == 1 and "Warning: Local mode is not recommended" in local_mode[0], texts
