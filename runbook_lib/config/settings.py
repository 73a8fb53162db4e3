"""Settings from the environment (SPEC "Configuration"), validated up front with pydantic-settings.

Secrets (``QDRANT_API_KEY``, ``CHROMA_AUTH_TOKEN``, ``CHROMA_API_KEY``) are read here and nowhere else, and are held as
``SecretStr``: they never render in a repr, a log line, a notebook output or :meth:`Settings.public` (what gets
written to the evidence folder); the one place that sends them calls ``get_secret_value()``.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runbook_lib.config.paths import resolve
from runbook_lib.errors import ConfigError

#: The variables that hold secrets: never shown in an error, scrubbed from every file under outputs/.
SECRET_VARIABLES = ("QDRANT_API_KEY", "CHROMA_AUTH_TOKEN", "CHROMA_API_KEY")

#: Chroma Cloud's address (chromadb's ``CloudClient`` defaults); ``CHROMA_HOST``/``CHROMA_PORT``/``CHROMA_SSL`` may
#: point a Cloud source elsewhere (a proxy, the tests' loopback stand-in of Cloud's quotas).
CHROMA_CLOUD_HOST = "api.trychroma.com"
CHROMA_CLOUD_PORT = 443

DEFAULT_CHROMA_PERSIST_DIR = "data/chroma_db"
#: The target when none of QDRANT_URL, QDRANT_EDGE_PATH, QDRANT_PATH is set: Qdrant Edge (the engine in-process).
DEFAULT_QDRANT_EDGE_PATH = "data/qdrant_edge"
DEFAULT_OUTPUTS = "outputs"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

Seconds = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(gt=0, lt=65536)]

#: What kind of Qdrant the target is: a server (also Cloud, a cluster), Qdrant Edge, or qdrant-client's local mode.
TargetKind = Literal["server", "edge", "local"]

#: How to fix a variable of each kind, appended to pydantic's complaint.
_HINTS = {
    "bool": "set it to true or false",
    "seconds": "set it to a number of seconds greater than zero, e.g. 30",
    "port": "set it to a port number between 1 and 65535, such as 8000",
}
#: What a variable of each kind must be, for the sentence.
_WHAT = {"bool": "a boolean", "seconds": "a number of seconds greater than zero", "port": "a port number"}
_KINDS = {
    "CHROMA_SSL": "bool",
    "QDRANT_PREFER_GRPC": "bool",
    "RUNBOOK_ALLOW_INSECURE_API_KEY": "bool",
    "CHROMA_TIMEOUT": "seconds",
    "QDRANT_TIMEOUT": "seconds",
    "CHROMA_PORT": "port",
}


class Environment(BaseSettings):
    """The variables, by their own names, as pydantic-settings reads them (blank counts as unset)."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", env_ignore_empty=True)

    CHROMA_PERSIST_DIR: str = DEFAULT_CHROMA_PERSIST_DIR
    CHROMA_HOST: str | None = None
    CHROMA_PORT: Port | None = None
    CHROMA_SSL: bool | None = None
    CHROMA_TENANT: str | None = None
    CHROMA_DATABASE: str | None = None
    CHROMA_TIMEOUT: Seconds = 60.0
    CHROMA_AUTH_TOKEN: SecretStr | None = None
    CHROMA_API_KEY: SecretStr | None = None
    QDRANT_URL: str | None = None
    QDRANT_API_KEY: SecretStr | None = None
    QDRANT_EDGE_PATH: str | None = None
    QDRANT_PATH: str | None = None
    QDRANT_PREFER_GRPC: bool = False
    QDRANT_TIMEOUT: Seconds = 60.0
    RUNBOOK_ALLOW_INSECURE_API_KEY: bool = False
    RUNBOOK_OUTPUTS: str = DEFAULT_OUTPUTS
    RUNBOOK_SCRATCH_DIR: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            return None if value == "" else value
        return value

    @field_validator("CHROMA_SSL", "QDRANT_PREFER_GRPC", "RUNBOOK_ALLOW_INSECURE_API_KEY", mode="before")
    @classmethod
    def _bool(cls, value: object) -> object:
        if isinstance(value, str):  # only the spellings people use for a switch, nothing pydantic would guess at
            low = value.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("not a boolean")
        return value


