"""`ibsr-data`: synthetic data for demos, tests and benchmarks.

    ibsr-data synth --out data/demo --categories chair,table --shapes-per-category 50 \
        --queries-per-shape 4 --seed 7
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path

import click

from ibsr.errors import IbsrError
from ibsr.geometry.mesh import UP_AXES

PHOTO_STYLES = ("default", "home", "heldout")  # ibsr.synth.photo.STYLES, without importing the renderer


@click.group()
def main():
    """Synthetic data: procedural catalogs of everyday objects and query photos."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print {\"categories\": [...], \"groups\": {...}} as JSON.")
def categories(as_json):
    """List the synthetic categories and the named groups that --categories accepts."""
    from ibsr.synth.shapes import CATEGORIES, GROUPS

    if as_json:
        click.echo(json.dumps({"categories": list(CATEGORIES), "groups": {k: list(v) for k, v in GROUPS.items()}}))
        return
    click.echo(f"{len(CATEGORIES)} categories: {', '.join(CATEGORIES)}")
    for name, members in GROUPS.items():
        click.echo(f"group {name} ({len(members)}): {', '.join(members)}")


def _categories(ctx, param, value):
    from ibsr.synth.shapes import check_categories

    try:
        return check_categories(value)
    except IbsrError as error:
        raise click.BadParameter(error.message) from None


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: catalog/<category>/*.<format>, catalog.jsonl, queries/, queries.jsonl.")
@click.option("--categories", default="furniture", show_default=True, callback=_categories,
              help="Comma-separated categories and group names, read left to right; '-name' leaves "
                   "categories out. Groups: 'furniture' (chair, table, sofa, bed, lamp, cabinet, stool, "
                   "desk), 'objects' (the other everyday objects: mug, bottle, car, airplane, ...), 'all'; "
                   "e.g. 'all', 'all,-car', 'furniture,mug'. `ibsr-data categories` lists every category "
                   "and group.")
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
@click.option("--photo-style", default="default", show_default=True, type=click.Choice(PHOTO_STYLES),
              help="Look of the query photos. 'default': what training uses (rooms, shops and studios, "
                   "soft indoor light, plain and cluttered backdrops). 'home': furniture around the object, "
                   "books on shelves, tight and cut framing, warm light. 'heldout': a style training never "
                   "sees (outdoors in hard sun, or a dark stage with coloured lights and toon shading), "
                   "to measure how a model generalizes to an unseen photo style.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes that generate and render shapes in parallel (the files are the same "
                   "for any number of workers).")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON summary on stdout instead of a text line (no progress bar).")
def synth(out_dir, categories, shapes_per_category, queries_per_shape, first_photo, seed, size, fmt, photo_style,
          workers, as_json):
    """Write a procedural catalog (furniture and other everyday objects) and query photos of its shapes."""
    from tqdm import tqdm

    from ibsr.cpus import process_pool
    from ibsr.synth.catalog import write_catalog_shape, write_jsonl

    start = time.perf_counter()
    shapes, queries = [], []
    tasks = [(c, i) for c in categories for i in range(shapes_per_category)]
    write = partial(write_catalog_shape, out_dir=out_dir, seed=seed, fmt=fmt, queries_per_shape=queries_per_shape,
                    size=size, first_photo=first_photo, photo_style=photo_style)
    try:
        with tqdm(total=len(tasks), unit="shape", disable=as_json, file=sys.stderr) as bar, \
                process_pool(workers if workers > 1 else 0) as pool:
            mapper = pool.map if pool is not None else map
            # map keeps the task order, so the jsonl files do not depend on the worker count
            for shape_record, query_records in mapper(_star(write), tasks):
                shapes.append(shape_record)
                queries.extend(query_records)
                bar.update(1)
        write_jsonl(out_dir / "catalog.jsonl", shapes)
        if queries_per_shape:
            write_jsonl(out_dir / "queries.jsonl", queries)
    except (IbsrError, OSError) as error:
        raise click.ClickException(str(error)) from None
    summary = {"out": str(out_dir), "catalog": str(out_dir / "catalog"), "shapes": len(shapes),
               "queries": len(queries), "categories": categories, "seed": seed, "format": fmt,
               "photo_style": photo_style, "seconds": round(time.perf_counter() - start, 2)}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"wrote {len(shapes)} shapes to {summary['catalog']} and {len(queries)} "
                   f"query photos in {summary['seconds']} s")


@main.command()
@click.argument("catalog", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset folder: photos/, catalog.jsonl (the usable shapes), queries.jsonl (their photos), "
                   "what `ibsr-train` and `ibsr-eval` read. Photos already there are kept (a rerun resumes).")
@click.option("--photos-per-shape", default=6, show_default=True, type=click.IntRange(min=1),
              help="Photos rendered per mesh (photo k of a mesh is a pure function of the seed).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of the photos.")
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=32, max=2048),
              help="Photo side length in pixels.")
@click.option("--up-axis", default="y", show_default=True, type=click.Choice(UP_AXES),
              help="The catalog's up axis, as `ibsr-index build --up-axis`.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=0),
              help="Worker processes that render photos in parallel (0 or 1: in this process).")
@click.option("--style", default="default", show_default=True, type=click.Choice(PHOTO_STYLES),
              help="Photo style: default (rooms, studios, plain backdrops), home (furniture around the "
                   "object, books on shelves, tight and cut framing, warm light, a material per mesh "
                   "component), heldout (outdoor and stage: for measuring only).")
@click.option("--per-category", default=0, show_default=True, type=click.IntRange(min=0),
              help="Balance the categories: a mesh of a category with n meshes gets max(--photos-per-shape, "
                   "ceil(N / n)) photos (0 = --photos-per-shape for every mesh).")
@click.option("--front-azimuth", default=0.0, show_default=True, type=click.FloatRange(-360, 360),
              help="Where the meshes' fronts face, in degrees about the up axis (0 = +z, the synthetic "
                   "catalog's convention; Pix3D's meshes face -z: 180). Photos are taken mostly from the front.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (no progress bar).")
def photos(catalog, out_dir, photos_per_shape, seed, size, up_axis, workers, style, per_category, front_azimuth,
           as_json):
    """Photograph every mesh of CATALOG (a folder or a manifest) with the synthetic photo machinery
    (materials, rooms, lights, occluders, camera) and write a dataset of it: real geometry for
    training, or rendered photos of real meshes for a benchmark. Unreadable meshes are reported
    and left out."""
    from ibsr.indexer.discover import discover
    from ibsr.synth.mesh_photos import photograph_catalog, write_dataset

    start = time.perf_counter()
    try:
        entries = discover(catalog)
        done, skipped = photograph_catalog(entries, out_dir / "photos", photos_per_shape, seed, size, up_axis,
                                           workers if workers > 1 else 0, progress=not as_json, style=style,
                                           per_category=per_category, front_azimuth=front_azimuth)
        if not done:
            raise IbsrError("no mesh of the catalog could be photographed", catalog)
        count = write_dataset(out_dir, done)
    except (IbsrError, OSError) as error:
        raise click.ClickException(str(error)) from None
    summary = {"out": str(out_dir), "shapes": len(done), "queries": count, "skipped": skipped, "seed": seed,
               "seconds": round(time.perf_counter() - start, 2)}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"wrote {count} photos of {len(done)} shapes to {out_dir}"
                   + (f" ({len(skipped)} meshes skipped)" if skipped else "") + f" in {summary['seconds']} s")


@main.command()
@click.argument("datasets", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The merged dataset folder: catalog.jsonl + queries.jsonl with absolute paths (no file "
                   "is copied).")
@click.option("--max-per-shape", type=int, default=None,
              help="At most this many photos of each shape from each dataset (the first in its queries "
                   "file), e.g. to join two photo styles of one catalog without doubling its share of the "
                   "photos. Default: all.")
def merge(datasets, out_dir, max_per_shape):
    """Merge dataset folders (`ibsr-data synth` or `ibsr-data photos` outputs) into one, to train
    on several worlds at once, e.g. procedural shapes and real meshes. A shape id in two datasets
    must name the same mesh (two photo sets of one catalog, e.g. two photo styles: its photos are
    joined); one id for two different meshes is an error."""
    from ibsr.train.merge import merge_datasets

    try:
        shapes, queries = merge_datasets(datasets, out_dir, max_per_shape)
    except (IbsrError, OSError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"merged {len(datasets)} datasets into {out_dir}: {shapes} shapes, {queries} photos")


@main.command("real-split")
@click.argument("real_train", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for train.csv (the meshes training may use) and heldout.csv (the benchmark's).")
def real_split(real_train, out_dir):
    """Split a real_train folder (real CAD meshes) by the fixed rule of `ibsr.eval.real_sets`:
    manifests of the part training may use and of the held-out part the benchmark scores on."""
    from ibsr.eval.real_sets import split_real_train, write_manifest

    try:
        train, heldout = split_real_train(real_train)
        write_manifest(train, out_dir / "train.csv")
        write_manifest(heldout, out_dir / "heldout.csv")
    except (IbsrError, OSError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{len(train)} meshes for training in {out_dir / 'train.csv'}, {len(heldout)} held out in "
               f"{out_dir / 'heldout.csv'}")


class _star:
    """f(*args) as a picklable one-argument callable for a process pool's `map`."""

    def __init__(self, f):
        self.f = f

    def __call__(self, args):
        return self.f(*args)


if __name__ == "__main__":
    main()
