"""Click commands: thin fronts over the Python API (`ibsr.Indexer`, `ibsr.Searcher`, ...)."""
