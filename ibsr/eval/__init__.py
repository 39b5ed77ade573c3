"""Batch evaluation of a Searcher on labelled query photos (`ibsr-eval`).

    from ibsr.eval import evaluate, format_report, read_queries
    report = evaluate(Searcher(index_dir), read_queries("queries.jsonl"))

- `metrics`: pure functions over ranked lists (top-k, category accuracy, MRR, per category,
  accuracy-vs-k curve);
- `queries`: ibsr `queries.jsonl` and Pix3D `pix3d.json` readers;
- `run`: `evaluate` (batched, timed per stage) and the `EvalReport` it returns.
"""

from ibsr.eval.metrics import KS, accuracy_curve, compute_metrics, per_category, rank_of, summarize
from ibsr.eval.queries import EvalQuery, pix3d_shape_id, read_queries, split_known
from ibsr.eval.run import EvalReport, evaluate, format_report

__all__ = [
    "KS",
    "EvalQuery",
    "EvalReport",
    "accuracy_curve",
    "compute_metrics",
    "evaluate",
    "format_report",
    "per_category",
    "pix3d_shape_id",
    "rank_of",
    "read_queries",
    "split_known",
    "summarize",
]
