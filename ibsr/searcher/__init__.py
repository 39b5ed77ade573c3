"""Query photos in, ranked catalog shapes out: `Searcher` is the entry point."""

from ibsr.searcher.query import Query, load_query
from ibsr.searcher.results import Hit, SearchResult
from ibsr.searcher.search import Searcher

__all__ = ["Hit", "Query", "SearchResult", "Searcher", "load_query"]