def read_environment(env: Mapping[str, str] | None = None) -> Environment:
    """The variables from ``env`` (default: the process environment); one sentence naming a bad one."""
    source = os.environ if env is None else env
    names = set(Environment.model_fields)
    values = {k: v for k, v in source.items() if k in names and v.strip() != ""}
    try:
        return Environment.model_validate(values) if env is not None else Environment()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        raw = source.get(name, "")
        shown = "(hidden)" if name in SECRET_VARIABLES else repr(raw)
        kind = _KINDS.get(name, "")
        what = _WHAT.get(kind, "valid")
        hint = _HINTS.get(kind, "check its value")
        raise ConfigError(f"{name}={shown} is not {what} ({err['msg'].lower()}): {hint}.") from None


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ChromaSettings(BaseModel):
    """Where the ChromaDB source is: a persistent directory, a Chroma server, or Chroma Cloud (``api_key`` set;
    ``host``/``port``/``ssl`` are then Cloud's address, or the one ``CHROMA_HOST`` gave)."""

    model_config = ConfigDict(frozen=True)

    persist_dir: Path
    host: str | None = None
    port: int = 8000
    ssl: bool = False
    tenant: str | None = None
    database: str | None = None
    timeout_s: float = 60.0
    auth_token: SecretStr | None = None
    #: Chroma Cloud's API key (``CHROMA_API_KEY``): the source is Chroma Cloud, read within its quotas.
    api_key: SecretStr | None = None
    #: Reads in flight per collection on Chroma Cloud (its quota is 10); the steps' ``read_concurrency`` parameter.
    read_concurrency: int = Field(4, ge=1, le=10)
    #: Several databases of the tenant as one source (the steps' ``databases`` parameter: names, or ``("all",)``);
    #: None: the one database ``CHROMA_DATABASE`` names.
    databases: tuple[str, ...] | None = None
    #: Where scratch copies of a persistent directory go (``RUNBOOK_SCRATCH_DIR``); None: the system temp dir.
    scratch_dir: Path | None = None

    @property
    def is_server(self) -> bool:
        """A source over HTTP (a Chroma server or Chroma Cloud): no directory, no file backup."""
        return self.host is not None or self.api_key is not None

    @property
    def is_cloud(self) -> bool:
        """Chroma Cloud (``CHROMA_API_KEY``): read within Cloud's quotas (:mod:`runbook_lib.chroma.cloud`)."""
        return self.api_key is not None

    @property
    def url(self) -> str | None:
        """The server's or Cloud's base URL (None for a directory)."""
        if not self.is_server:
            return None
        return f"{'https' if self.ssl else 'http'}://{self.host or CHROMA_CLOUD_HOST}:{self.port}"

    def scratch_root(self) -> Path:
        """The folder scratch copies are made in: ``RUNBOOK_SCRATCH_DIR``, else the system temp dir."""
        return self.scratch_dir if self.scratch_dir is not None else Path(tempfile.gettempdir())

    def describe(self) -> str:
        if self.is_cloud:
            tenant, database = self.tenant or "the key's", self.database or "the key's"
            return f"Chroma Cloud {self.url} (tenant {tenant}, database {database})"
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


