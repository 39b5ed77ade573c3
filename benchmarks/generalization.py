"""Generalization, not fit: how models retrieve on data their training never had.

    python benchmarks/generalization.py --model old=OLD.pt --model new=ibsr/model/weights/default.pt \
        --json benchmarks/out/generalization.json

Three sets, each made by `ibsr-data synth` with a seed no training used (default 3; seeds 3, 13, 19, 23 and 37
have since chosen default models, so for sets nothing was chosen on give another seed and
folder, e.g. `--seed 41 --work data/generalization41`):
  (a) unseen-shapes     new shapes of the training categories (synth group "train"), photos in
                        the training style;
  (b) unseen-categories shapes of the categories held out of training (synth group "heldout");
  (c) unseen-style      the shapes of (a), new photos in the "heldout" photo style (lighting,
                        backgrounds and camera the training photos never had).
Each is scored through the real pipeline (`ibsr-index build`, then `ibsr-eval --prefilter none`,
exhaustive ranking) twice: with the exact masks given, and with the masks ignored (the
searcher's automatic mask, as for a user's plain JPEG; `--mask-method NAME=grabcut|model|auto`
per model, default auto). Prints a table (top-1, top-10, right category) and writes JSON. With two models
or more, each later one is also compared with the first photo by photo: how many photos only
one of the two puts first (and, as lines ending /top10, /category, /family, gets right in the
top 10, in the right category, in the right family), and a two-sided sign test on those (a
difference of a point or two on a few hundred photos is often noise; this says how often).

Real rows (skipped with a message when `--real-dev` / `--real-train` are absent; the folders
are read in place, never copied):
  (d) real-photos       real_dev's real photographs of 22 IKEA models, automatic mask only (a
                        user's photo has none);
  (e) real-rendered     photos rendered by `ibsr-data photos` (seed `--seed`, 2 per shape) of the
                        held-out part of real_train (`ibsr.eval.real_sets`: misc, tool and a
                        third of every other category, by file name; no training uses them),
                        given and automatic mask.
Both search one catalog of real meshes: real_dev's 22 plus the 110 held-out real_train meshes
as distractors. Besides top-1/top-10/category they report the family top-1 (the first hit is
a model of the right product line, `ibsr.eval.real_sets.family`) and the mean Chamfer distance
of the first hit to the truth (`ibsr-eval --shape-metrics`; 0 = the right shape), and
"fam-avg": the top-1 averaged over the product families, each counted once (BILLY holds 44% of
real_dev's photos; the kept-back photos are of other lines).
Generated sets and indexes are kept under --work and reused; models with the same rendering
encoder (query-side variants of one model) share one index per set, and each ibsr-eval report
is kept under --work/reports (keyed by the command and its files' contents), so adding a model
to a comparison scores only the new one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from ibsr.cpus import usable_cpus
from ibsr.eval.real_sets import dev_entries, family, split_real_train, write_dev_queries, write_manifest

SEED = 3  # the sets' default seed; --seed N makes others (e.g. for a model these sets chose)
SETS = {  # name -> (synth category group, photo style, first photo index, folder whose index it uses)
    "unseen-shapes": ("train", "default", 0, "unseen-shapes"),
    "unseen-categories": ("heldout", "default", 0, "unseen-categories"),
    "unseen-style": ("train", "heldout", 2, "unseen-shapes"),
}
REAL_SETS = ("real-photos", "real-rendered")
REAL_CATALOG = "real-catalog"  # the index of both real sets: real_dev's meshes + held-out real_train
REAL_PHOTOS_PER_SHAPE = 2


def run(cmd: list[str], env: dict | None = None) -> str:
    """The command's stdout; `env` overrides variables of this process's environment."""
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env} if env else None)
    if result.returncode != 0:
        sys.exit(f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return result.stdout


def make_set(work: Path, name: str, args) -> Path:
    group, style, first, _ = SETS[name]
    folder = work / "data" / name
    if not (folder / "queries.jsonl").is_file():
        shapes = args.shapes_per_category * (2 if group == "heldout" else 1)
        run([sys.executable, "-m", "ibsr.cli.data", "synth", "--out", str(folder), "--categories", group,
             "--shapes-per-category", str(shapes), "--queries-per-shape", str(args.photos_per_shape),
             "--first-photo", str(first), "--photo-style", style, "--seed", str(args.seed),
             "--workers", str(args.workers), "--json"])
    return folder


def make_real_sets(work: Path, args) -> list[str]:
    """The real catalog (a manifest) and both real sets' queries; the names of those made."""
    if not (args.real_dev / "queries.jsonl").is_file() or not (args.real_train / "meshes").is_dir():
        print(f"real rows skipped: no real_dev at {args.real_dev} or no real_train at {args.real_train} "
              "(pass --real-dev / --real-train)", file=sys.stderr)
        return []
    data = work / "data"
    _, heldout = split_real_train(args.real_train)
    write_manifest(dev_entries(args.real_dev) + heldout, data / REAL_CATALOG / "catalog.csv")
    write_dev_queries(args.real_dev, data / "real-photos" / "queries.jsonl")
    rendered = data / "real-rendered"
    if not (rendered / "queries.jsonl").is_file():
        write_manifest(heldout, rendered / "heldout.csv")
        run([sys.executable, "-m", "ibsr.cli.data", "photos", str(rendered / "heldout.csv"), "--out", str(rendered),
             "--photos-per-shape", str(REAL_PHOTOS_PER_SHAPE), "--seed", str(args.seed),
             "--workers", str(args.workers), "--json"])
    return list(REAL_SETS)


