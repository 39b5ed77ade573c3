"""Evaluation queries: photos with their true shape, read from ibsr's or Pix3D's files.

Two formats, told apart by the file's suffix (`.jsonl`/`.ndjson` vs `.json`), else by its first
character (`[` = a JSON list):

- ibsr `queries.jsonl` (what `ibsr-data synth` writes): one object per line with `image`,
  `shape_id`, and optionally `mask`, `category` and `box` (`[x0, y0, x1, y1]`: the object's
  rectangle in a photo of several, as `ibsr-search --box`); paths relative to the file's folder.
  A missing category is taken from the index.
- Pix3D's `pix3d.json`: a JSON list of objects with `img`, `mask`, `model`, `category` (other
  keys ignored); paths relative to the json's folder. The true shape id is the one that
  `ibsr-index build <pix3d>/model` gives the model: `<category>/<name>` for
  `model/<category>/<name>/model.obj` (and `<category>/<stem>` for a flat
  `<category>/<stem>.obj`). A JSON list of ibsr records (`image`, `shape_id`) is read too.

Every problem (not JSON, a missing key, an image that does not exist) is an `IbsrError` naming
the file and the line. Queries whose shape is not in the index are split off by `split_known`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ibsr.errors import IbsrError
from ibsr.photos.box import Box

JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class EvalQuery:
    image: Path
    mask: Path | None
    shape_id: str
    category: str | None  # None: take the index's category of shape_id
    line: int  # line of the queries file where the record starts
    box: Box | None = None  # the object's rectangle in the photo (ibsr-search --box); None: the whole photo

    def to_dict(self) -> dict:
        return {"image": str(self.image), "mask": None if self.mask is None else str(self.mask),
                "shape_id": self.shape_id, "category": self.category, "line": self.line,
                "box": None if self.box is None else self.box.to_list()}


def read_queries(path: str | Path, check_files: bool = True) -> list[EvalQuery]:
    """The queries of an ibsr queries.jsonl or a Pix3D pix3d.json, in file order."""
    path = Path(path)
    if not path.is_file():
        raise IbsrError("queries file not found; pass an ibsr queries.jsonl or Pix3D's pix3d.json", path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IbsrError(f"cannot read queries file ({exc})", path) from None
    suffix = path.suffix.lower()
    is_list = suffix == ".json" or (suffix not in JSONL_SUFFIXES and text.lstrip().startswith("["))
    rows = _json_list(text, path) if is_list else _jsonl(text, path)
    queries = [_record(row, line, path) for line, row in rows]
    if not queries:
        raise IbsrError("queries file lists no queries", path)
    if check_files:
        for q in queries:
            for kind, file in (("image", q.image), ("mask", q.mask)):
                if file is not None and not file.is_file():
                    raise IbsrError(f"line {q.line}: {kind} {file} not found", path)
    return queries


def pix3d_shape_id(model: str, category: str | None = None) -> str:
    """The indexer's shape id of a Pix3D `model` path (`model/<category>/<name>/model.obj`).

    The category folder is the last path folder named `category` (when given), else the
    third-from-last part: the shape is `<category>/<next folder>`, or `<category>/<file stem>`
    when the mesh lies directly in the category folder.
    """
    parts = PurePosixPath(str(model).replace("\\", "/")).parts
    folders = parts[:-1]
    at = None
    if category:
        at = max((i for i, part in enumerate(folders) if part == category), default=None)
    if at is None:
        if len(parts) < 3:
            raise ValueError(f"cannot tell category and shape from model path {model!r}")
        at = len(parts) - 3
    if at == len(parts) - 2:  # <category>/<stem>.<ext>
        return f"{parts[at]}/{PurePosixPath(parts[-1]).stem}"
    return f"{parts[at]}/{parts[at + 1]}"


def split_known(queries: Iterable[EvalQuery], shape_ids: Iterable[str]) -> tuple[list[EvalQuery], list[EvalQuery]]:
    """(queries whose shape is in the index, the others), each in file order."""
    known_ids = set(shape_ids)
    known, unknown = [], []
    for q in queries:
        (known if q.shape_id in known_ids else unknown).append(q)
    return known, unknown


# --------------------------------------------------------------------------- parsing


def _jsonl(text: str, path: Path) -> list[tuple[int, object]]:
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((line_no, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise IbsrError(f"line {line_no}: not JSON ({exc.msg}); each line must be one JSON object", path) from None
    return rows


def _json_list(text: str, path: Path) -> list[tuple[int, object]]:
    """The items of a JSON list, each with the line it starts on."""
    decoder = json.JSONDecoder()
    rows: list[tuple[int, object]] = []
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def fail(pos: int, what: str):
        raise IbsrError(f"line {line_at(pos)}: not valid JSON ({what}); expected a JSON list of objects", path)

    pos = _skip_space(text, 0)
    if pos >= len(text) or text[pos] != "[":
        fail(pos, "expected '['")
    pos = _skip_space(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return rows
    while True:
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            fail(exc.pos, exc.msg)
        rows.append((line_at(pos), item))
        pos = _skip_space(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_space(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            break
        fail(pos, "expected ',' or ']'")
    if _skip_space(text, pos + 1) != len(text):
        fail(pos + 1, "extra data after the list")
    return rows


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _record(row, line: int, path: Path) -> EvalQuery:
    if not isinstance(row, dict):
        raise IbsrError(f"line {line}: expected a JSON object, got {type(row).__name__}", path)
    root = path.parent
    if "img" in row or "model" in row:  # Pix3D
        _require(row, ("img", "model"), line, path)
        category = _text(row, "category", line, path)
        try:
            shape_id = pix3d_shape_id(row["model"], category)
        except ValueError as exc:
            raise IbsrError(f"line {line}: {exc}", path) from None
        image, mask = row["img"], row.get("mask")
    else:
        _require(row, ("image", "shape_id"), line, path)
        shape_id, category = str(row["shape_id"]).strip(), _text(row, "category", line, path)
        image, mask = row["image"], row.get("mask")
    return EvalQuery(_resolve(root, image, "image", line, path), _resolve(root, mask, "mask", line, path)
                     if mask else None, shape_id, category, line, _box(row.get("box"), line, path))


def _box(value, line: int, path: Path) -> Box | None:
    if value is None:
        return None
    try:
        return Box.from_value(value)
    except IbsrError as exc:
        raise IbsrError(f"line {line}: {exc}", path) from None


def _require(row: dict, keys, line: int, path: Path) -> None:
    missing = [k for k in keys if not (isinstance(row.get(k), str) and row[k].strip())]
    if missing:
        raise IbsrError(f"line {line}: missing {', '.join(missing)} (need {', '.join(keys)})", path)


def _text(row: dict, key: str, line: int, path: Path) -> str | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise IbsrError(f"line {line}: {key} must be a string, got {type(value).__name__}", path)
    return value.strip() or None


def _resolve(root: Path, value, key: str, line: int, path: Path) -> Path:
    if not isinstance(value, str):
        raise IbsrError(f"line {line}: {key} must be a path string, got {type(value).__name__}", path)
    p = Path(value)
    return p if p.is_absolute() else root / p
