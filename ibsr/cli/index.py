"""ibsr-index: build and inspect shape indexes."""

from __future__ import annotations

import os

import click

from ibsr.indexer.render import UP_AXES
from ibsr.cli.common import IbsrGroup, device_option, index_option, json_option, print_json, weights_option


faiss_option = click.option(
    "--faiss-factory", default=None,
    help="FAISS index factory string for the prefilter (e.g. Flat, IVF4096,Flat, HNSW32). "
         "Default: Flat below 100,000 shapes, else IVF with 4*sqrt(N) lists.")


@click.group(cls=IbsrGroup)
def main():
    """Build and inspect ibsr shape indexes."""


ray_option = click.option(
    "--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
    help="Render and encode on Ray (pip install 'ibsr[ray]'): --ray alone starts Ray on this machine; "
         "--ray auto joins the cluster `ray start --head` runs here; --ray ray://HOST:10001 a remote one. "
         "Same index as without Ray; --workers is then unused.")


@main.command()
@click.argument("catalog", type=click.Path())
@index_option
@weights_option
@click.option("--up-axis", default="y", show_default=True, type=click.Choice(UP_AXES),
              help="Which axis of the mesh files points up (ShapeNet: y; many CAD/scan files: z).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Shapes encoded and committed together; a killed build loses at most one batch.")
@click.option("--workers", default=min(4, os.cpu_count() or 1), show_default=True, type=click.IntRange(min=0),
              help="Render worker processes (0: render in this process).")
@click.option("--strict", is_flag=True, help="Stop at the first mesh that fails to load or render.")
@click.option("--prune", is_flag=True, help="Remove indexed shapes that are no longer in the catalog.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@faiss_option
@ray_option
@device_option
@json_option
def build(catalog, index, weights, up_axis, batch_size, workers, strict, prune, quiet, faiss_factory, ray_address,
          device, as_json):
    """Index CATALOG: a folder <category>/<name>.<ext> (or <category>/<name>/model.<ext>),
    or a manifest .csv/.jsonl with shape_id,category,path. Formats: obj off ply stl glb gltf.

    Reruns are incremental: unchanged meshes are skipped, changed ones re-indexed, and a
    killed build resumes where it stopped."""
    from ibsr.indexer import Indexer, resolve_index_dir

    if ray_address is not None:
        from ibsr.indexer.ray_backend import import_ray
        import_ray()  # not installed: say how to install it before touching the index
    indexer = Indexer(resolve_index_dir(index), weights=weights, up_axis=up_axis, batch_size=batch_size,
                      workers=workers, device=device)
    report = indexer.build(catalog, strict=strict, prune=prune, progress=not quiet, faiss_factory=faiss_factory,
                           ray=ray_address)
    summary = {**report.__dict__, **report.rates()}
    if as_json:
        print_json(summary)
        return
    click.echo(f"index {report.index}: {report.indexed} shapes indexed, {report.unchanged} unchanged, "
               f"{len(report.failed)} failed, {report.pruned} pruned ({report.wall_seconds:.1f} s)")
    rates = report.rates()
    if report.indexed:
        click.echo(f"rates: render {rates['render_shapes_per_s']} shapes/s per worker, "
                   f"encode {rates['encode_shapes_per_s']} shapes/s, overall {rates['overall_shapes_per_s']} shapes/s")
    if report.not_in_catalog and not prune:
        click.echo(f"{report.not_in_catalog} indexed shapes are not in this catalog (--prune removes them)")
    for failure in report.failed:
        click.echo(f"failed: {failure['path']}: {failure['reason']}")


@main.command("reindex-faiss")
@index_option
@faiss_option
@json_option
def reindex_faiss(index, faiss_factory, as_json):
    """Rebuild the FAISS prefilter from the LanceDB table (e.g. with another --faiss-factory)."""
    from ibsr.indexer import resolve_index_dir
    from ibsr.indexer.faiss_index import rebuild_faiss

    summary = rebuild_faiss(resolve_index_dir(index), faiss_factory)
    if as_json:
        print_json(summary)
    else:
        click.echo(f"FAISS {summary['factory']} over {summary['count']} shapes (table version {summary['table_version']})")


@main.command()
@index_option
@json_option
def info(index, as_json):
    """Describe an index: shapes per category, encoder id, format version, views, size on disk."""
    from ibsr.indexer import ShapeReader, resolve_index_dir

    summary = ShapeReader(resolve_index_dir(index)).info()
    if as_json:
        print_json(summary)
        return
    for key, value in summary.items():
        if key != "categories":
            click.echo(f"{key:>15}: {value}")
    click.echo("     categories:")
    for category, count in summary["categories"].items():
        click.echo(f"{count:>15}  {category}")


if __name__ == "__main__":
    main()