def index_builder(models: dict) -> dict:
    """model name -> the weights that build its indexes: the first model with the same
    rendering encoder (`rendering_id`), so query-side variants share one index per set."""
    from ibsr.model.checkpoint import load_checkpoint, rendering_id

    first: dict[str, str] = {}
    builder = {}
    for model, weights in models.items():
        rid = rendering_id(load_checkpoint(weights))
        builder[model] = first.setdefault(rid, weights)
    return builder


def evaluate(work: Path, model: str, weights: str, mask_method: str, name: str, builder: str | None = None,
             mask_weights: str | None = None, precision: str | None = None) -> dict:
    """One model on one set; the index is built with `builder` (default: the model's own weights),
    the automatic masks made by `mask_weights` (default: the shipped mask network), the searches
    run with IBSR_PRECISION=`precision` (default: this process's)."""
    real = name in REAL_SETS
    catalog = work / "data" / (REAL_CATALOG if real else SETS[name][3])
    builder = builder or weights
    index = work / "index" / f"{Path(builder).stem}-{_digest(builder)}-{catalog.name}"
    run([sys.executable, "-m", "ibsr.cli.index", "build",
         str(catalog / "catalog.csv" if real else catalog / "catalog"), "--index", str(index),
         "--weights", builder, "--json"])
    queries = work / "data" / name / "queries.jsonl"
    families = {}
    if real:
        families = {r["image"]: r.get("family") or family(r["shape_id"])
                    for r in map(json.loads, queries.read_text().splitlines())}
    mask_options = ["--mask-weights", mask_weights] if mask_weights else []
    modes = (("given", []), ("auto", ["--ignore-masks", "--mask-method", mask_method, *mask_options]))
    out = {}
    for masks, options in modes[1:] if name == "real-photos" else modes:  # real photos have no mask
        command = [sys.executable, "-m", "ibsr.cli.eval", "--index", str(index), "--queries", str(queries),
                   "--weights", weights, "--prefilter", "none", "--json", "--per-query", "--no-progress",
                   *(["--shape-metrics"] if real else []), *options]
        report = cached_report(work, command, [weights, builder, queries, *automatic_mask_files(masks, mask_weights)],
                               {"IBSR_PRECISION": precision} if precision else {})
        s = report["summary"]
        out[masks] = {"top1": s["top1"], "top10": s["top10"], "category": s["category"], "queries": s["count"],
                      "shapes": report["shapes"], "seconds": report["timings"]["total_s"],
                      "per_photo": per_photo(report, families if real else None)}
        if real:
            out[masks] |= real_metrics(report, families)
    return out


def per_photo(report: dict, families: dict | None) -> dict:
    """metric -> {photo: hit}, for the paired comparison: right shape first, in the top 10, first
    hit of the right category, and (real rows, `families` given) of the right product family."""
    records = report["records"]
    out = {"top1": {r["image"]: r["rank"] == 1 for r in records},
           "top10": {r["image"]: r["rank"] is not None and r["rank"] <= 10 for r in records},
           "category": {r["image"]: bool(r["category_hit"]) for r in records}}
    if families is not None:
        out["family"] = {r["image"]: _family_hit(r, _true_family(r, families)) for r in records}
    return out


