"""ibsr-demo: the whole job on an embedded default, end to end.

Generates a furniture catalog the shipped model never saw (its own seed) and photos of some
of its shapes, indexes the catalog, searches every photo, and shows where the photographed
shape landed in the ranking.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from ibsr.cli.common import IbsrCommand, print_json, weights_option
from ibsr.eval.queries import EvalQuery, read_queries

DEMO_CATEGORIES = ("chair", "table", "sofa", "bed", "lamp", "cabinet", "stool", "desk")


@click.command(cls=IbsrCommand)
@click.option("--out", default="ibsr_demo", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the generated catalog, photos, index and results page.")
@click.option("--shapes-per-category", default=10, show_default=True, type=click.IntRange(min=1),
              help="Catalog shapes generated per category (8 categories).")
@click.option("--photos-per-category", default=2, show_default=True, type=click.IntRange(min=1),
              help="Query photos: this many shapes of each category are photographed once.")
@click.option("--seed", default=2026, show_default=True, type=int,
              help="Seed of the generated catalog and photos (the shipped model trained on other seeds).")
@click.option("--topk", default=5, show_default=True, type=click.IntRange(min=1), help="Hits shown per photo.")
@weights_option
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def main(out, shapes_per_category, photos_per_category, seed, topk, weights, as_json):
    """Generate a catalog and photos, index the catalog, search each photo, show the results."""
    from ibsr.indexer import Indexer
    from ibsr.searcher import Searcher
    from ibsr.searcher.results import html_page
    from ibsr.synth import catalog_shape, write_catalog, write_queries

    say = (lambda *a, **k: None) if as_json else click.echo
    if not (out / "queries.jsonl").is_file():
        say(f"generating {len(DEMO_CATEGORIES)} x {shapes_per_category} shapes and their photos in {out}/ ...")
        write_catalog(out, DEMO_CATEGORIES, shapes_per_category, seed)
        photographed = [catalog_shape(c, i, seed) for c in DEMO_CATEGORIES
                        for i in range(min(photos_per_category, shapes_per_category))]
        write_queries(out, photographed, 1, seed)
    if _built_by_another_model(out / "index", weights):
        say(f"{out / 'index'} was built with another model: building it again")
        shutil.rmtree(out / "index")
    report = Indexer(out / "index", weights=weights).build(out / "catalog", progress=not as_json)
    say(f"indexed {report.indexed} shapes ({report.unchanged} already indexed) in {out / 'index'}")

    records = read_queries(out / "queries.jsonl")
    searcher = Searcher(out / "index", weights=weights)
    # The photos come with their true object masks, as Pix3D's evaluation does.
    queries = searcher.load_queries([r.image for r in records], [r.mask for r in records])
    results = searcher.search_queries(queries, topk=topk)
    (out / "results.html").write_text(html_page(searcher.html_sections(results, queries), "ibsr demo"))
    rows = [_row(record, result, out) for record, result in zip(records, results)]
    if as_json:
        print_json({"results": [r.to_dict() for r in results], "summary": _summary(rows)})
        return
    _show(rows, topk)
    click.echo(f"\n{_summary(rows)['line']}\nresults page with the photos and hit renderings: {out / 'results.html'}")


def _built_by_another_model(index: Path, weights) -> bool:
    """Whether the demo's own index (generated, so safe to rebuild) holds another model's
    embeddings, e.g. from a run before the shipped model was updated."""
    from ibsr.index.layout import META_FILE, IndexMeta
    from ibsr.model import checkpoint_id, default_weights_path

    if not (index / META_FILE).is_file():
        return False
    return IndexMeta.read(index).encoder_id != checkpoint_id(weights or default_weights_path())


def _row(record: EvalQuery, result, out: Path) -> dict:
    ids = [h.shape_id for h in result.hits]
    rank = ids.index(record.shape_id) + 1 if record.shape_id in ids else None
    return {"photo": record.image.relative_to(out).as_posix(), "truth": record.shape_id, "rank": rank, "hits": ids,
            "top1_category_ok": bool(result.hits) and result.hits[0].category == record.category}


def _show(rows: list[dict], topk: int) -> None:
    click.echo(f"\n{'photo':<34} {'true shape':<18} {'rank':>5}   top hits")
    for row in rows:
        rank = str(row["rank"]) if row["rank"] else f">{topk}"
        mark = "ok " if row["rank"] == 1 else "   "
        click.echo(f"{row['photo']:<34} {row['truth']:<18} {rank:>5} {mark} {', '.join(row['hits'][:3])}")


def _summary(rows: list[dict]) -> dict:
    n = len(rows)
    top1 = sum(r["rank"] == 1 for r in rows)
    topk = sum(r["rank"] is not None for r in rows)
    category = sum(r["top1_category_ok"] for r in rows)
    return {"photos": n, "top1": top1, "topk": topk, "top1_category": category,
            "line": f"correct shape at rank 1: {top1}/{n}; within the shown hits: {topk}/{n}; "
                    f"right category at rank 1: {category}/{n}"}


if __name__ == "__main__":
    main()
