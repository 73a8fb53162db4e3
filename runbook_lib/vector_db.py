"""Where apps written against earlier releases import the wrapper from; the wrapper lives in :mod:`runbook_lib.app`."""

from runbook_lib.app.client import *  # noqa: F403
from runbook_lib.app.client import VectorDBClient

__all__ = ["VectorDBClient"]
