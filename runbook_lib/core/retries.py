"""The one retry policy for both stores (tenacity): a transient error is retried with exponential backoff, each
retry logged as a warning; anything else raises at once, and the last error is raised as it was. Two budgets: a
step's (:data:`PATIENT`: rides out a server restart) and an app's (:data:`BRIEF`: an app's request fails fast).
Each store says which of its errors are transient (``chroma.server``, ``qdrant.retries``). An error that carries
the server's ``Retry-After`` (a ``retry_after`` attribute in seconds: a throttled Chroma Cloud read) waits that long,
plus jitter, instead of the exponential step.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_exponential_jitter,
)

T = TypeVar("T")

#: HTTP answers worth another try: the server is overloaded, restarting, or behind a proxy that lost it.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Budget:
    """How many tries a call gets (the first included) and the wait between them (a tenacity ``wait``)."""

    attempts: int
    wait: Any


#: The longest ``Retry-After`` honoured (a longer one waits this long, then tries again).
MAX_RETRY_AFTER_S = 60.0


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP ``Retry-After`` value (seconds, or an HTTP date) in seconds; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class wait_retry_after:
    """Wait what the server's ``Retry-After`` asked (the failed call's ``retry_after``, seconds) plus up to
    ``jitter`` seconds, so throttled callers do not come back in step; without one, ``fallback``."""

    def __init__(self, fallback: Any, jitter: float = 0.5) -> None:
        self.fallback = fallback
        self.jitter = jitter

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        if isinstance(after, int | float):
            return min(float(after), MAX_RETRY_AFTER_S) + random.uniform(0, self.jitter)
        return float(self.fallback(state))


#: A step's calls: 6 tries, exponential backoff with jitter up to 20 s (or the server's Retry-After, with jitter).
PATIENT = Budget(6, wait_retry_after(wait_exponential_jitter(multiplier=0.5, max=20, jitter=1)))
#: An app's calls: 3 tries within about a second.
BRIEF = Budget(3, wait_exponential(multiplier=0.2, max=1.0))


def _options(
    is_transient: Callable[[BaseException], bool], what: str, log: logging.Logger, budget: Budget
) -> dict[str, Any]:
    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s failed (%s), retry %d of %d", what, exc, state.attempt_number, budget.attempts - 1)

    return {
        "retry": retry_if_exception(is_transient),
        "stop": stop_after_attempt(budget.attempts),
        "wait": budget.wait,
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
    """``fn(*args, **kwargs)`` with a step's budget (:data:`PATIENT`, read at each call); ``what`` names the call in
    the retry warnings."""
    return Retrying(**_options(is_transient, what, log, PATIENT))(fn, *args, **kwargs)


def retry_decorator(
    is_transient: Callable[[BaseException], bool], what: str, log: logging.Logger, budget: Budget = PATIENT
) -> Any:
    """The policy as a decorator (tenacity's ``retry``) with ``budget``."""
    return retry(**_options(is_transient, what, log, budget))
