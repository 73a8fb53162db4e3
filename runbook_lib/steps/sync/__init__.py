"""The sync step: ``diff`` (the plan: changes on each side since the last sync, conflicts), ``apply`` (carrying them
over in batches, the ledger following), ``chroma_writer`` (staged, verified writes into ChromaDB), ``engine`` (the
step), ``result`` (data) and ``report`` (the notebook's tables)."""