def _true_family(record: dict, families: dict) -> str:
    """The photo's product family: as its queries.jsonl line says, else from its shape id."""
    return families.get(record["image"]) or family(record["shape_id"])


def _family_hit(record: dict, truth: str) -> bool:
    return bool(record["top"]) and family(record["top"][0]) == truth


def automatic_mask_files(masks: str, mask_weights: str | None) -> list:
    """The mask network an 'auto' row's masks come from (the given one, else the installed one,
    if any), so that its contents are part of the report's key: a new shipped mask.pt scores
    again."""
    from ibsr.model.segmenter import default_mask_weights_path

    network = Path(mask_weights) if mask_weights else default_mask_weights_path()
    return [network] if masks == "auto" and network.is_file() else []


def cached_report(work: Path, command: list[str], inputs: list, env: dict | None = None) -> dict:
    """The JSON report of an ibsr-eval command run with `env` over this process's environment,
    kept under work/reports/ by a hash of the command, its input files' contents and the runtime
    settings (IBSR_RUNTIME, IBSR_PRECISION): a rerun that adds a model scores only that model. A
    change of ibsr's own code is not in the key: clear work/reports/ after one."""
    env = env or {}
    settings = {k: env.get(k, os.environ.get(k, "")) for k in ("IBSR_RUNTIME", "IBSR_PRECISION")}
    key = hashlib.sha256(json.dumps([command[1:], [_file_hash(Path(f)) for f in inputs], settings]).encode()
                         ).hexdigest()[:16]
    path = work / "reports" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    report = json.loads(run(command, env))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))
    return report


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(path: str) -> str:
    from ibsr.model.checkpoint import checkpoint_id

    return checkpoint_id(path)[:8]


def real_metrics(report: dict, families: dict) -> dict:
    """Family top-1 (per photo, from the first hit's id), the mean Chamfer distance of the first
    hit to the truth, top-1 / family top-1 per family, and `family_mean_top1`: the mean over the
    families of their top-1, each family counted once (one product line can hold most of a
    set's photos, as BILLY holds 44% of real_dev's; the kept-back photos are of other lines)."""
    by_family: dict[str, list] = {}
    for r in report["records"]:
        truth = _true_family(r, families)
        by_family.setdefault(truth, []).append((r["rank"] == 1, _family_hit(r, truth)))
    hits = [h for rows in by_family.values() for _, h in rows]
    return {"family": sum(hits) / len(hits), "chamfer": report["shape_metrics"]["summary"]["chamfer"],
            "family_mean_top1": sum(sum(t for t, _ in rows) / len(rows) for rows in by_family.values())
            / len(by_family),
            "per_family": {f: {"photos": len(rows), "top1": sum(t for t, _ in rows), "family": sum(h for _, h in rows)}
                           for f, rows in sorted(by_family.items())}}


