"""QA records, retrieval corpora and the QA sources that materialize them into the cache."""
