"""ibsr-eval: measure retrieval accuracy and speed on labelled query photos.

    ibsr-eval --index ibsr_index --queries data/queries.jsonl
    ibsr-eval --index pix3d_index --queries pix3d/pix3d.json --weights weights/pix3d.pt --json
    ibsr-eval --index ibsr_index --queries data/queries.jsonl --report eval.html --shape-metrics
    ibsr-eval --index ibsr_index --queries data/queries.jsonl --ray      # query loading on Ray
    ibsr-eval --index ibsr_index --queries data/queries.jsonl --ignore-masks --mask-method grabcut
"""

from __future__ import annotations

import dataclasses
import sys
import time

import click

from ibsr.cli.common import (IbsrCommand, candidates_option, device_option, index_option, json_option,
                             mask_method_option, mask_weights_option, neighbors_option, prefilter_option, print_json,
                             weights_option)


@click.command(cls=IbsrCommand)
@index_option
@click.option("--queries", "queries_path", required=True, type=click.Path(dir_okay=False),
              help="Labelled queries: an ibsr queries.jsonl (lines of image, mask, shape_id, category, box; paths "
                   "relative to the file; mask, category and box optional; box = [x0, y0, x1, y1], the object's "
                   "rectangle in a photo of several, as ibsr-search --box) or Pix3D's pix3d.json (img, mask, model, "
                   "category; the shape id is <category>/<name> of model/<category>/<name>/model.obj, as "
                   "`ibsr-index build pix3d/model` names it).")
@weights_option
@click.option("--ignore-masks", is_flag=True,
              help="Ignore the queries' mask files, so every photo gets its alpha channel or the automatic mask "
                   "(--mask-method): measures retrieval as a user without masks gets it.")
@mask_method_option
@mask_weights_option
@click.option("--batch-size", default=64, show_default=True, type=int,
              help="Queries loaded and searched together (memory is bounded by one batch).")
@click.option("--limit", default=None, type=int,
              help="Evaluate only the first N queries (of those whose shape is in the index).")
@click.option("--topk", default=None, type=int,
              help="Hits ranked per query. Default: every shape of the index, so ranks and MRR are exact; "
                   "a smaller value (at least 10) is faster on huge indexes, and MRR becomes a lower bound.")
@prefilter_option("Candidates for the exact rerank, as in ibsr-search",
                  "With 'none' the ranks are the method's own accuracy; a true shape that the prefilter leaves out "
                  "counts as a miss (see 'found').")
@candidates_option
@neighbors_option
@click.option("--oracle-category", is_flag=True,
              help="Rank only the shapes of each query's true category (as if every search passed --category).")
@click.option("--strict", is_flag=True,
              help="Fail on a query whose shape is not in the index or whose photo cannot be read "
                   "(default: exclude it from the metrics, count it and warn).")
@click.option("--per-query", is_flag=True, help="With --json: include every query's record (truth, rank, top-10 ids).")
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML page: summary, latency per stage, per-category bars, "
                   "accuracy versus k, category confusion, and a gallery of failed and correct queries with "
                   "their top-5 shapes.")
@click.option("--shape-metrics", is_flag=True,
              help="Chamfer distance and voxel IoU between each query's top-1 shape and its true shape (as "
                   "Pix3D's evaluation), from the catalog meshes at the index's source paths.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Decode, mask and encode the query photos on Ray workers (pip install 'ibsr[ray]'); the "
                   "rerank stays here, in batches. --ray alone starts Ray on this machine; --ray auto joins the "
                   "cluster `ray start --head` runs here; --ray ray://HOST:10001 a remote one.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr. Default: when stderr is a terminal.")
@device_option
@json_option
def main(index, queries_path, weights, ignore_masks, mask_method, mask_weights, batch_size, limit, topk, prefilter,
         candidates, neighbors, oracle_category, strict, per_query, report_path, shape_metrics, ray_address, progress,
         device, as_json):
    """Report top-1/5/10 instance accuracy, category accuracy, mean reciprocal rank, a per-category
    table and queries/s of an index on labelled query photos."""
    from ibsr.eval import evaluate, format_report, read_queries
    from ibsr.index.layout import resolve_index_dir
    from ibsr.searcher import Searcher, SearchOptions

    if ray_address is not None:
        from ibsr.ray_cluster import import_ray
        import_ray()  # not installed: say how to install it first
    queries = read_queries(queries_path)  # before opening the index: a bad file fails fast
    search_options = SearchOptions(prefilter=prefilter, candidates=candidates, neighbors=neighbors)  # so do bad options
    if ignore_masks:
        queries = [dataclasses.replace(q, mask=None) for q in queries]
    start = time.perf_counter()
    searcher = Searcher(resolve_index_dir(index), weights=weights, device=device, mask_method=mask_method,
                        mask_weights=mask_weights)
    open_s = time.perf_counter() - start
    options = dict(options=search_options, batch_size=batch_size, topk=topk, oracle_category=oracle_category,
                   strict=strict, limit=limit, source=str(queries_path),
                   progress=sys.stderr.isatty() if progress is None else progress,
                   warn=lambda message: click.echo(f"warning: {message}", err=True))
    if ray_address is None:
        report = evaluate(searcher, queries, **options)
    else:
        from ibsr.eval.ray_eval import evaluate_with_ray
        report = evaluate_with_ray(searcher, queries, address=ray_address, **options)
    report.timings["open_s"] = open_s
    extra = {}
    if shape_metrics:
        from ibsr.eval.report import format_shape_metrics, shape_metrics as measure_shapes
        extra["shape_metrics"] = measure_shapes(report, searcher)
    if report_path:
        from ibsr.eval.report import measure_latency, write_html_report
        extra["latency"] = measure_latency(searcher, report, options=search_options)
        extra["report"] = str(write_html_report(report_path, report, searcher, extra["latency"],
                                                extra.get("shape_metrics")))
    if as_json:
        data = {**report.to_dict(per_query=per_query), **extra}
        if "shape_metrics" in data and not per_query:
            data["shape_metrics"] = {k: v for k, v in data["shape_metrics"].items() if k != "per_query"}
        print_json(data)
        return
    click.echo(format_report(report))
    if shape_metrics:
        click.echo(format_shape_metrics(extra["shape_metrics"]))
    if report_path:
        click.echo(f"report: {extra['report']}")


if __name__ == "__main__":
    main()
