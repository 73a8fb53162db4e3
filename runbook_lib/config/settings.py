"""Settings from the environment (SPEC "Configuration"), validated up front.

Secrets (``QDRANT_API_KEY``, ``CHROMA_AUTH_TOKEN``) are read here and nowhere else; they live in
fields excluded from ``repr`` and from :meth:`Settings.public`, which is what gets written to the
evidence folder.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from runbook_lib.config.paths import resolve
from runbook_lib.errors import ConfigError

SECRET_VARIABLES = ("QDRANT_API_KEY", "CHROMA_AUTH_TOKEN")

DEFAULT_CHROMA_PERSIST_DIR = "data/chroma_db"
DEFAULT_QDRANT_PATH = "data/qdrant"
DEFAULT_OUTPUTS = "outputs"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: set it to true or false.")


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number: set it to a number of seconds, e.g. 30.") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than zero.")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number: set it to an integer such as 8000.") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name}={raw!r} is out of range: a port is between 1 and 65535.")
    return port


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ChromaSettings:
    """Where the ChromaDB source is: a persistent directory, or a Chroma server."""

    persist_dir: Path
    host: str | None = None
    port: int = 8000
    ssl: bool = False
    tenant: str | None = None
    database: str | None = None
    timeout_s: float = 60.0
    auth_token: str | None = field(default=None, repr=False)

    @property
    def is_server(self) -> bool:
        return self.host is not None

    def describe(self) -> str:
        if self.is_server:
            scheme = "https" if self.ssl else "http"
            return f"Chroma server {scheme}://{self.host}:{self.port}"
        return f"ChromaDB directory {self.persist_dir}"

    def require_persist_dir(self) -> Path:
        """The persistent directory, checked to exist and look like a ChromaDB directory."""
        d = self.persist_dir
        if not d.exists():
            raise ConfigError(
                f"CHROMA_PERSIST_DIR points to {d}, which does not exist: set CHROMA_PERSIST_DIR to your "
                "ChromaDB directory, or create the sample with `runbook sample-data`."
            )
        if not d.is_dir():
            raise ConfigError(f"CHROMA_PERSIST_DIR points to {d}, which is a file, not a ChromaDB directory.")
        if not (d / "chroma.sqlite3").is_file():
            raise ConfigError(
                f"CHROMA_PERSIST_DIR points to {d}, which has no chroma.sqlite3: it is not a ChromaDB "
                "persistent directory; point CHROMA_PERSIST_DIR at the folder your app passes to "
                "chromadb.PersistentClient(path=...)."
            )
        return d


@dataclass(frozen=True)
class QdrantSettings:
    """Where the Qdrant target is: a server (URL) or qdrant-client's embedded local mode (path)."""

    path: Path
    url: str | None = None
    prefer_grpc: bool = False
    timeout_s: float = 60.0
    allow_insecure_api_key: bool = False
    api_key: str | None = field(default=None, repr=False)

    @property
    def is_server(self) -> bool:
        return self.url is not None

    def describe(self) -> str:
        if self.is_server:
            return f"Qdrant server {self.url}" + (" (API key set)" if self.api_key else "")
        return f"Qdrant embedded local mode at {self.path}"


@dataclass(frozen=True)
class Settings:
    chroma: ChromaSettings
    qdrant: QdrantSettings
    outputs: Path

    def public(self) -> dict[str, object]:
        """Everything but the secrets, for the manifest and the notebooks."""
        return {
            "source": self.chroma.describe(),
            "chroma_persist_dir": None if self.chroma.is_server else str(self.chroma.persist_dir),
            "chroma_host": self.chroma.host,
            "chroma_port": self.chroma.port if self.chroma.is_server else None,
            "chroma_ssl": self.chroma.ssl if self.chroma.is_server else None,
            "chroma_tenant": self.chroma.tenant,
            "chroma_database": self.chroma.database,
            "chroma_auth_token_set": self.chroma.auth_token is not None,
            "target": self.qdrant.describe(),
            "qdrant_url": self.qdrant.url,
            "qdrant_path": None if self.qdrant.is_server else str(self.qdrant.path),
            "qdrant_api_key_set": self.qdrant.api_key is not None,
            "qdrant_prefer_grpc": self.qdrant.prefer_grpc,
            "outputs": str(self.outputs),
        }

    def secrets(self) -> list[str]:
        """The secret values in force (to scrub from anything written under outputs/)."""
        return [s for s in (self.chroma.auth_token, self.qdrant.api_key) if s]


