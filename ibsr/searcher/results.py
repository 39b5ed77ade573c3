"""Search results and their three renderings: a text table, JSON, and an HTML page."""

from __future__ import annotations

import base64
import html
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np


@dataclass
class Hit:
    rank: int
    shape_id: str
    category: str
    score: float
    source_path: str
    best_view: int


@dataclass
class SearchResult:
    query: str
    mask_source: str
    hits: list[Hit]
    predicted_categories: list[str] = field(default_factory=list)
    shapes_scored: float | None = None  # fraction of the index's shapes scored exactly for this query
    box: list | None = None  # [x0, y0, x1, y1] searched (the given box clipped to the photo); None: the whole photo

    def to_dict(self) -> dict:
        return asdict(self)


def format_table(result: SearchResult) -> str:
    box = "" if result.box is None else f", box: {','.join(map(str, result.box))}"
    lines = [f"query: {result.query}  (mask: {result.mask_source}{box})",
             f"{'rank':>4}  {'score':>8}  {'category':<12}  {'shape_id':<32}  path"]
    for hit in result.hits:
        lines.append(f"{hit.rank:>4}  {hit.score:>8.4f}  {hit.category:<12}  {hit.shape_id:<32}  {hit.source_path}")
    return "\n".join(lines)


def _data_uri(image: np.ndarray) -> str:
    """PNG data URI of an RGB (H x W x 3) or gray (H x W) uint8 image."""
    if image.ndim == 3:
        image = image[:, :, ::-1]  # OpenCV writes BGR
    ok, png = cv2.imencode(".png", image)
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()


def _thumbnail_uri(png: bytes | None) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode() if png else ""


def _preview(rgb: np.ndarray, max_side: int = 256) -> np.ndarray:
    scale = max_side / max(rgb.shape[:2])
    if scale >= 1:
        return rgb
    size = (max(1, int(rgb.shape[1] * scale)), max(1, int(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def image_data_uri(image: np.ndarray, max_side: int = 256) -> str:
    """PNG data URI of an RGB or gray (bool: mask) image shrunk to `max_side`, for pages."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    return _data_uri(_preview(image, max_side))


PAGE_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
section{border-top:1px solid #ccc;padding:12px 0}
.query img{height:192px;margin-right:8px;border:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:4px 10px;text-align:left;vertical-align:middle}
td img{height:144px}
"""


def html_section(result: SearchResult, query, thumbnails: dict[str, bytes]) -> str:
    """One query's block: the photo, its mask, and a row per hit with the hit's rendered views."""
    mask = query.mask.astype(np.uint8) * 255
    parts = [f"<section><h2>{html.escape(result.query)}</h2><div class='query'>"
             f"<img alt='query' src='{_data_uri(_preview(_with_box(query.rgb, result.box)))}'>"
             f"<img alt='mask ({html.escape(result.mask_source)})' src='{_data_uri(_preview(mask))}'>"
             f"</div><table><tr><th>rank</th><th>score</th><th>shape</th><th>views</th></tr>"]
    for hit in result.hits:
        parts.append(f"<tr><td>{hit.rank}</td><td>{hit.score:.4f}</td>"
                     f"<td>{html.escape(hit.shape_id)}<br><small>{html.escape(hit.source_path)}</small></td>"
                     f"<td><img alt='views of {html.escape(hit.shape_id)}' "
                     f"src='{_thumbnail_uri(thumbnails.get(hit.shape_id))}'></td></tr>")
    parts.append("</table></section>")
    return "".join(parts)


def _with_box(rgb: np.ndarray, box: list | None) -> np.ndarray:
    """The photo with the searched box drawn in, thick enough to survive the preview's shrinking."""
    if box is None:
        return rgb
    thickness = max(1, round(max(rgb.shape[:2]) / 128))
    x0, y0, x1, y1 = (int(v) for v in box)
    return cv2.rectangle(rgb.copy(), (x0, y0), (x1 - 1, y1 - 1), (255, 40, 40), thickness)


def html_page(sections: list[str], title: str = "ibsr search results") -> str:
    """A self-contained page (images inlined as data URIs)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{PAGE_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>")
