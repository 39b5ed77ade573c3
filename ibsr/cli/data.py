"""`ibsr-data`: synthetic data for demos, tests and benchmarks.

    ibsr-data synth --out data/demo --categories chair,table --shapes-per-category 50 \
        --queries-per-shape 4 --seed 7
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from ibsr.errors import IbsrError


@click.group()
def main():
    """Synthetic data: procedural furniture catalogs and query photos."""


def _categories(ctx, param, value):
    from ibsr.synth import CATEGORIES

    names = [c.strip() for c in value.split(",") if c.strip()]
    unknown = [c for c in names if c not in CATEGORIES]
    if unknown or not names:
        raise click.BadParameter(f"unknown {', '.join(unknown) or 'empty list'}; "
                                 f"choose from {','.join(CATEGORIES)}")
    return names


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: catalog/<category>/*.<format>, catalog.jsonl, queries/, queries.jsonl.")
@click.option("--categories", default="chair,table,sofa,bed,lamp,cabinet,stool,desk",
              show_default=True, callback=_categories,
              help="Comma-separated categories to generate.")
@click.option("--shapes-per-category", default=50, show_default=True, type=click.IntRange(min=1),
              help="Shapes generated per category.")
@click.option("--queries-per-shape", default=4, show_default=True, type=click.IntRange(min=0),
              help="Query photos (JPEG + mask PNG) rendered per shape; 0 writes no queries.")
@click.option("--first-photo", default=0, show_default=True, type=click.IntRange(min=0),
              help="Number the photos of each shape from this index: photos K.. of the same shapes are new "
                   "photos, e.g. held-out photos of training shapes that training never saw.")
@click.option("--seed", default=7, show_default=True, type=int,
              help="Random seed: the same seed writes byte-identical files.")
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=16, max=2048),
              help="Query photo side length in pixels.")
@click.option("--format", "fmt", default="obj", show_default=True,
              type=click.Choice(["obj", "ply", "off", "stl", "glb"]), help="Mesh file format.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON summary on stdout instead of a text line (no progress bar).")
def synth(out_dir, categories, shapes_per_category, queries_per_shape, first_photo, seed, size, fmt, as_json):
    """Write a procedural furniture catalog and query photos of its shapes."""
    from tqdm import tqdm

    from ibsr.synth import iter_shapes, write_shape, write_shape_queries
    from ibsr.synth.catalog import write_jsonl

    start = time.perf_counter()
    shapes, queries = [], []
    total = len(categories) * shapes_per_category
    try:
        with tqdm(total=total, unit="shape", disable=as_json, file=sys.stderr) as bar:
            for shape in iter_shapes(categories, shapes_per_category, seed):
                shapes.append(write_shape(shape, out_dir, fmt))
                queries.extend(write_shape_queries(shape, out_dir, queries_per_shape, seed, size, first=first_photo))
                bar.update(1)
        write_jsonl(out_dir / "catalog.jsonl", shapes)
        if queries_per_shape:
            write_jsonl(out_dir / "queries.jsonl", queries)
    except (IbsrError, OSError) as error:
        raise click.ClickException(str(error)) from None
    summary = {"out": str(out_dir), "catalog": str(out_dir / "catalog"), "shapes": len(shapes),
               "queries": len(queries), "categories": categories, "seed": seed, "format": fmt,
               "seconds": round(time.perf_counter() - start, 2)}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"wrote {len(shapes)} shapes to {summary['catalog']} and {len(queries)} "
                   f"query photos in {summary['seconds']} s")


if __name__ == "__main__":
    main()
