"""The ChromaDB side: ``chroma`` (the reader over a persistent directory's scratch copy or a Chroma server),
``chroma_files`` (copying and checksumming a persistent directory without opening it) and ``backup`` (the
checksummed backup a migration reads from and a rollback restores)."""
