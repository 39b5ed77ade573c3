"""Batch evaluation: run a Searcher over labelled query photos and measure it.

    from ibsr.eval import evaluate, read_queries
    from ibsr.searcher import Searcher
    report = evaluate(Searcher("ibsr_index"), read_queries("queries.jsonl"))
    print(format_report(report))

Queries go through the searcher exactly as `ibsr-search` sends them (`load_queries`, then
`search_queries`), a batch at a time, so memory stays bounded for any number of queries: per
query only its rank and top-10 ids are kept. By default each query gets the index's full
ranking (topk = every shape), so the rank of the true shape and the MRR are exact; with a
prefilter the ranking covers the prefilter's candidates only, and a true shape the prefilter
left out has no rank (it counts as a miss and as reciprocal rank 0; `found` reports how often).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from ibsr.errors import IbsrError
from ibsr.eval.metrics import KS, accuracy_curve, per_category, rank_of, summarize
from ibsr.eval.queries import EvalQuery, split_known
from ibsr.searcher.options import SearchOptions

TOP_KEPT = 10  # hit ids kept per query record
MAX_HITS_PER_BATCH = 2_000_000  # batch_size * depth bound: the Hit objects one batch holds
DEFAULT_CURVE_K = 100
EXAMPLES_KEPT = 20  # unknown / failed queries listed in the report


@dataclass
class EvalReport:
    index: str
    shapes: int  # shapes in the index
    depth: int  # hits asked per query (= shapes: full ranking)
    prefilter: str  # category | ann | none | oracle-category
    queries: int  # queries read
    evaluated: int  # queries in the metrics
    unknown: int  # queries whose shape is not in the index (excluded)
    failed: int  # queries whose photo or mask could not be loaded (excluded)
    summary: dict  # count, top1, top5, top10, category, mrr, found
    per_category: dict[str, dict]  # true category -> the same keys
    curve: list[float]  # top-k instance accuracy for k = 1..len(curve)
    timings: dict  # total_s, load_s (load+mask), search_s (encode+rerank), search_stages_s, queries_per_s
    source: str | None = None  # the queries file
    unknown_examples: list[dict] = field(default_factory=list)
    failed_examples: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # per query: image, mask, line, truth, rank, top ids

    def to_dict(self, per_query: bool = False) -> dict:
        data = asdict(self)
        if not per_query:
            data.pop("records")
        return data


def evaluate(searcher, queries: Sequence[EvalQuery], options: SearchOptions | None = None, batch_size: int = 64,
             progress: bool = True, topk: int | None = None, oracle_category: bool = False, strict: bool = False,
             limit: int | None = None, curve_k: int = DEFAULT_CURVE_K, source: str | None = None,
             warn: Callable[[str], None] | None = None) -> EvalReport:
    """Search every query against the index of `searcher` and score the rankings.

    options: the prefilter and its settings, as `Searcher.search_queries` (and `ibsr-search`)
        take them (default: `SearchOptions()`); its topk gives way to `topk` below.
    topk: hits per query (None: every shape, exact ranks and MRR; must be >= 10 for top-10).
    oracle_category: rank only the shapes of each query's true category (as `--category`).
    strict: a query whose shape is not in the index, or whose photo cannot be loaded, is an
        error; otherwise it is excluded from the metrics, counted, and warned about.
    limit: evaluate only the first `limit` queries whose shape is in the index.
    warn: called with one-line warnings (default: print to stderr).
    """
    from tqdm import tqdm

    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    if batch_size < 1:
        raise IbsrError(f"--batch-size must be at least 1 (got {batch_size})")
    if limit is not None and limit < 1:
        raise IbsrError(f"--limit must be at least 1 (got {limit})")
    shapes = len(searcher)
    depth = shapes if topk is None else topk
    if not min(max(KS), shapes) <= depth <= shapes:
        raise IbsrError(f"--topk must be between {min(max(KS), shapes)} and the index size {shapes} (got {topk}); "
                        "leave it out for the full ranking")
    index_category = dict(zip(searcher.shapes.shape_ids, searcher.shapes.categories))

    known, unknown = split_known(queries, index_category)
    if unknown:
        first = unknown[0]
        message = (f"{len(unknown)} of {len(queries)} queries name shapes that are not in the index "
                   f"(first: {first.shape_id!r}, line {first.line})")
        if strict:
            raise IbsrError(message + "; index those shapes or drop the queries", source)
        warn(message + "; excluded from the metrics")
    if limit is not None:
        known = known[:limit]
    mismatched = [q for q in known if q.category and q.category != index_category[q.shape_id]]
    if mismatched:
        first = mismatched[0]
        warn(f"{len(mismatched)} queries give another category than the index has for their shape (first: line "
             f"{first.line}, {first.category!r} vs {index_category[first.shape_id]!r}); the queries file's is used")
    if not known:
        raise IbsrError("no query to evaluate: none names a shape of the index", source)

    options = replace(options or SearchOptions(), topk=depth)
    batch_size = max(1, min(batch_size, MAX_HITS_PER_BATCH // depth))

    ranks, category_hits, true_categories, records, failed = [], [], [], [], []
    load_s = search_s = 0.0
    stages_before = dict(searcher.timings)
    start = time.perf_counter()
    with tqdm(total=len(known), unit="query", desc="evaluating", disable=not progress, file=sys.stderr) as bar:
        for b in range(0, len(known), batch_size):
            t0 = time.perf_counter()
            loaded, batch = _load_batch(searcher, known[b:b + batch_size], strict, failed, warn)
            t1 = time.perf_counter()
            results = _search_batch(searcher, batch, loaded, options, oracle_category, index_category)
            t2 = time.perf_counter()
            load_s, search_s = load_s + (t1 - t0), search_s + (t2 - t1)
            for query, result in zip(batch, results):
                truth_category = query.category or index_category[query.shape_id]
                ids = [h.shape_id for h in result.hits]
                rank = rank_of(query.shape_id, ids)
                category_hit = bool(result.hits) and result.hits[0].category == truth_category
                ranks.append(rank)
                category_hits.append(category_hit)
                true_categories.append(truth_category)
                records.append({"image": str(query.image), "mask": None if query.mask is None else str(query.mask),
                                "box": result.box, "line": query.line, "shape_id": query.shape_id, "category": truth_category,
                                "rank": rank, "category_hit": category_hit, "mask_source": result.mask_source,
                                "top": ids[:TOP_KEPT]})
            bar.update(min(batch_size, len(known) - b))
    total_s = time.perf_counter() - start
    if failed:
        warn(f"{len(failed)} of {len(known)} query photos could not be loaded (first: {failed[0]['error']}); "
             "excluded from the metrics")
    if not records:
        raise IbsrError("no query photo could be loaded", source)

    stages = {stage: seconds - stages_before.get(stage, 0.0) for stage, seconds in searcher.timings.items()
              if stage != "load"}  # encode, prefilter, rerank: the parts of search_s
    timings = {"total_s": total_s, "load_s": load_s, "search_s": search_s, "search_stages_s": stages,
               "queries_per_s": len(records) / total_s if total_s > 0 else None}
    return EvalReport(
        index=str(searcher.shapes.index_dir), shapes=shapes, depth=depth,
        prefilter="oracle-category" if oracle_category else options.prefilter, queries=len(queries),
        evaluated=len(records), unknown=len(unknown), failed=len(failed),
        summary=summarize(ranks, category_hits), per_category=per_category(ranks, category_hits, true_categories),
        curve=accuracy_curve(ranks, min(curve_k, depth)), timings=timings, source=source,
        unknown_examples=[q.to_dict() for q in unknown[:EXAMPLES_KEPT]], failed_examples=failed[:EXAMPLES_KEPT],
        records=records)


def _load_batch(searcher, batch: list[EvalQuery], strict: bool, failed: list, warn):
    """(loaded queries, the EvalQuery of each); unloadable ones are dropped unless strict."""
    images, masks, boxes = [q.image for q in batch], [q.mask for q in batch], [q.box for q in batch]
    try:
        return searcher.load_queries(images, masks, boxes), batch
    except IbsrError:
        if strict:
            raise
    loaded, kept = [], []
    for q in batch:  # find the bad ones
        try:
            loaded.extend(searcher.load_queries([q.image], [q.mask], [q.box]))
            kept.append(q)
        except IbsrError as exc:
            if len(failed) < EXAMPLES_KEPT:
                warn(f"line {q.line}: {exc}; skipped")
            failed.append({**q.to_dict(), "error": str(exc)})
    return loaded, kept


def _search_batch(searcher, batch, loaded, options: SearchOptions, oracle_category, index_category):
    if not loaded:
        return []
    if not oracle_category:
        return searcher.search_queries(loaded, options)
    results = [None] * len(loaded)
    by_category: dict[str, list[int]] = {}
    for i, q in enumerate(batch):
        by_category.setdefault(q.category or index_category[q.shape_id], []).append(i)
    for category, members in by_category.items():
        found = searcher.search_queries([loaded[i] for i in members], options, category=category)
        for i, result in zip(members, found):
            results[i] = result
    return results


# --------------------------------------------------------------------------- text


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _row(name: str, m: dict) -> str:
    mrr = "-" if m["mrr"] is None else f"{m['mrr']:.3f}"
    return (f"{name:<16} {m['count']:>7} " + " ".join(f"{_pct(m[f'top{k}']):>6}" for k in KS)
            + f" {_pct(m['category']):>8} {mrr:>6} {_pct(m['found']):>6}")


def format_report(report: EvalReport) -> str:
    """The summary and per-category tables (accuracies in %), then the timings."""
    ranking = "full ranking" if report.depth == report.shapes else f"top {report.depth}"
    excluded = []
    if report.unknown:
        excluded.append(f"{report.unknown} with shapes not in the index")
    if report.failed:
        excluded.append(f"{report.failed} unreadable")
    header = (f"{report.evaluated} queries" + (f" ({', '.join(excluded)} excluded)" if excluded else "")
              + f" against {report.shapes} shapes, {ranking}, prefilter {report.prefilter}")
    columns = (f"{'':<16} {'queries':>7} " + " ".join(f"{f'top{k}':>6}" for k in KS)
               + f" {'category':>8} {'mrr':>6} {'found':>6}")
    rule = "-" * len(columns)
    lines = [header, "", columns, rule, _row("all", report.summary), rule]
    lines += [_row(category, m) for category, m in report.per_category.items()]
    t = report.timings
    stages = ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in t.get("search_stages_s", {}).items())
    qps = "-" if t["queries_per_s"] is None else f"{t['queries_per_s']:.1f}"
    lines += ["", f"time: {t['total_s']:.2f} s, {qps} queries/s (load+mask {t['load_s']:.2f} s, "
                  f"encode+rerank {t['search_s']:.2f} s" + (f": {stages}" if stages else "") + ")"
              + (f"; index opened in {t['open_s']:.2f} s" if "open_s" in t else "")]
    return "\n".join(lines)
