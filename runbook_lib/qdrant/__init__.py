"""Everything that talks to Qdrant: ``target`` (connecting, creating collections, retried upserts, scans and exact
search over a server or qdrant-client's embedded local mode) and ``retries`` (which errors are transient, the
backoff policy)."""
