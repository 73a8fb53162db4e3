"""JupyterLab in a real browser: the dry-run notebook run top to bottom the way a person does it.

A real ``jupyter lab`` server (token-less, loopback, a free port, its own Jupyter dirs and a kernelspec for this
interpreter) serves a copy of ``notebooks/``; Debian's chromium, driven by Playwright's Python package, opens
``01_dry_run.ipynb`` and clicks Run → Run All Cells. The test reads what the page shows: the verdict, the inline
chart, no error output; then, with ``CHROMA_PERSIST_DIR`` pointing at a missing folder, the one-sentence error.

Nothing is installed here: ``make test`` (as root, e.g. in CI) installs Debian's ``chromium`` when it is missing.
``RUNBOOK_SKIP_BROWSER=1`` skips these tests; without chromium they skip with a reason, unless
``RUNBOOK_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import free_port, make_small_db

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "outputs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
#: The flags this machine's chromium needs (closed network, no GPU, running as root, no first-run UI).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOTEBOOK = "01_dry_run.ipynb"
#: JupyterLab user settings for a quiet, deterministic page: no autosave, every cell in the DOM, no news.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _browser_or_skip() -> str:
    """Chromium's path; skip (or fail when RUNBOOK_REQUIRE_BROWSER is set) when the browser stack is missing."""
    if os.environ.get("RUNBOOK_SKIP_BROWSER", "").strip().lower() in {"1", "true", "yes"}:
        pytest.skip("RUNBOOK_SKIP_BROWSER is set")
    missing = []
    exe = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if exe is None:
        missing.append("Debian's chromium (`apt-get install chromium`; `make test` does it as root)")
    for module, extra in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the {extra} package (`pip install -e '.[test]'`)")
    if missing:
        reason = "the browser test needs " + " and ".join(missing)
        if os.environ.get("RUNBOOK_REQUIRE_BROWSER", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(reason + " (RUNBOOK_REQUIRE_BROWSER is set)")
        pytest.skip(reason)
    assert exe is not None
    return exe


@contextmanager
def jupyter_lab(tmp: Path, env_overrides: dict[str, str]) -> Iterator[str]:
    """A token-less ``jupyter lab`` on a free loopback port serving a copy of ``notebooks/``; yields its URL."""
    root = tmp / "notebooks"
    shutil.copytree(ROOT / "notebooks", root)
    data, config, runtime, settings = (tmp / d for d in ("jdata", "jconfig", "jruntime", "lab-user-settings"))
    kernel_dir = data / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (runbook test)",
                "language": "python",
            }
        )
    )
    for rel, values in LAB_SETTINGS.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = free_port()
    env = {
        **os.environ,
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-workspaces"),
        "IPYTHONDIR": str(tmp / "ipython"),
        "JUPYTER_PREFER_ENV_PATH": "0",  # our kernelspec (JUPYTER_DATA_DIR) before the venv's own
        "RUNBOOK_PROGRESS": "off",
        "ANONYMIZED_TELEMETRY": "False",
        **env_overrides,
    }
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend, as for a person
    log_path = tmp / "jupyter.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                *(["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--ServerApp.root_dir={root}",
                "--IdentityProvider.token=",
                "--ServerApp.password=",
                "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{url}/api/status", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def run_all_cells(exe: str, url: str, tmp: Path, shot: Path) -> dict[str, Any]:
    """Open the dry-run notebook, Run → Run All Cells, wait until every cell has finished; what the page shows."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"),
            executable_path=exe,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1600},
        )
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{url}/lab/tree/{NOTEBOOK}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell")
            _wait_for_kernel(page, url)
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
            # Wait for the run to start, then for it to end: no "[*]" prompt left and the kernel idle again.
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))",
                timeout=60_000,
            )
            page.wait_for_function(
                "() => ![...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                ".some(p => p.textContent.includes('*')) && "
                "document.querySelector(\".jp-Notebook-ExecutionIndicator[data-status='idle']\") !== null",
                timeout=300_000,
            )
            page.wait_for_timeout(500)  # let the last outputs render
            prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
            outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            images = page.locator(".jp-OutputArea-output img")
            loaded = [
                img.evaluate("i => i.complete && i.naturalWidth > 0") for img in images.all()
            ]  # decoded, not a broken image
            if images.count():
                images.first.scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
            return {
                "code_cells": page.locator(".jp-Notebook .jp-CodeCell").count(),
                "prompts": prompts,
                "outputs": outputs,
                "errors": errors.all_inner_texts(),
                "images": loaded,
                "image_alts": [img.get_attribute("alt") or "" for img in images.all()],
            }
        except Exception:
            page.screenshot(path=str(shot.with_suffix(".failed.png")))
            raise
        finally:
            context.close()


def _wait_for_kernel(page: Any, url: str, timeout_s: float = 120.0) -> None:
    """Until the notebook's kernel is started and idle (the server's sessions API says so); accept JupyterLab's
    "Select Kernel" dialog if it asks (it offers the notebook's own kernel, python3)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        accept = page.locator(".jp-Dialog .jp-mod-accept")
        if accept.count() and accept.first.is_visible():
            accept.first.click()
        sessions = httpx.get(f"{url}/api/sessions", timeout=5).json()
        states = [s["kernel"]["execution_state"] for s in sessions if s["path"].endswith(NOTEBOOK) and s.get("kernel")]
        if states == ["idle"]:
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            return
        page.wait_for_timeout(300)
    pytest.fail(f"the kernel of {NOTEBOOK} did not start within {timeout_s:g} s")


def _keep_screenshot(shot: Path, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    kept = SCREENSHOTS / name
    shutil.copyfile(shot, kept)
    print(f"screenshot: {kept} (and {shot})")
    return kept


def test_dry_run_notebook_runs_in_jupyterlab(tmp_path: Path, runbook_env: dict[str, Path]) -> None:
    exe = _browser_or_skip()
    make_small_db(runbook_env["chroma"])
    paths = {k: str(v) for k, v in runbook_env.items()}
    env = {
        "CHROMA_PERSIST_DIR": paths["chroma"],
        "QDRANT_EDGE_PATH": paths["qdrant"],
        "RUNBOOK_OUTPUTS": paths["outputs"],
    }
    shot = tmp_path / "jupyterlab_dry_run.png"
    with jupyter_lab(tmp_path, env) as url:
        seen = run_all_cells(exe, url, tmp_path, shot)

    assert shot.stat().st_size > 10_000
    _keep_screenshot(shot, "jupyterlab_dry_run.png")
    # Every code cell ran, in order, and none failed.
    numbers = [p.strip() for p in seen["prompts"]]
    code_cells = [
        c for c in json.loads((ROOT / "notebooks" / NOTEBOOK).read_text())["cells"] if c["cell_type"] == "code"
    ]
    assert len(numbers) == seen["code_cells"] == len(code_cells) >= 4
    assert all(p.startswith("[") and p[1:-2].isdigit() for p in numbers), numbers
    assert seen["errors"] == [], seen["errors"]
    text = "\n".join(seen["outputs"])
    assert "Traceback" not in text and "Error" not in text.replace("No warnings", ""), text[-2000:]
    # The verdict the page shows is the one the step filed.
    results = list(runbook_env["outputs"].glob("*/01_dry_run.json"))
    assert len(results) == 1, results
    verdict = json.loads(results[0].read_text())["verdict"]
    assert "4 collections, 1,120 records to migrate" in verdict
    assert verdict in text
    # The inline chart: a decoded <img> in the output area.
    assert seen["images"], (
        "no inline chart in the output area: the notebook must show the step's charts "
        "(Step.save_figure while not executing, or a `step.show_figures()` cell after the verdict)"
    )
    assert all(seen["images"]), "an <img> in the output area did not decode"
    # The committed notebooks were not touched (the server saw a copy; autosave is off anyway).
    assert not (ROOT / "notebooks" / ".ipynb_checkpoints").exists()


def test_bad_setting_shows_one_sentence_in_jupyterlab(tmp_path: Path, runbook_env: dict[str, Path]) -> None:
    exe = _browser_or_skip()
    missing = tmp_path / "no_such_chroma_dir"
    env = {
        "CHROMA_PERSIST_DIR": str(missing),
        "QDRANT_EDGE_PATH": str(runbook_env["qdrant"]),
        "RUNBOOK_OUTPUTS": str(runbook_env["outputs"]),
    }
    shot = tmp_path / "jupyterlab_dry_run_bad_setting.png"
    with jupyter_lab(tmp_path, env) as url:
        seen = run_all_cells(exe, url, tmp_path, shot)

    _keep_screenshot(shot, "jupyterlab_dry_run_bad_setting.png")
    assert len(seen["errors"]) == 1, seen["errors"]
    error = seen["errors"][0].strip()
    assert error.startswith(f"ConfigError: CHROMA_PERSIST_DIR points to {missing}, which does not exist"), error
    assert "Traceback" not in error and len(error.splitlines()) <= 2, error
    # Run All stops at the failing cell: the cells after it never ran.
    prompts = [p.strip() for p in seen["prompts"]]
    assert prompts[-1] == "[ ]:", prompts
    assert not seen["images"]
    assert not missing.exists(), "a bad setting creates nothing"
