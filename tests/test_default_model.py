"""The shipped model finds the photographed shape in a catalog it never saw in training.

Runs the real pipeline end to end: generate an unseen catalog (its own seed) and photos,
build an index with the default weights, search every photo, and check that the right
shape comes first for most photos. Scores are also checked against float64.
"""

import json

import numpy as np
import pytest

from ibsr.indexer import Indexer
from ibsr.model import default_weights_path
from ibsr.searcher import Searcher
from ibsr.synth import FURNITURE, GROUPS, catalog_shape, write_catalog, write_queries

from test_index_search import float64_scores

SEED = 4242  # the shipped model was trained on seed 1 and validated on seed 2
SHAPES_PER_CATEGORY = 3
PHOTOGRAPHED_PER_CATEGORY = 2
# furniture and 8 of the everyday-object categories it trained on (the thresholds below sit
# well under what it measured on such catalogs: 87% top-1 on 16 photos of 32 furniture shapes,
# 87% on 60 photos of 90 shapes of all 30 training categories)
CATEGORIES = FURNITURE + tuple(c for c in GROUPS["train"] if c not in FURNITURE)[::3]


@pytest.fixture(scope="module")
def unseen(tmp_path_factory):
    root = tmp_path_factory.mktemp("unseen")
    write_catalog(root, CATEGORIES, SHAPES_PER_CATEGORY, SEED)
    write_queries(root, [catalog_shape(c, i, SEED) for c in CATEGORIES for i in range(PHOTOGRAPHED_PER_CATEGORY)],
                  1, SEED)
    Indexer(root / "index").build(root / "catalog", progress=False)  # default weights
    return root


def test_default_model_finds_the_photographed_shape(unseen):
    records = [json.loads(line) for line in (unseen / "queries.jsonl").read_text().splitlines()]
    searcher = Searcher(unseen / "index")
    results = searcher.search([unseen / r["image"] for r in records], [unseen / r["mask"] for r in records],
                              topk=5, prefilter="none")
    ranks = [next((h.rank for h in res.hits if h.shape_id == r["shape_id"]), None) for r, res in zip(records, results)]
    top1 = np.mean([rank == 1 for rank in ranks])
    top5 = np.mean([rank is not None for rank in ranks])
    category = np.mean([res.hits[0].category == r["category"] for r, res in zip(records, results)])
    n_shapes = len(CATEGORIES) * SHAPES_PER_CATEGORY
    # chance is 1/48 for top-1; the thresholds sit well below the measured values (RESULTS.md)
    assert top1 >= 0.6, ranks
    assert top5 >= 0.85, ranks
    assert category >= 0.8
    assert len(searcher) == n_shapes


def test_default_model_scores_match_float64(unseen, monkeypatch):
    monkeypatch.setenv("IBSR_PRECISION", "float32")  # the rerank's accuracy; bf16 queries: test_precision.py
    records = [json.loads(line) for line in (unseen / "queries.jsonl").read_text().splitlines()]
    searcher = Searcher(unseen / "index")
    image = unseen / records[0]["image"]
    [result] = searcher.search([image], topk=len(searcher), prefilter="none")
    expected = float64_scores(default_weights_path(), image, searcher.shapes)
    row = {s: i for i, s in enumerate(searcher.shapes.shape_ids)}
    for hit in result.hits:
        assert hit.score == pytest.approx(expected[row[hit.shape_id]], abs=2e-3)
