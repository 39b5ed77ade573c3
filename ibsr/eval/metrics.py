"""Retrieval metrics over ranked lists: pure functions, no model, no index.

Each query has a true shape id and category, and the shape ids (and their categories) that
the search returned, best first. A query's *rank* is the 1-based position of its true shape in
that list, or None when the list does not hold it (a truncated list, or a prefilter that left
the true shape out). Metrics are fractions in [0, 1]:

- `top{k}` (k in `KS`): instance accuracy, the fraction of queries with rank <= k;
- `category`: the top-1 hit has the query's category (no hit at all counts as wrong);
- `mrr`: mean reciprocal rank, 1/rank averaged over queries, 0 where rank is None. Exact only
  when the ranked lists are complete (`ibsr.eval.evaluate` asks for the whole index);
  with lists truncated at depth T it is a lower bound, too low by less than 1/(T+1);
- `found`: the fraction of queries whose true shape is in the returned list at all (the
  prefilter's recall when the list is the whole candidate set).
"""

from __future__ import annotations

from collections.abc import Sequence

KS = (1, 5, 10)


def rank_of(truth: str, ranked_ids: Sequence[str]) -> int | None:
    """1-based position of `truth` in `ranked_ids`, None if absent."""
    for position, shape_id in enumerate(ranked_ids, start=1):
        if shape_id == truth:
            return position
    return None


def reciprocal_rank(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / rank


def summarize(ranks: Sequence[int | None], category_hits: Sequence[bool], ks: Sequence[int] = KS) -> dict:
    """Summary metrics of queries given their ranks and whether their top-1 category was right.

    Returns {"count", "top1", "top5", "top10", "category", "mrr", "found"}; every fraction is
    None when there are no queries.
    """
    if len(ranks) != len(category_hits):
        raise ValueError(f"{len(ranks)} ranks but {len(category_hits)} category flags")
    n = len(ranks)
    out: dict = {"count": n}
    for k in ks:
        out[f"top{k}"] = _mean([r is not None and r <= k for r in ranks])
    out["category"] = _mean([bool(c) for c in category_hits])
    out["mrr"] = _mean([reciprocal_rank(r) for r in ranks])
    out["found"] = _mean([r is not None for r in ranks])
    return out


def per_category(ranks: Sequence[int | None], category_hits: Sequence[bool], categories: Sequence[str],
                 ks: Sequence[int] = KS) -> dict[str, dict]:
    """`summarize` of each true category's queries, categories sorted by name."""
    groups: dict[str, list[int]] = {}
    for i, category in enumerate(categories):
        groups.setdefault(category, []).append(i)
    return {c: summarize([ranks[i] for i in groups[c]], [category_hits[i] for i in groups[c]], ks)
            for c in sorted(groups)}


def accuracy_curve(ranks: Sequence[int | None], max_k: int) -> list[float]:
    """Instance accuracy at k = 1..max_k (element k-1 is top-k accuracy); [] without queries."""
    if not ranks or max_k < 1:
        return []
    counts = [0] * (max_k + 1)
    for r in ranks:
        if r is not None and r <= max_k:
            counts[r] += 1
    curve, hits = [], 0
    for k in range(1, max_k + 1):
        hits += counts[k]
        curve.append(hits / len(ranks))
    return curve


def compute_metrics(true_ids: Sequence[str], true_categories: Sequence[str],
                    ranked_ids: Sequence[Sequence[str]], ranked_categories: Sequence[Sequence[str]],
                    ks: Sequence[int] = KS, curve_k: int = 10) -> dict:
    """All metrics from the raw lists: {"summary", "per_category", "curve", "ranks"}."""
    n = len(true_ids)
    if not (len(true_categories) == len(ranked_ids) == len(ranked_categories) == n):
        raise ValueError("true_ids, true_categories, ranked_ids and ranked_categories must have one entry per query")
    ranks = [rank_of(t, ids) for t, ids in zip(true_ids, ranked_ids)]
    category_hits = [bool(cats) and cats[0] == c for c, cats in zip(true_categories, ranked_categories)]
    return {
        "summary": summarize(ranks, category_hits, ks),
        "per_category": per_category(ranks, category_hits, true_categories, ks),
        "curve": accuracy_curve(ranks, curve_k),
        "ranks": ranks,
    }


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None