class QdrantSettings(BaseModel):
    """Where the Qdrant target is; exactly one of ``url`` (a server), ``edge_path`` (Qdrant Edge: one shard per
    collection in that folder) and ``path`` (qdrant-client's embedded local mode) is set."""

    model_config = ConfigDict(frozen=True)

    path: Path | None = None
    edge_path: Path | None = None
    url: str | None = None
    prefer_grpc: bool = False
    timeout_s: float = 60.0
    allow_insecure_api_key: bool = False
    api_key: SecretStr | None = None

    @model_validator(mode="after")
    def _one_target(self) -> QdrantSettings:
        named = [n for n, v in (("url", self.url), ("edge_path", self.edge_path), ("path", self.path)) if v is not None]
        if len(named) != 1:
            raise ValueError(f"exactly one of url, edge_path and path names the Qdrant target, got {named or 'none'}")
        return self

    @property
    def kind(self) -> TargetKind:
        if self.url is not None:
            return "server"
        return "edge" if self.edge_path is not None else "local"

    @property
    def is_server(self) -> bool:
        return self.kind == "server"

    def describe(self) -> str:
        if self.kind == "server":
            return f"Qdrant server {self.url}" + (" (API key set)" if self.api_key else "")
        if self.kind == "edge":
            return f"Qdrant Edge at {self.edge_path}"
        return f"Qdrant embedded local mode at {self.path}"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    chroma: ChromaSettings
    qdrant: QdrantSettings
    outputs: Path

    @property
    def scratch_dir(self) -> Path:
        """``RUNBOOK_SCRATCH_DIR`` (default: the system temp dir): where scratch copies of the source go."""
        return self.chroma.scratch_root()

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
            "chroma_cloud": self.chroma.is_cloud,
            "chroma_api_key_set": self.chroma.api_key is not None,
            "target": self.qdrant.describe(),
            "qdrant_url": self.qdrant.url,
            "qdrant_edge_path": None if self.qdrant.edge_path is None else str(self.qdrant.edge_path),
            "qdrant_path": None if self.qdrant.path is None else str(self.qdrant.path),
            "qdrant_api_key_set": self.qdrant.api_key is not None,
            "qdrant_prefer_grpc": self.qdrant.prefer_grpc,
            "outputs": str(self.outputs),
            "scratch_dir": str(self.chroma.scratch_root()),
        }

    def secrets(self) -> list[str]:
        """The secret values in force (to scrub from anything written under outputs/)."""
        return [s.get_secret_value() for s in (self.chroma.auth_token, self.chroma.api_key, self.qdrant.api_key) if s]


def _validate_qdrant_url(url: str, api_key: bool, allow_insecure: bool) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            f"QDRANT_URL={url!r} is not a URL: set it like https://xyz.cloud.qdrant.io:6333 or "
            "http://localhost:6333, or unset it to use Qdrant Edge (QDRANT_EDGE_PATH)."
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


def _cloud_address(host: str | None, port: int | None, ssl: bool | None, allow_insecure: bool) -> tuple[int, bool]:
    """(port, ssl) of a Chroma Cloud source: Cloud's own (443, https) unless ``CHROMA_HOST``/``CHROMA_PORT``/
    ``CHROMA_SSL`` say otherwise; the key is never sent over plain http to a non-loopback host unless allowed."""
    if host is None:
        if port is not None or ssl is not None:
            raise ConfigError(
                "CHROMA_PORT or CHROMA_SSL is set for Chroma Cloud (CHROMA_API_KEY) but CHROMA_HOST is not: set "
                "CHROMA_HOST too to point the Cloud client at another address, or unset them to use Chroma Cloud."
            )
        return CHROMA_CLOUD_PORT, True
    secure = True if ssl is None else ssl
    if not secure and not is_loopback(host) and not allow_insecure:
        raise ConfigError(
            f"Refusing to send CHROMA_API_KEY over plain http:// to {host}: set CHROMA_SSL=true, or set "
            "RUNBOOK_ALLOW_INSECURE_API_KEY=true if this network is trusted."
        )
    return port or (CHROMA_CLOUD_PORT if secure else 8000), secure


def apply_params(settings: Settings, params: object) -> Settings:
    """The settings a step runs with: the step parameters that say how the source is read (``read_concurrency``,
    ``databases``) go into the Chroma settings, so every reader the step opens reads the same way."""
    update: dict[str, object] = {}
    concurrency = getattr(params, "read_concurrency", None)
    if concurrency is not None and concurrency != settings.chroma.read_concurrency:
        update["read_concurrency"] = int(concurrency)
    databases = getattr(params, "databases", None)
    if databases:
        update["databases"] = tuple(databases)
    if not update:
        return settings
    return settings.model_copy(update={"chroma": settings.chroma.model_copy(update=update)})


