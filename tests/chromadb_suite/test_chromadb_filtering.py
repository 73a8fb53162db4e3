"""chromadb's ``chromadb/test/property/test_filtering.py``, its tests themselves, against the drop-in (the
``client`` fixture of this folder's conftest: Qdrant Edge and local mode behind ``runbook_lib.app.compat.Client``)."""

from chromadb_suite.conftest import suite_profile

with suite_profile():
    from chromadb.test.property.test_filtering import *  # noqa: F403
