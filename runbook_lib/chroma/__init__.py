"""Everything that reads or writes ChromaDB: ``base`` (the Chroma-side interface the steps call), ``connect`` (which
implementation the settings ask for), ``source`` (the reader over a persistent directory's scratch copy or a Chroma
server), ``clients`` (the one chromadb client factory), ``server`` (the Chroma server client: timeout, transient
statuses, retries), ``live`` (the app's own ChromaDB, for the app layer), ``files`` (copying and checksumming a
persistent directory without opening it), ``scratch`` (temporary scratch copies), ``backup`` (the checksummed backup
a migration reads from and a rollback restores), ``catalog`` (a directory's SQLite catalog, read-only) and
``writer`` (writes into a staged copy of a persistent directory that replaces the live one once verified)."""
