"""Pure rules with no I/O: ``mapping`` (point ids, payload, distances: the SPEC's data mapping), ``filters``
(Chroma ``where`` -> Qdrant filter), ``compare`` (type-strict value comparison, running top-k) and ``plan``
(where each collection goes)."""
