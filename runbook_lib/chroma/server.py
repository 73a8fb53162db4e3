"""The Chroma server client: connecting (``CHROMA_HOST``/``CHROMA_PORT``/``CHROMA_SSL``/``CHROMA_AUTH_TOKEN``), the
``CHROMA_TIMEOUT`` chromadb has no setting for, and which errors are transient for the one retry policy
(:mod:`runbook_lib.core.retries`) every read gets.

Transient errors -- a dropped or refused connection, a timeout, a 429 or 5xx answer -- are retried; anything else
(an unknown collection, a bad request, refused credentials) raises at once. chromadb turns a 5xx answer without a
JSON error body into a bare ``Exception`` that carries no status code, so a response hook on its httpx session
raises :class:`ChromaServerBusy` first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import chromadb
import httpx
from chromadb.api import AdminAPI, ClientAPI
from chromadb.errors import ChromaError

from runbook_lib.config.settings import CHROMA_CLOUD_HOST, ChromaSettings
from runbook_lib.core.retries import TRANSIENT_STATUS, call_with_retry, retry_after_seconds
from runbook_lib.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


class ChromaServerBusy(Exception):
    """The Chroma server answered with a transient HTTP status (429, 5xx, 408); ``retry_after``: the seconds its
    ``Retry-After`` header asked for (None without one), which the retry policy honours."""

    def __init__(self, status: int, url: str, text: str, retry_after: float | None = None) -> None:
        super().__init__(f"the Chroma server answered {status} to {url}: {text.strip()[:200] or 'no details'}")
        self.status = status
        self.retry_after = retry_after


#: The answers a throttled Chroma Cloud gives: too many requests, or the service unavailable for a moment.
THROTTLED_STATUS = frozenset({429, 503})


def is_throttled(exc: BaseException) -> bool:
    """A 429 or 503 answer (Chroma Cloud's quotas, or a server shedding load)."""
    return isinstance(exc, ChromaServerBusy) and exc.status in THROTTLED_STATUS


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: transport failures (reset, refused, timeout), 408/429/5xx answers."""
    if isinstance(exc, ChromaServerBusy | httpx.TransportError | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in TRANSIENT_STATUS
    if isinstance(exc, ChromaError):  # InternalError (500), RateLimitError (429), ...
        return int(exc.code()) in TRANSIENT_STATUS
    return False


def read_with_retry(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried on transient errors; the last error is raised as it was."""
    return call_with_retry(is_transient, "Chroma read", log, fn, *args, **kwargs)


def http_settings(settings: ChromaSettings) -> chromadb.config.Settings:
    kwargs: dict[str, Any] = {
        "chroma_api_impl": "chromadb.api.fastapi.FastAPI",
        "chroma_server_host": settings.host or CHROMA_CLOUD_HOST,
        "chroma_server_http_port": settings.port,
        "chroma_server_ssl_enabled": settings.ssl,
        "anonymized_telemetry": False,
    }
    if settings.api_key:  # Chroma Cloud: the key in its X-Chroma-Token header, as chromadb's CloudClient sends it
        kwargs["chroma_client_auth_provider"] = "chromadb.auth.token_authn.TokenAuthClientProvider"
        kwargs["chroma_client_auth_credentials"] = settings.api_key.get_secret_value()
        kwargs["chroma_auth_token_transport_header"] = "X-Chroma-Token"
    elif settings.auth_token:
        kwargs["chroma_client_auth_provider"] = "chromadb.auth.token_authn.TokenAuthClientProvider"
        kwargs["chroma_client_auth_credentials"] = settings.auth_token.get_secret_value()
    return chromadb.config.Settings(**kwargs)


def _session(client: ClientAPI | AdminAPI) -> httpx.Client | None:
    """chromadb's httpx session (``client._server._session``): chromadb has no setting for its timeout."""
    session = getattr(getattr(client, "_server", None), "_session", None)
    return session if isinstance(session, httpx.Client) else None


def apply_timeout(client: ClientAPI | AdminAPI, seconds: float) -> bool:
    """Give chromadb's HTTP client the ``CHROMA_TIMEOUT`` it has no setting for (its httpx session is created with
    ``timeout=None``: a hung server would be waited on forever). True when the timeout was applied."""
    session = _session(client)
    if session is not None:
        session.timeout = httpx.Timeout(seconds)
        return True
    log.warning("chromadb's HTTP client has changed shape: CHROMA_TIMEOUT cannot be applied to it")
    return False


def _raise_transient_status(response: httpx.Response) -> None:
    if response.status_code in TRANSIENT_STATUS:
        response.read()
        raise ChromaServerBusy(
            response.status_code,
            str(response.request.url.path),
            response.text,
            retry_after_seconds(response.headers.get("retry-after")),
        )


def classify_statuses(client: ClientAPI | AdminAPI) -> bool:
    """Make a transient HTTP status raise :class:`ChromaServerBusy` (retried) instead of chromadb's bare
    ``Exception``. True when the hook was installed."""
    session = _session(client)
    if session is None:
        return False
    hooks = session.event_hooks
    if _raise_transient_status not in hooks.get("response", []):
        hooks["response"] = [*hooks.get("response", []), _raise_transient_status]
        session.event_hooks = hooks
    return True


def _preflight(base_url: str, seconds: float) -> None:
    """One heartbeat within ``CHROMA_TIMEOUT`` before chromadb's client (which has no timeout) is created."""
    try:
        httpx.get(f"{base_url}/api/v2/heartbeat", timeout=seconds)
    except httpx.TimeoutException:
        raise TimeoutError(f"no answer within CHROMA_TIMEOUT={seconds:g} s") from None


def http_client(settings: ChromaSettings) -> ClientAPI:
    """chromadb's HttpClient for the settings, with the timeout and the status hook; one sentence when it fails.
    Callers open clients through :func:`runbook_lib.chroma.clients.open_client`."""
    scheme = "https" if settings.ssl else "http"
    where = f"{scheme}://{settings.host}:{settings.port}"
    try:
        _preflight(where, settings.timeout_s)  # chromadb's constructor already talks to the server, with no timeout
        client = chromadb.HttpClient(
            host=str(settings.host),
            port=settings.port,
            ssl=settings.ssl,
            settings=http_settings(settings),
            tenant=settings.tenant or chromadb.DEFAULT_TENANT,
            database=settings.database or chromadb.DEFAULT_DATABASE,
        )
        apply_timeout(client, settings.timeout_s)
        classify_statuses(client)
        client.heartbeat()
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "tenant" in text.lower() or "database" in text.lower():
            raise ConfigError(
                f"The Chroma server at {where} has no tenant {settings.tenant or 'default_tenant'!r} with "
                f"database {settings.database or 'default_database'!r} ({text}): fix CHROMA_TENANT / "
                "CHROMA_DATABASE."
            ) from exc
        if "401" in text or "403" in text or "auth" in text.lower():
            raise ConfigError(
                f"The Chroma server at {where} refused the credentials ({text}): check CHROMA_AUTH_TOKEN."
            ) from exc
        raise ConfigError(
            f"Cannot reach the Chroma server at {where} ({text}): start it, or fix CHROMA_HOST / CHROMA_PORT / "
            "CHROMA_SSL."
        ) from exc
    return client


def cloud_client(settings: ChromaSettings) -> ClientAPI:
    """chromadb's ``CloudClient`` (its public API: the key in Cloud's ``X-Chroma-Token`` header, the tenant and
    database given or inferred from the key) at Cloud's address or the one ``CHROMA_HOST`` gave, with the timeout
    and the status hook; one sentence when it fails. Callers open clients through
    :func:`runbook_lib.chroma.clients.open_client`."""
    assert settings.api_key is not None
    where = settings.url or ""
    try:
        _preflight(where, settings.timeout_s)
        client = chromadb.CloudClient(
            tenant=settings.tenant,
            database=settings.database,
            api_key=settings.api_key.get_secret_value(),
            settings=chromadb.config.Settings(anonymized_telemetry=False),
            cloud_host=settings.host or CHROMA_CLOUD_HOST,
            cloud_port=settings.port,
            enable_ssl=settings.ssl,
        )
        apply_timeout(client, settings.timeout_s)
        classify_statuses(client)
        read_with_retry(client.heartbeat)
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        secret = settings.api_key.get_secret_value()
        text = text.replace(secret, "***") if secret else text
        if "tenant" in text.lower() or "database" in text.lower():
            raise ConfigError(
                f"Chroma Cloud at {where} has no tenant {settings.tenant or '(the key’s)'!r} with database "
                f"{settings.database or '(the key’s)'!r} for this key ({text}): fix CHROMA_TENANT / CHROMA_DATABASE."
            ) from None
        if "401" in text or "403" in text or "auth" in text.lower() or "permission" in text.lower():
            raise ConfigError(f"Chroma Cloud at {where} refused CHROMA_API_KEY ({text}): check the key.") from None
        raise ConfigError(
            f"Cannot reach Chroma Cloud at {where} ({text}): check the network, or fix CHROMA_HOST / CHROMA_PORT / "
            "CHROMA_SSL (unset them for Chroma Cloud itself)."
        ) from None
    return client
