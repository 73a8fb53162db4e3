"""Fixtures for tests, benchmarks and ``make run``: the sample ChromaDB (``sample_data``). Not part of the
library a migration or an app imports."""
