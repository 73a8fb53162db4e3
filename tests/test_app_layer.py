"""The app layer installs and works on its own: chromadb and qdrant-client, none of the runbook's packages.

A fresh virtual environment gets the project installed without extras (``pip install <project>``), then
its own interpreter imports :mod:`runbook_lib.app` and searches, through :class:`VectorDBClient`, both a
Qdrant Edge folder (the engine) the small sample collections were copied into (``VECTOR_DB=qdrant``) and the
ChromaDB directory they came from (``VECTOR_DB=chroma``). The data and the expected answers are built here,
in the test environment: Chroma's own answer to each query, and the exact nearest neighbours for Qdrant
(the shards are never optimized, so Edge searches its plain segment exhaustively).

The project is copied to a temporary folder and installed from there: building in the working tree would
leave ``build/`` and ``*.egg-info`` in it, and a stale ``build/lib`` can put deleted modules in the wheel.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest

from runbook_lib.core.mapping import build_payload, chroma_distances, point_id, qdrant_distance

from conftest import make_small_db, open_qdrant

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

#: Runbook-layer packages a production app must not get from installing the project.
NOT_INSTALLED = ("papermill", "nbconvert", "pandas", "matplotlib")
#: Modules ``import runbook_lib.app`` must not load (some come with chromadb, so only importing is checked).
NOT_IMPORTED = (
    "papermill",
    "nbconvert",
    "nbformat",
    "pandas",
    "matplotlib",
    "tqdm",
    "IPython",
    "ipykernel",
    "yaml",
    "psutil",
    "filelock",
)
#: The sample collections copied to Qdrant (one per distance space); empty_docs stays in Chroma only.
MIGRATED = ("alpha_docs", "beta_docs", "gamma_docs")
LIMIT = 5
WHERE = {"tag": "t1"}
INSTALL_TIMEOUT_S = 600
#: Variables that would point the fresh interpreter somewhere else than the folders built here.
_SCRUBBED = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "VIRTUAL_ENV",
    "CHROMA_HOST",
    "CHROMA_PORT",
    "CHROMA_SSL",
    "CHROMA_TENANT",
    "CHROMA_DATABASE",
    "CHROMA_AUTH_TOKEN",
    "CHROMA_API_KEY",
    "QDRANT_URL",
    "QDRANT_API_KEY",
    "QDRANT_EDGE_PATH",
    "QDRANT_PATH",
    "VECTOR_DB",
)
#: Not copied: at the top of the project, what is not source; anywhere, caches and build leftovers.
_TOP_LEVEL_SKIP = {".git", ".venv", "venv", "build", "dist", "outputs", "data"}
_ANYWHERE_SKIP = shutil.ignore_patterns(
    "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints"
)


def _copy_ignore(directory: str, names: list[str]) -> set[str]:
    skipped = set(_ANYWHERE_SKIP(directory, names))
    if Path(directory).resolve() == ROOT:
        skipped |= _TOP_LEVEL_SKIP.intersection(names)
    return skipped


#: Runs in the fresh environment: argv[1] the queries (JSON), argv[2] where to write the answers.
APP_SCRIPT = textwrap.dedent(
    """
    import dataclasses
    import json
    import sys
    from pathlib import Path

    spec = json.loads(Path(sys.argv[1]).read_text())
    import runbook_lib.app

    loaded = [name for name in spec["not_imported"] if name in sys.modules]
    from runbook_lib.app import SearchResult, VectorDBClient

    out = {"loaded_by_import": loaded, "app_file": runbook_lib.app.__file__, "results": []}
    with VectorDBClient() as db:  # configured by the environment, as an app is
        out["backend"] = db.backend
        out["health"] = db.health()
        for query in spec["queries"]:
            result = db.search(query["collection"], query["vector"], limit=query["limit"], where=query["where"])
            assert isinstance(result, SearchResult), type(result)
            out["results"].append(dataclasses.asdict(result))
    Path(sys.argv[2]).write_text(json.dumps(out))
    """
)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["ANONYMIZED_TELEMETRY"] = "False"
    return {**env, **extra}


def _run(
    args: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env or _clean_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _tail(proc: subprocess.CompletedProcess[str], n: int = 3000) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-n:]}\n--- stderr\n{proc.stderr[-n:]}"


def _close_chroma(client: Any) -> None:
    client.close()
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


# --- the fresh environment -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv (same interpreter as the tests) with the project installed from a copy, without extras."""
    root = tmp_path_factory.mktemp("app_venv")
    venv, source = root / "venv", root / "project"
    made = _run([sys.executable, "-m", "venv", str(venv)], cwd=root, timeout=300)
    assert made.returncode == 0, _tail(made)
    python = venv / "bin" / "python"

    # Skip only when pip cannot reach a package index (or its find-links): nothing else is a reason to skip.
    probe = _run(
        [str(python), "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "qdrant-client"],
        cwd=root,
        timeout=300,
    )
    if probe.returncode != 0:
        pytest.skip(f"pip cannot reach a package index from this machine: {probe.stderr.strip()[-500:]}")

    shutil.copytree(ROOT, source, ignore=_copy_ignore)
    # The same chromadb and qdrant-client as the test environment (which wrote the data): pip's cache has them,
    # and a newer release's on-disk format cannot fail this test.
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in ("chromadb", "qdrant-client")]
    try:
        installed = _run(
            [str(python), "-m", "pip", "install", "--quiet", str(source), *pins], cwd=root, timeout=INSTALL_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`pip install {source}` took longer than {INSTALL_TIMEOUT_S} s")
    assert installed.returncode == 0, f"`pip install` of the project without extras failed:\n{_tail(installed)}"
    return python


# --- the data, built with the test environment -----------------------------------------------------
@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The small ChromaDB sample, its non-empty collections copied into Qdrant local mode, and queries."""
    root = tmp_path_factory.mktemp("app_data")
    chroma_dir, qdrant_dir = root / "chroma", root / "qdrant"
    spec = make_small_db(chroma_dir)

    client = chromadb.PersistentClient(path=str(chroma_dir))
    records: dict[str, dict[str, Any]] = {}
    try:
        for name in MIGRATED:
            got = client.get_collection(name).get(include=["embeddings", "documents", "metadatas", "uris"])
            records[name] = {
                "ids": list(got["ids"]),
                "vectors": np.asarray(got["embeddings"], dtype=np.float32),
                "documents": list(got["documents"]),
                "metadatas": [dict(m) if m else {} for m in got["metadatas"]],
                "uris": list(got["uris"]),
            }
    finally:
        _close_chroma(client)

    with open_qdrant(qdrant_dir) as qdrant:  # Qdrant Edge, the engine
        for name in MIGRATED:
            rec, space = records[name], spec[name]["space"]
            qdrant.create_collection(name, size=rec["vectors"].shape[1], distance=qdrant_distance(space))
            qdrant.upsert(
                name,
                [point_id(cid) for cid in rec["ids"]],
                rec["vectors"],
                [
                    build_payload(cid, rec["documents"][k], rec["metadatas"][k], rec["uris"][k])
                    for k, cid in enumerate(rec["ids"])
                ],
            )

    rng = np.random.default_rng(11)
    queries: list[dict[str, Any]] = []
    for name in MIGRATED:
        vectors = records[name]["vectors"]
        for vector in (vectors[3], rng.normal(size=vectors.shape[1]).astype(np.float32)):
            for where in (None, WHERE):
                queries.append({"collection": name, "vector": vector.tolist(), "limit": LIMIT, "where": where})
    return {
        "chroma": chroma_dir,
        "qdrant": qdrant_dir,
        "outputs": root / "outputs",
        "spec": spec,
        "records": records,
        "queries": queries,
    }


def _chroma_answers(chroma_dir: Path, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What chromadb itself answers (first query's rows), with missing metadata as ``{}``."""
    client = chromadb.PersistentClient(path=str(chroma_dir))
    answers = []
    try:
        for q in queries:
            got = client.get_collection(q["collection"]).query(
                query_embeddings=[q["vector"]],
                n_results=q["limit"],
                where=q["where"],
                include=["documents", "metadatas", "distances", "uris"],
            )
            answers.append(
                {
                    "ids": list(got["ids"][0]),
                    "documents": list(got["documents"][0]),
                    "metadatas": [dict(m) if m else {} for m in got["metadatas"][0]],
                    "distances": [float(d) for d in got["distances"][0]],
                    "uris": list(got["uris"][0]),
                }
            )
    finally:
        _close_chroma(client)
    return answers


def _exact_answers(stores: dict[str, Any], queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The exact nearest neighbours (in Chroma's distances) among the records matching the filter."""
    answers = []
    for q in queries:
        rec = stores["records"][q["collection"]]
        keep = np.array([q["where"] is None or m.get("tag") == q["where"]["tag"] for m in rec["metadatas"]])
        distances = chroma_distances(np.asarray(q["vector"]), rec["vectors"], stores["spec"][q["collection"]]["space"])
        candidates = np.flatnonzero(keep)
        order = candidates[np.argsort(distances[candidates], kind="stable")][: q["limit"]]
        answers.append(
            {
                "ids": [rec["ids"][k] for k in order],
                "documents": [rec["documents"][k] for k in order],
                "metadatas": [rec["metadatas"][k] for k in order],
                "distances": [float(distances[k]) for k in order],
                "uris": [rec["uris"][k] for k in order],
            }
        )
    return answers


def _search_in_app_env(python: Path, stores: dict[str, Any], backend: str, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    script, spec_file, out_file = work / "app.py", work / "queries.json", work / "answers.json"
    script.write_text(APP_SCRIPT)
    spec_file.write_text(json.dumps({"queries": stores["queries"], "not_imported": list(NOT_IMPORTED)}))
    env = _clean_env(
        VECTOR_DB=backend,
        CHROMA_PERSIST_DIR=str(stores["chroma"]),
        QDRANT_EDGE_PATH=str(stores["qdrant"]),
        RUNBOOK_OUTPUTS=str(stores["outputs"]),
    )
    proc = _run([str(python), str(script), str(spec_file), str(out_file)], cwd=work, timeout=300, env=env)
    assert proc.returncode == 0, f"the app script failed with VECTOR_DB={backend}:\n{_tail(proc)}"
    return json.loads(out_file.read_text())


def _assert_same(got: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    assert got["ids"] == expected["ids"], what
    assert got["documents"] == expected["documents"], what
    assert got["metadatas"] == expected["metadatas"], what
    assert got["uris"] == expected["uris"], what
    np.testing.assert_allclose(got["distances"], expected["distances"], atol=1e-4, rtol=0, err_msg=what)


# --- the test --------------------------------------------------------------------------------------
def test_app_layer_installs_and_searches_without_the_runbook_packages(
    app_python: Path, stores: dict[str, Any], tmp_path: Path
) -> None:
    probe = _run(
        [
            str(app_python),
            "-c",
            "import importlib.util, json, sys; "
            "print(json.dumps([n for n in sys.argv[1:] if importlib.util.find_spec(n) is not None]))",
            *NOT_INSTALLED,
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert probe.returncode == 0, _tail(probe)
    importable = json.loads(probe.stdout)
    assert importable == [], (
        f"installing the project without extras also installed {importable}: "
        "they belong in the `runbook` extra, not in [project].dependencies"
    )

    expected = {"chroma": _chroma_answers(stores["chroma"], stores["queries"])}
    expected["qdrant"] = _exact_answers(stores, stores["queries"])
    for backend, collections in (("qdrant", len(MIGRATED)), ("chroma", len(stores["spec"]))):
        out = _search_in_app_env(app_python, stores, backend, tmp_path / backend)
        assert out["loaded_by_import"] == [], f"`import runbook_lib.app` loaded {out['loaded_by_import']}"
        assert not Path(out["app_file"]).resolve().is_relative_to(ROOT), out["app_file"]  # the installed copy
        assert out["backend"] == backend
        assert out["health"]["reachable"] is True and out["health"]["collections"] == collections, out["health"]
        assert len(out["results"]) == len(stores["queries"])
        for query, got, want in zip(stores["queries"], out["results"], expected[backend], strict=True):
            what = f"VECTOR_DB={backend} {query['collection']} where={query['where']}"
            assert len(got["ids"]) == LIMIT, what
            _assert_same(got, want, what)
            if query["where"] is not None:
                assert all(m.get("tag") == WHERE["tag"] for m in got["metadatas"]), what
        # a record's own vector finds that record first, at distance ~0 for l2 and cosine
        first = out["results"][0]
        alpha = stores["records"]["alpha_docs"]
        assert first["ids"][0] == alpha["ids"][3]
        assert first["documents"][0] == alpha["documents"][3]
        assert first["distances"][0] == pytest.approx(0.0, abs=1e-4)

    # the `runbook` command is installed too, and says in one sentence which extra it needs
    runbook = _run([str(app_python.parent / "runbook"), "runs"], cwd=tmp_path, timeout=120)
    assert runbook.returncode == 2, _tail(runbook)
    assert "pip install 'runbook-lib[runbook]'" in runbook.stderr and "Traceback" not in runbook.stderr
