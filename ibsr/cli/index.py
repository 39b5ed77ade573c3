"""ibsr-index: build and inspect shape indexes."""

from __future__ import annotations

import sys

import click

from ibsr.cpus import usable_cpus
from ibsr.cli.common import IbsrGroup, device_option, index_option, json_option, print_json, weights_option
from ibsr.geometry.mesh import UP_AXES


faiss_option = click.option(
    "--faiss-factory", default=None,
    help="FAISS index factory string for the prefilter (e.g. Flat, IVF4096,Flat, HNSW32). "
         "Default: Flat below 100,000 shapes, else IVF with 4*sqrt(N) lists.")


@click.group(cls=IbsrGroup)
def main():
    """Build and inspect ibsr shape indexes."""


no_wait_option = click.option(
    "--no-wait", is_flag=True,
    help="If another process is writing this index, fail at once (naming it) instead of waiting for it. "
         "Writers (build, reindex-faiss) take the index's write lock; searches never wait.")


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
@click.option("--workers", default=min(4, usable_cpus()), show_default=True, type=click.IntRange(min=0),
              help="Render worker processes (0: render in this process).")
@click.option("--strict", is_flag=True, help="Stop at the first mesh that fails to load or render.")
@click.option("--prune", is_flag=True, help="Remove indexed shapes that are no longer in the catalog.")
@click.option("--repair", is_flag=True,
              help="First run every check of `ibsr-index verify` and remove what it flags (duplicated or damaged "
                   "shapes are re-indexed from CATALOG; an unreadable table is moved to DIR/damaged/ and rebuilt), "
                   "so the index ends as a clean build of CATALOG would.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@no_wait_option
@faiss_option
@ray_option
@device_option
@json_option
def build(catalog, index, weights, up_axis, batch_size, workers, strict, prune, repair, quiet, no_wait, faiss_factory,
          ray_address, device, as_json):
    """Index CATALOG: a folder <category>/<name>.<ext> (or <category>/<name>/model.<ext>),
    or a manifest .csv/.jsonl with shape_id,category,path. Formats: obj off ply stl glb gltf.

    Reruns are incremental: unchanged meshes are skipped, changed ones re-indexed, and a
    killed build resumes where it stopped. One build writes an index at a time: a second one
    waits for the first (or fails at once with --no-wait). Shapes stored twice (by
    concurrent builds of older ibsr versions) are removed and re-indexed."""
    from ibsr.index.layout import resolve_index_dir
    from ibsr.indexer import Indexer

    if ray_address is not None:
        from ibsr.ray_cluster import import_ray
        import_ray()  # not installed: say how to install it before touching the index
    indexer = Indexer(resolve_index_dir(index), weights=weights, up_axis=up_axis, batch_size=batch_size,
                      workers=workers, device=device)
    report = indexer.build(catalog, strict=strict, prune=prune, progress=not quiet, faiss_factory=faiss_factory,
                           ray=ray_address, wait=not no_wait, repair=repair)
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
    if report.duplicates_removed:
        click.echo(f"{report.duplicates_removed} shapes were stored more than once: removed and re-indexed")
    if report.repair is not None:
        click.echo(_repair_summary(report.repair))
    for failure in report.failed:
        click.echo(f"failed: {failure['path']}: {failure['reason']}")


def _repair_summary(repair: dict) -> str:
    if not repair["problems"]:
        return "repair: verify found no problem"
    found = ", ".join(f"{n} {check}" for check, n in sorted(repair["problems"].items()))
    if repair["moved_aside"]:
        return f"repair: found {found}; the damaged table was moved to {repair['moved_aside']} and rebuilt"
    return f"repair: found {found}; {repair['shapes_removed']} shapes re-indexed"


@main.command("reindex-faiss")
@index_option
@faiss_option
@no_wait_option
@json_option
def reindex_faiss(index, faiss_factory, no_wait, as_json):
    """Rebuild the FAISS prefilter from the LanceDB table (e.g. with another --faiss-factory), and
    the flat sidecar (DIR/flat/, what a search memory-maps) when it is missing, stale or damaged."""
    from ibsr.index.layout import resolve_index_dir
    from ibsr.index.writer import IndexWriter

    with IndexWriter.existing(resolve_index_dir(index), wait=not no_wait) as writer:
        written = writer.refresh_derived(faiss_factory, rewrite_faiss=True)
    summary = {**written["faiss"], "flat": written["flat"]}
    if as_json:
        print_json(summary)
        return
    click.echo(f"FAISS {summary['factory']} over {summary['count']} shapes (table version {summary['table_version']})")
    if summary["flat"]:
        click.echo(f"flat sidecar over {summary['flat']['count']} shapes (table version "
                   f"{summary['flat']['table_version']})")


@main.command()
@index_option
@json_option
def info(index, as_json):
    """Describe an index: shapes per category, encoder id, format version, views, size on disk."""
    from ibsr.index.layout import resolve_index_dir
    from ibsr.index.table import ShapeReader

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


@main.command()
@index_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@json_option
def verify(index, quiet, as_json):
    """Check everything a search relies on: metadata readable and of a known format version;
    every table row readable; each shape_id exactly once; views finite, unit-norm, V x D as
    the metadata says; pooled vectors equal to the normalized mean of the views; every encoder
    id equal to the index's; thumbnails decodable; the FAISS prefilter built from the current
    table version; the flat sidecar (DIR/flat/) of the current table version, equal to the table's
    rows, views and view bounds. Reads only (never waits for a writer).

    Exit status 0 when healthy; otherwise 1, with one line per problem: which shape or file,
    what is wrong, what to do (`ibsr-index build CATALOG --repair` fixes any of them)."""
    from ibsr.index.layout import resolve_index_dir
    from ibsr.index.verify import verify_index

    result = verify_index(resolve_index_dir(index), progress=not quiet and not as_json)
    if as_json:
        print_json(result.to_dict())
    else:
        total, printed = sum(result.counts.values()), result.problems[:MAX_PRINTED]
        for problem in printed:
            click.echo(f"problem: {problem.line()}")
        if total > len(printed):
            click.echo(f"... and {total - len(printed)} more problems (--json lists more)")
        for note in result.notes:
            click.echo(f"note: {note}")
        state = "healthy" if result.healthy else f"{total} problems"
        click.echo(f"index {result.index}: {result.shapes} shapes, table version {result.table_version}: {state}")
    sys.exit(0 if result.healthy else 1)


MAX_PRINTED = 200  # problem lines in text output


if __name__ == "__main__":
    main()
