"""Retries for Qdrant calls: which errors are transient, and two budgets: a step's (patient), an app's (brief)."""

from __future__ import annotations

import logging

import httpx
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_exponential_jitter,
)

log = logging.getLogger("runbook_lib.qdrant.target")


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: timeouts, dropped connections, 429 and 5xx answers, gRPC UNAVAILABLE."""
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in (408, 429, 500, 502, 503, 504)
    if isinstance(exc, ResponseHandlingException | httpx.TransportError | TimeoutError | ConnectionError):
        return True
    try:
        import grpc

        if isinstance(exc, grpc.RpcError):
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            return code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.ABORTED,
            )
    except ImportError:  # pragma: no cover - grpc ships with qdrant-client
        pass
    return False


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("Qdrant call failed (%s), retry %d", exc, state.attempt_number)


#: Retry policy for every call that writes or reads a batch: 6 tries, exponential backoff with jitter.
retry_transient = retry(
    retry=retry_if_exception(is_transient),
    stop=stop_after_attempt(6),
    wait=wait_exponential_jitter(multiplier=0.5, max=20, jitter=1),
    before_sleep=_log_retry,
    reraise=True,
)

#: Retry policy for an app's calls (``fail_fast``): 3 tries within about a second, so an app's request fails fast
#: (``VECTOR_DB=dual`` journals what its second store missed).
retry_briefly = retry(
    retry=retry_if_exception(is_transient),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.2, max=1.0),
    before_sleep=_log_retry,
    reraise=True,
)
