"""Pointing the app back at ChromaDB: the non-secret settings of ``outputs/<run_id>/rollback.env``
(``VECTOR_DB=chroma`` and where ChromaDB is; never a secret) and the text of that file.
"""

from __future__ import annotations

import shlex

from runbook_lib.config.settings import Settings
from runbook_lib.state.run import utc_now

#: The file, in the run folder, with the settings that point the app back at ChromaDB.
ENV_FILE = "rollback.env"
#: The variable the app wrapper (:mod:`runbook_lib.app.client`) reads to choose its backend.
VECTOR_DB_VARIABLE = "VECTOR_DB"


def chroma_env(settings: Settings) -> dict[str, str]:
    """The non-secret settings that point the app (``vector_db.py``) back at ChromaDB."""
    chroma = settings.chroma
    env = {VECTOR_DB_VARIABLE: "chroma"}
    if chroma.is_server:
        env.update(CHROMA_HOST=str(chroma.host), CHROMA_PORT=str(chroma.port), CHROMA_SSL=str(chroma.ssl).lower())
    else:
        env["CHROMA_PERSIST_DIR"] = str(chroma.persist_dir)
    if chroma.tenant:
        env["CHROMA_TENANT"] = chroma.tenant
    if chroma.database:
        env["CHROMA_DATABASE"] = chroma.database
    return env


def render_env(env: dict[str, str], run_id: str) -> str:
    lines = [
        f"# Written by `runbook rollback` for run {run_id} at {utc_now()}: point the app back at ChromaDB.",
        "# Load it before starting the app, e.g. `set -a; . ./rollback.env; set +a`.",
    ]
    if "CHROMA_HOST" in env:
        lines.append(
            "# CHROMA_AUTH_TOKEN (if the server needs one) stays in your environment; it is never written here."
        )
    lines += [f"{k}={shlex.quote(v)}" for k, v in env.items()]
    return "\n".join(lines) + "\n"
