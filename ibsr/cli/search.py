"""ibsr-search: find the catalog shapes that match query photos."""

from __future__ import annotations

from pathlib import Path

import click

from ibsr.errors import IbsrError
from ibsr.cli.common import (IbsrCommand, candidates_option, device_option, index_option, json_option,
                             mask_method_option, mask_weights_option, neighbors_option, prefilter_option, print_json,
                             weights_option)
from ibsr.searcher.options import DEFAULT_TOPK, SearchOptions


QUERY_CHUNK = 64  # photos decoded, encoded and reranked together


@click.command(cls=IbsrCommand)
@click.argument("images", nargs=-1, required=True, type=click.Path())
@index_option
@weights_option
@click.option("--topk", default=DEFAULT_TOPK, show_default=True, type=int, help="Number of shapes returned per query.")
@click.option("--mask", "masks", multiple=True, type=click.Path(),
              help="Object mask for a query (repeat once per image, in order). Default: the image's alpha "
                   "channel, else an automatic mask (--mask-method).")
@click.option("--box", "boxes", multiple=True, metavar="X0,Y0,X1,Y1",
              help="Search only the object inside this rectangle of a photo that shows several (repeat once per "
                   "image, in order): pixels of the photo at full size, upright as viewers show it (after EXIF "
                   "rotation, as --mask), x0,y0 the left-top and x1,y1 the right-bottom corner (exclusive), "
                   "integers or floats, e.g. --box 40,25,310,290. The mask (automatic, alpha or --mask) and the "
                   "crop are made inside the box; outside it nothing is object. A box partly outside the photo is "
                   "clipped to it (results give the box used); one wholly outside, empty or inverted is an error.")
@mask_method_option
@mask_weights_option
@click.option("--category", default=None, help="Only return shapes of this category (skips category prediction).")
@prefilter_option("Candidates for the exact rerank",
                  "--json gives each query's shapes_scored: the fraction of the index scored exactly.")
@candidates_option
@neighbors_option
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Also write an HTML page with each query, its mask and each hit's rendered views.")
@device_option
@json_option
def main(images, index, weights, topk, masks, boxes, mask_method, mask_weights, category, prefilter, candidates,
         neighbors, html_path, device, as_json):
    """Rank the shapes of an index for each query photo (JPEG, PNG, WebP, ...), best first."""
    from ibsr.index.layout import resolve_index_dir
    from ibsr.photos.box import Box
    from ibsr.searcher import Searcher
    from ibsr.searcher.results import format_table, html_page

    if masks and len(masks) != len(images):
        raise IbsrError(f"{len(masks)} --mask for {len(images)} images; give one --mask per image, in order, or none")
    if boxes and len(boxes) != len(images):
        raise IbsrError(f"{len(boxes)} --box for {len(images)} images; give one --box per image, in order, or none")
    boxes = [Box.parse(text) for text in boxes]  # a malformed box fails before the model loads
    options = SearchOptions(topk, prefilter, candidates, neighbors, category)  # and so do bad options
    searcher = Searcher(resolve_index_dir(index), weights=weights, device=device, mask_method=mask_method,
                        mask_weights=mask_weights)
    results, sections = [], []
    for start in range(0, len(images), QUERY_CHUNK):  # bounded memory for thousands of photos
        chunk = slice(start, start + QUERY_CHUNK)
        queries = searcher.load_queries(list(images[chunk]), list(masks[chunk]) or None, boxes[chunk] or None)
        found = searcher.search_queries(queries, options)
        results.extend(found)
        if html_path:
            sections.extend(searcher.html_sections(found, queries))
    if html_path:
        Path(html_path).write_text(html_page(sections))
    if as_json:
        print_json([r.to_dict() for r in results])
        return
    click.echo("\n\n".join(format_table(r) for r in results))
    if html_path:
        click.echo(f"\nwrote {html_path}")


if __name__ == "__main__":
    main()
