"""Settings read with pydantic-settings (one sentence per bad variable, secrets that never render) and the
evidence folder's own guarantees (secret scrubbing in every written form, JSON conversion, atomic writes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runbook_lib.config.settings import load_settings
from runbook_lib.errors import ConfigError
from runbook_lib.state.run import Run, to_jsonable, write_json
from runbook_lib.state.scrub import REDACTED, scrub


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CHROMA_HOST": "h", "CHROMA_PORT": "eighty"}, "CHROMA_PORT"),
        ({"CHROMA_HOST": "h", "CHROMA_PORT": "70000"}, "CHROMA_PORT"),
        ({"CHROMA_HOST": "h", "CHROMA_SSL": "maybe"}, "CHROMA_SSL"),
        ({"QDRANT_TIMEOUT": "-3"}, "QDRANT_TIMEOUT"),
        ({"CHROMA_TIMEOUT": "soon"}, "CHROMA_TIMEOUT"),
        ({"QDRANT_PREFER_GRPC": "2"}, "QDRANT_PREFER_GRPC"),
    ],
)
def test_a_bad_variable_is_one_sentence_naming_it(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert message.startswith(variable) and "\n" not in message


def test_blank_variables_count_as_unset_and_switches_parse() -> None:
    s = load_settings({"CHROMA_HOST": " ", "QDRANT_URL": "", "QDRANT_PREFER_GRPC": "yes", "CHROMA_TIMEOUT": "2.5"})
    assert not s.chroma.is_server and not s.qdrant.is_server
    assert s.qdrant.prefer_grpc is True and s.chroma.timeout_s == 2.5


def test_secrets_never_render() -> None:
    s = load_settings(
        {
            "CHROMA_HOST": "localhost",
            "CHROMA_AUTH_TOKEN": "tok-123456",
            "QDRANT_URL": "https://q.example:6333",
            "QDRANT_API_KEY": "key-abcdef",
        }
    )
    rendered = [repr(s), str(s), str(s.model_dump()), s.model_dump_json(), json.dumps(s.public())]
    assert not any("tok-123456" in r or "key-abcdef" in r for r in rendered)
    assert sorted(s.secrets()) == ["key-abcdef", "tok-123456"]
    with pytest.raises(ConfigError) as info:
        load_settings({"QDRANT_URL": "ftp://nowhere", "QDRANT_API_KEY": "key-abcdef"})
    assert "key-abcdef" not in str(info.value)


def test_scrub_covers_escaped_forms_and_url_credentials() -> None:
    secret = 'p@ss"w<o>rd/&x'
    forms = [
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(json.dumps(secret)),
        "&quot;" + "p@ss&quot;w&lt;o&gt;rd/&amp;x",
    ]
    for form in forms:
        assert secret not in scrub(f"before {form} after", [secret])
        assert "w<o>rd" not in scrub(f"before {form} after", [secret]).replace(REDACTED, "")
    assert "hunter2" not in scrub("url https://admin:hunter2@db.example:8000/x", [])
    assert "user:pw" not in scrub('{"u": "http://user:pw@h/"}', [])


def test_jsonable_and_atomic_write(tmp_path: Path) -> None:
    data = {"f": np.float32(1.5), "i": np.int64(3), "a": np.arange(3), "nan": float("nan"), "p": tmp_path, 1: {2}}
    assert to_jsonable(data) == {"f": 1.5, "i": 3, "a": [0, 1, 2], "nan": None, "p": str(tmp_path), "1": [2]}
    target = tmp_path / "x.json"
    write_json(target, {"ok": True})
    assert json.loads(target.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"], "no temporary file left behind"


def test_manifest_updates_from_two_writers_are_not_lost(tmp_path: Path) -> None:
    import threading

    run = Run.create(tmp_path)
    threads = [threading.Thread(target=run.update_step, args=(f"step{i}",), kwargs={"status": "ok"}) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(run.manifest()["steps"]) == 20


def test_a_failed_step_files_its_exit_code(runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The exit code crosses the kernel boundary in the step's filed result: an error inside ``execute`` and one
    in ``begin`` under the runner (which holds the run for the kernel) both leave it there."""
    from runbook_lib.kernel.step import begin
    from runbook_lib.state.run import DRIVEN_RUN_ENV

    def refuse(step: object) -> None:
        raise ConfigError("Nothing to do: fix the parameters.")

    step = begin("verify")
    with pytest.raises(ConfigError):
        step.execute(refuse)
    filed = step.run.read_result("verify")
    assert filed is not None and filed["status"] == "failed" and filed["exit_code"] == 2
    monkeypatch.setenv(DRIVEN_RUN_ENV, str(step.run.dir.resolve()))
    with pytest.raises(ConfigError):
        begin("monitor", run_id=step.run.run_id, concurrency="0")
    filed = step.run.read_result("monitor")
    assert filed is not None and filed["exit_code"] == 2 and "concurrency" in filed["error"]


def test_every_step_declares_a_result_type_that_resolves() -> None:
    """The step table names each step's result as ``module:Class``: each resolves to a class with the result's
    shape (``ok``, ``verdict``, ``to_dict``), without ``config/`` importing ``steps/`` until asked."""
    from runbook_lib.config.steps import STEP_TABLE

    for spec in STEP_TABLE:
        result_type = spec.result_type()
        assert result_type.__name__ == spec.result.partition(":")[2], spec
        assert callable(getattr(result_type, "to_dict", None)) and hasattr(result_type, "verdict"), spec
