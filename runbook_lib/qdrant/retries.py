"""Retries for Qdrant calls: which errors are transient, and the one retry policy (:mod:`runbook_lib.core.retries`)
with its two budgets: a step's (patient), an app's (brief)."""

from __future__ import annotations

import logging

import httpx
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from runbook_lib.core.retries import BRIEF, PATIENT, TRANSIENT_STATUS, retry_decorator

log = logging.getLogger("runbook_lib.qdrant.target")


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: timeouts, dropped connections, 429 and 5xx answers, gRPC UNAVAILABLE."""
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in TRANSIENT_STATUS
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


#: Retry policy for every call that writes or reads a batch (a step's budget).
retry_transient = retry_decorator(is_transient, "Qdrant call", log, PATIENT)
#: Retry policy for an app's calls (``fail_fast``): 3 tries within about a second, so an app's request fails fast
#: (``VECTOR_DB=dual`` journals what its second store missed).
retry_briefly = retry_decorator(is_transient, "Qdrant call", log, BRIEF)
