"""Everything that talks to Qdrant: ``base`` (the Qdrant-side interface every step, the sync, the monitor and the
app call), ``connect`` (which implementation the settings ask for), ``target`` (the implementation over
qdrant-client: a server, Qdrant Cloud, a cluster, or qdrant-client's embedded local mode) and ``retries`` (which
errors are transient, the backoff policy)."""
