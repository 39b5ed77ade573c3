"""ibsr: image-based 3D shape retrieval over large catalogs (CMIC, ICCV 2021).

    from ibsr import Indexer, Searcher
    Indexer("ibsr_index").build("catalog/")
    results = Searcher("ibsr_index").search(["query.jpg"], topk=10)

Submodules are imported on first use so that `import ibsr` stays light.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Indexer":
        from ibsr.indexer import Indexer
        return Indexer
    if name == "Searcher":
        from ibsr.searcher import Searcher
        return Searcher
    if name == "IbsrError":
        from ibsr.errors import IbsrError
        return IbsrError
    raise AttributeError(f"module 'ibsr' has no attribute {name!r}")
