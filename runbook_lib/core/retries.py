"""The one retry policy for both stores (tenacity): a transient error is retried with exponential backoff, each
retry logged as a warning; anything else raises at once, and the last error is raised as it was. Two budgets: a
step's (:data:`PATIENT`: rides out a server restart) and an app's (:data:`BRIEF`: an app's request fails fast).
Each store says which of its errors are transient (``chroma.server``, ``qdrant.retries``).
"""

from __future__ import annotations

import logging
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


#: A step's calls: 6 tries, exponential backoff with jitter up to 20 s.
PATIENT = Budget(6, wait_exponential_jitter(multiplier=0.5, max=20, jitter=1))
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
