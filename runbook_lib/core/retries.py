"""The one retry policy for both stores (tenacity): a transient error is retried with exponential backoff and
jitter, :data:`ATTEMPTS` tries in all, each retry logged as a warning; anything else raises at once, and the last
error is raised as it was. Each store says which of its errors are transient (``chroma.server``, ``qdrant.retries``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

T = TypeVar("T")

#: HTTP answers worth another try: the server is overloaded, restarting, or behind a proxy that lost it.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: Tries per call, the first included.
ATTEMPTS = 6
#: The wait between tries (tests replace it with ``tenacity.wait_none()``).
WAIT: Any = wait_exponential_jitter(multiplier=0.5, max=20, jitter=1)


def _wait(state: RetryCallState) -> float:
    return float(WAIT(state))  # read at each retry, so a replaced WAIT applies to policies built earlier too


def _options(is_transient: Callable[[BaseException], bool], what: str, log: logging.Logger) -> dict[str, Any]:
    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s failed (%s), retry %d of %d", what, exc, state.attempt_number, ATTEMPTS - 1)

    return {
        "retry": retry_if_exception(is_transient),
        "stop": stop_after_attempt(ATTEMPTS),
        "wait": _wait,
        "before_sleep": log_retry,
        "reraise": True,
    }


def call_with_retry(
    is_transient: Callable[[BaseException], bool],
    what: str,
    log: logging.Logger,
    fn: Callable[..., T],
    /,
    *args: Any,
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)`` under the policy; ``what`` names the call in the retry warnings."""
    return Retrying(**_options(is_transient, what, log))(fn, *args, **kwargs)


def retry_decorator(is_transient: Callable[[BaseException], bool], what: str, log: logging.Logger) -> Any:
    """The policy as a decorator (tenacity's ``retry``)."""
    return retry(**_options(is_transient, what, log))
