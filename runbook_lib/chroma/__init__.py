"""Everything that reads or writes ChromaDB: ``source`` (the reader over a persistent directory's scratch copy or a
Chroma server), ``server`` (the Chroma server client), ``files`` (copying and checksumming a persistent directory
without opening it), ``scratch`` (temporary scratch copies), ``backup`` (the checksummed backup a migration reads
from and a rollback restores), ``catalog`` (a directory's SQLite catalog, read-only) and ``writer`` (writes into a
staged copy of a persistent directory that replaces the live one once verified)."""
