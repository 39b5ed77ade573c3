"""Real meshes and real photographs kept outside the repository (`../shared/real_*`).

Two folders, read in place and never copied:

- `real_train/meshes/<category>/pix3d_<name>.ply`: real CAD meshes (Pix3D). They are split once,
  by a rule that depends only on each file's name, into a part training may use and a held-out
  part that no training sees: every shape of Pix3D's catch-all categories (`misc`, `tool`) and
  a third of the others (SHA-1 of the file stem, first 32 bits, mod 3 == 0). The held-out part
  is the benchmark's real distractors and its rendered-photo set, so a model trained on the
  rest is never scored on a shape it saw.
- `real_dev/`: real photographs of IKEA products with their meshes, for measuring and choosing
  models only (`queries.jsonl` lines of image, path under meshes/, category, family).

A product *family* is the IKEA line of a Pix3D mesh (`pix3d_ikea_billy_3` -> `billy`); models
of one family differ mostly in size, so "the first hit is of the right family" is reported
beside the exact top-1. Shapes outside IKEA are their own family.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

from ibsr.errors import IbsrError
from ibsr.indexer.discover import MANIFEST_FIELDS, CatalogEntry, discover

HELD_OUT_CATEGORIES = ("misc", "tool")  # Pix3D's mixed bags: distractors only, never training
HELD_OUT_MODULUS = 3  # one shape in three of every other category is held out


def is_held_out(entry: CatalogEntry) -> bool:
    """Whether a real_train shape belongs to the held-out part (a pure function of its name)."""
    if entry.category in HELD_OUT_CATEGORIES:
        return True
    stem = Path(entry.path).stem
    return int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) % HELD_OUT_MODULUS == 0


def split_real_train(root) -> tuple[list[CatalogEntry], list[CatalogEntry]]:
    """(shapes training may use, held-out shapes) of a real_train folder, each sorted by id."""
    meshes = Path(root) / "meshes"
    entries = discover(meshes if meshes.is_dir() else Path(root))
    return [e for e in entries if not is_held_out(e)], [e for e in entries if is_held_out(e)]


def write_manifest(entries: list[CatalogEntry], path) -> Path:
    """A catalog manifest (`shape_id,category,path`, absolute paths) that `ibsr-index build`,
    `ibsr-data photos` and training read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MANIFEST_FIELDS)
        for e in entries:
            writer.writerow([e.shape_id, e.category, str(Path(e.path).resolve())])
    return path


def family(shape_id: str) -> str:
    """The product line of a shape id: `bookcase/pix3d_ikea_billy_3` -> `billy`; other shapes
    are their own family (their id)."""
    name = shape_id.rsplit("/", 1)[-1]
    match = re.fullmatch(r"pix3d_ikea_([a-z]+)(?:_\d+)?", name)
    return match.group(1) if match else shape_id


def dev_entries(root) -> list[CatalogEntry]:
    """The meshes of a real_dev folder as catalog entries (`<category>/<file stem>`)."""
    return discover(Path(root) / "meshes")


def write_dev_queries(root, out) -> Path:
    """real_dev's queries as an ibsr queries.jsonl (absolute image paths, the shape id the
    index gives each mesh, the family kept), for `ibsr-eval`."""
    root, out = Path(root).resolve(), Path(out)
    source = root / "queries.jsonl"
    if not source.is_file():
        raise IbsrError("no queries.jsonl in the real_dev folder", root)
    lines = []
    for n, line in enumerate(source.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            mesh = Path(row["path"])
            lines.append({"image": str(root / row["image"]), "shape_id": f"{mesh.parent.as_posix()}/{mesh.stem}",
                          "category": row["category"], "family": row["family"]})
        except (ValueError, KeyError, TypeError):  # not JSON, or a key missing
            raise IbsrError(f"line {n}: needs a JSON object with image, path, category, family", source) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    return out