def sign_test(only_a: int, only_b: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven if neither is better."""
    n, k = only_a + only_b, min(only_a, only_b)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


def paired(results: dict) -> dict:
    """Each later model against the first, per set, mask and metric: photos only one of them gets
    right. Keys `model/set/masks` for the right shape first, `model/set/masks/METRIC` for top10,
    category and (real rows) family."""
    (base, base_sets), *others = results.items()
    out = {}
    for model, per_set in others:
        for name, per_mask in per_set.items():
            for masks, r in per_mask.items():
                base_photos = base_sets[name][masks]["per_photo"]
                for metric, b in r["per_photo"].items():
                    a = base_photos.get(metric)
                    if a is None:
                        continue
                    both = a.keys() & b.keys()  # the same photos (a photo one model failed to load is left out)
                    only_a = sum(a[photo] and not b[photo] for photo in both)
                    only_b = sum(b[photo] and not a[photo] for photo in both)
                    key = f"{model}/{name}/{masks}" + ("" if metric == "top1" else f"/{metric}")
                    out[key] = {f"only_{base}": only_a, f"only_{model}": only_b,
                                "sign_test_p": round(sign_test(only_a, only_b), 3)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=WEIGHTS",
                        help="A model to score (repeat to compare, e.g. old=... new=...).")
    parser.add_argument("--mask-method", action="append", default=[], metavar="NAME=METHOD",
                        help="Automatic mask for a model's 'auto' rows: grabcut, model or auto (default).")
    parser.add_argument("--mask-weights", action="append", default=[], metavar="NAME=FILE",
                        help="Mask network for a model's 'auto' rows (default: the shipped one); to compare "
                             "mask networks, name the same weights twice: --model a=W --model b=W --mask-weights b=M.")
    parser.add_argument("--precision", action="append", default=[], metavar="NAME=PRECISION",
                        help="IBSR_PRECISION for a model's searches (default: this process's); to compare "
                             "precisions, name the same weights twice: --model a=W --model b=W --precision b=int8.")
    parser.add_argument("--work", type=Path, default=Path("data/generalization"),
                        help="Folder for the generated sets and indexes (reused when present).")
    parser.add_argument("--shapes-per-category", type=int, default=8,
                        help="Shapes per training category in (a)/(c); (b) gets twice as many per category.")
    parser.add_argument("--photos-per-shape", type=int, default=2)
    parser.add_argument("--seed", type=int, default=SEED,
                        help="Seed of the generated sets. Give a new --work with a new seed: sets are reused by folder.")
    parser.add_argument("--sets", default=",".join([*SETS, *REAL_SETS]),
                        help="Comma-separated subset of " + ", ".join([*SETS, *REAL_SETS]))
    parser.add_argument("--real-dev", type=Path, default=Path("../shared/real_dev"),
                        help="Real photographs with their meshes (queries.jsonl, photos/, meshes/); read in place.")
    parser.add_argument("--real-train", type=Path, default=Path("../shared/real_train"),
                        help="Real CAD meshes; its held-out part (ibsr.eval.real_sets) is the real distractors.")
    parser.add_argument("--workers", type=int, default=usable_cpus())
    parser.add_argument("--json", type=Path, default=None, help="Write the results here.")
    args = parser.parse_args()
    models = dict(m.split("=", 1) for m in args.model)
    mask_methods = {name: "auto" for name in models} | dict(m.split("=", 1) for m in args.mask_method)
    mask_weights = dict(m.split("=", 1) for m in args.mask_weights)
    precisions = dict(m.split("=", 1) for m in args.precision)
    sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in sets if s not in SETS and s not in REAL_SETS]
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join([*SETS, *REAL_SETS])}")
    start = time.perf_counter()
    for name in (s for s in sets if s in SETS):
        make_set(args.work, SETS[name][3], args)  # the catalog a set's index is built from
        make_set(args.work, name, args)
    if any(s in REAL_SETS for s in sets):
        made = make_real_sets(args.work, args)
        sets = [s for s in sets if s not in REAL_SETS or s in made]
    builders = index_builder(models)
    results = {model: {name: evaluate(args.work, model, weights, mask_methods[model], name, builders[model],
                                      mask_weights.get(model), precisions.get(model))
                       for name in sets}
               for model, weights in models.items()}
    print_table(results)
    comparison = paired(results)
    for key, counts in comparison.items():
        print(f"{key:<40} " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    for per_set in results.values():  # the per-photo lists served the comparison
        for per_mask in per_set.values():
            for r in per_mask.values():
                r.pop("per_photo")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "results": results, "paired": comparison, "models": models, "mask_methods": mask_methods, "mask_weights": mask_weights, "precisions": precisions, "seed": args.seed, "shapes_per_category": args.shapes_per_category,
            "photos_per_shape": args.photos_per_shape, "cpu": cpu_name(), "python": platform.python_version(),
            "seconds": round(time.perf_counter() - start, 1)}, indent=2) + "\n")


def print_table(results: dict) -> None:
    print(f"{'model':<10} {'set':<18} {'masks':<6} {'shapes':>6} {'photos':>6} {'top-1':>7} {'top-10':>7} {'category':>8}"
          f" {'family':>7} {'chamfer':>8} {'fam-avg':>7}")
    for model, per_set in results.items():
        for name, per_mask in per_set.items():
            for masks, r in per_mask.items():
                real = f"{r['family']:>7.1%} {r['chamfer']:>8.4f} {r['family_mean_top1']:>7.1%}" if "family" in r \
                    else f"{'-':>7} {'-':>8} {'-':>7}"
                print(f"{model:<10} {name:<18} {masks:<6} {r['shapes']:>6} {r['queries']:>6} {r['top1']:>7.1%} "
                      f"{r['top10']:>7.1%} {r['category']:>8.1%} {real}")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