def _validate_qdrant_url(url: str, api_key: str | None, allow_insecure: bool) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            f"QDRANT_URL={url!r} is not a URL: set it like https://xyz.cloud.qdrant.io:6333 or "
            "http://localhost:6333, or unset it to use the embedded local mode at QDRANT_PATH."
        )
    try:
        _ = parsed.port
    except ValueError:
        raise ConfigError(f"QDRANT_URL={url!r} has an invalid port.") from None
    if api_key and parsed.scheme == "http" and not is_loopback(parsed.hostname) and not allow_insecure:
        raise ConfigError(
            f"Refusing to send QDRANT_API_KEY over plain http:// to {parsed.hostname}: use an https:// "
            "QDRANT_URL, or set RUNBOOK_ALLOW_INSECURE_API_KEY=true if this network is trusted."
        )
    return url.rstrip("/")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise :class:`ConfigError` naming the first bad variable."""
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        raw = env.get(name)
        return raw.strip() if raw is not None and raw.strip() != "" else None

    host = get("CHROMA_HOST")
    if host is None:
        for dependent in ("CHROMA_PORT", "CHROMA_SSL"):
            if get(dependent) is not None:
                raise ConfigError(
                    f"{dependent} is set but CHROMA_HOST is not: set CHROMA_HOST to use a Chroma server, "
                    f"or unset {dependent} to read the directory in CHROMA_PERSIST_DIR."
                )
    chroma = ChromaSettings(
        persist_dir=resolve(get("CHROMA_PERSIST_DIR") or DEFAULT_CHROMA_PERSIST_DIR),
        host=host,
        port=_port(env, "CHROMA_PORT", 8000),
        ssl=_bool(env, "CHROMA_SSL"),
        tenant=get("CHROMA_TENANT"),
        database=get("CHROMA_DATABASE"),
        timeout_s=_positive_float(env, "CHROMA_TIMEOUT", 60.0),
        auth_token=get("CHROMA_AUTH_TOKEN"),
    )

    api_key = get("QDRANT_API_KEY")
    url = get("QDRANT_URL")
    allow_insecure = _bool(env, "RUNBOOK_ALLOW_INSECURE_API_KEY")
    if url is not None:
        url = _validate_qdrant_url(url, api_key, allow_insecure)
    elif api_key is not None:
        raise ConfigError(
            "QDRANT_API_KEY is set but QDRANT_URL is not: set QDRANT_URL to your Qdrant server, or unset "
            "QDRANT_API_KEY to use the embedded local mode."
        )
    qdrant_path = resolve(get("QDRANT_PATH") or DEFAULT_QDRANT_PATH)
    if url is None and qdrant_path.exists() and not qdrant_path.is_dir():
        raise ConfigError(f"QDRANT_PATH points to {qdrant_path}, which is a file: point it at a directory.")
    qdrant = QdrantSettings(
        path=qdrant_path,
        url=url,
        prefer_grpc=_bool(env, "QDRANT_PREFER_GRPC"),
        timeout_s=_positive_float(env, "QDRANT_TIMEOUT", 60.0),
        allow_insecure_api_key=allow_insecure,
        api_key=api_key,
    )
    outputs = resolve(get("RUNBOOK_OUTPUTS") or DEFAULT_OUTPUTS)
    if outputs.exists() and not outputs.is_dir():
        raise ConfigError(f"RUNBOOK_OUTPUTS points to {outputs}, which is a file: point it at a directory.")
    return Settings(chroma=chroma, qdrant=qdrant, outputs=outputs)
