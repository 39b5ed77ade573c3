"""Query photos in, ranked catalog shapes out: `Searcher` is the entry point (the photos
themselves, from file to query tensor, are `ibsr.photos`)."""

from ibsr.searcher.options import SearchOptions
from ibsr.searcher.results import Hit, SearchResult

__all__ = ["Hit", "SearchOptions", "SearchResult", "Searcher"]


def __getattr__(name):
    # Imported on first use: the searcher pulls in LanceDB, FAISS and torch, which a reader of
    # results alone (`results.py`: the table, the HTML page) or of the options does without.
    if name == "Searcher":
        from ibsr.searcher.search import Searcher
        return Searcher
    raise AttributeError(f"module 'ibsr.searcher' has no attribute {name!r}")
