"""Query photos in, ranked catalog shapes out: `Searcher` is the entry point."""

from ibsr.searcher.query import Query, load_query
from ibsr.searcher.results import Hit, SearchResult

__all__ = ["Hit", "Query", "SearchResult", "Searcher", "load_query"]


def __getattr__(name):
    # Imported on first use: the searcher pulls in LanceDB and FAISS, which training (that
    # only needs the query loader) does without, e.g. on a GPU machine that lacks them.
    if name == "Searcher":
        from ibsr.searcher.search import Searcher
        return Searcher
    raise AttributeError(f"module 'ibsr.searcher' has no attribute {name!r}")