def _target_dir(variable: str, value: str) -> Path:
    path = resolve(value)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{variable} points to {path}, which is a file: point it at a directory.")
    return path


def _scratch_dir(value: str | None) -> Path | None:
    if value is None:
        return None
    path = resolve(value)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"RUNBOOK_SCRATCH_DIR points to {path}, which is a file: point it at a directory with room for a copy "
            "of the ChromaDB directory, or unset it to use the system temp dir."
        )
    return path


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise :class:`ConfigError` naming the first bad variable."""
    e = read_environment(env)
    host = e.CHROMA_HOST
    cloud = e.CHROMA_API_KEY is not None
    port, ssl = e.CHROMA_PORT or 8000, bool(e.CHROMA_SSL)
    if cloud:
        port, ssl = _cloud_address(host, e.CHROMA_PORT, e.CHROMA_SSL, e.RUNBOOK_ALLOW_INSECURE_API_KEY)
        host = host or CHROMA_CLOUD_HOST
    elif host is None:
        for dependent in ("CHROMA_PORT", "CHROMA_SSL"):
            if getattr(e, dependent) is not None:
                raise ConfigError(
                    f"{dependent} is set but CHROMA_HOST is not: set CHROMA_HOST to use a Chroma server, "
                    f"or unset {dependent} to read the directory in CHROMA_PERSIST_DIR."
                )
    chroma = ChromaSettings(
        persist_dir=resolve(e.CHROMA_PERSIST_DIR),
        host=host,
        port=port,
        ssl=ssl,
        tenant=e.CHROMA_TENANT,
        database=e.CHROMA_DATABASE,
        timeout_s=e.CHROMA_TIMEOUT,
        auth_token=e.CHROMA_AUTH_TOKEN,
        api_key=e.CHROMA_API_KEY,
        scratch_dir=_scratch_dir(e.RUNBOOK_SCRATCH_DIR),
    )
    api_key = e.QDRANT_API_KEY
    url = e.QDRANT_URL
    if url is not None:
        url = _validate_qdrant_url(url, api_key is not None, e.RUNBOOK_ALLOW_INSECURE_API_KEY)
    elif api_key is not None:
        raise ConfigError(
            "QDRANT_API_KEY is set but QDRANT_URL is not: set QDRANT_URL to your Qdrant server, or unset "
            "QDRANT_API_KEY to use Qdrant Edge (QDRANT_EDGE_PATH) or the embedded local mode (QDRANT_PATH)."
        )
    edge_path = path = None
    if url is None:  # the first of QDRANT_URL, QDRANT_EDGE_PATH, QDRANT_PATH that is set; Edge by default
        if e.QDRANT_EDGE_PATH is not None or e.QDRANT_PATH is None:
            edge_path = _target_dir("QDRANT_EDGE_PATH", e.QDRANT_EDGE_PATH or DEFAULT_QDRANT_EDGE_PATH)
        else:
            path = _target_dir("QDRANT_PATH", e.QDRANT_PATH)
    qdrant = QdrantSettings(
        path=path,
        edge_path=edge_path,
        url=url,
        prefer_grpc=e.QDRANT_PREFER_GRPC,
        timeout_s=e.QDRANT_TIMEOUT,
        allow_insecure_api_key=e.RUNBOOK_ALLOW_INSECURE_API_KEY,
        api_key=api_key,
    )
    outputs = resolve(e.RUNBOOK_OUTPUTS)
    if outputs.exists() and not outputs.is_dir():
        raise ConfigError(f"RUNBOOK_OUTPUTS points to {outputs}, which is a file: point it at a directory.")
    return Settings(chroma=chroma, qdrant=qdrant, outputs=outputs)
