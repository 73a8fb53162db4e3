"""Where apps written against earlier releases import the wrapper from; the wrapper lives in :mod:`runbook_lib.app`.

``from runbook_lib.vector_db import VectorDBClient, SearchResult`` keeps working: this module re-exports
:mod:`runbook_lib.app`'s public names.
"""

from runbook_lib.app import *  # noqa: F403
from runbook_lib.app import __all__ as __all__
