"""`ibsr-train`: train CMIC models and import the authors' Jittor checkpoints.

    ibsr-train run --config configs/small.toml --out runs/small [--resume] [--json]
    ibsr-train eval data/runs/*/last.pt --data data/eval-unseen [--json]
    ibsr-train import-jittor cmic_pix3d.pt --out weights/pix3d.pt
    ibsr-train export data/runs/lite/last.pt --out ibsr/model/weights/default.pt   (float16)
    ibsr-train average base.pt finetuned.pt --out averaged.pt   (weights of one lineage)
    ibsr-train mask --data data/lite-train --val data/lite-val --out data/runs/mask
    ibsr-train adapt my_catalog/ --out adapted.pt --minutes 10   (no labelled photo needed)

`mask` and `adapt` also read a config file (`--config`: its seed and [mask] / [adapt] table,
ibsr/train/config.py); their flags override it. The defaults their help states are the schema's
(`MaskTrainConfig`, `AdaptOptions`; tests/test_mask_net.py and tests/test_adapt.py check them).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ibsr.cli.common import IbsrGroup, json_option, print_json
from ibsr.geometry.mesh import UP_AXES


def _command_line() -> str:
    """This command as typed (quoted), for the `info` of the checkpoint it writes."""
    return " ".join(shlex.quote(a) for a in ["ibsr-train", *sys.argv[1:]])


@click.group(cls=IbsrGroup)
def main():
    """Train CMIC models (configs/*.toml) and convert the authors' Jittor checkpoints."""


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Experiment config (TOML): data, model, batch size, steps, lr, augmentation, "
                   "ablation switches, validation. Examples: configs/small.toml, configs/paper.toml.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: config.json, state.pt (resumable), metrics.jsonl, best.pt (best "
                   "validation top-1, an ibsr checkpoint), last.pt.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its state.pt (same step, weights, optimizer and "
                   "RNG state). Only the length, threads and logging/validation intervals may change.")
@json_option
def run(config_path, out_dir, resume, as_json):
    """Train (or resume) one run. Ctrl-C or SIGTERM saves the state first."""
    from ibsr.train import load_config, train

    config = load_config(config_path)
    command = _command_line()
    summary = train(config, out_dir, resume=resume, command=command, progress=not as_json)
    if as_json:
        print_json(summary.to_dict())
        return
    best = summary.best
    click.echo(f"trained {summary.step}/{summary.steps} steps ({summary.seconds_per_step:.2f} s/step) in {summary.out}")
    if best:
        k = config.val.topk
        click.echo(f"best validation at step {best['step']}: top1 {best['top1']:.3f}, top{k} {best[f'top{k}']:.3f}, "
                   f"category {best['category']:.3f} -> {summary.best_checkpoint}")
    click.echo(f"last checkpoint: {summary.last_checkpoint}")


@main.command("eval")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset folder (catalog/ + queries.jsonl, as `ibsr-data synth` writes): every "
                   "query photo, with its mask, against every shape of the catalog.")
@click.option("--cache", "cache_dir", default="data/cache", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Cache of renderings and decoded photos (shared with ibsr-train run).")
@click.option("--up-axis", default="y", show_default=True, type=click.Choice(["x", "y", "z"]),
              help="Up axis of the catalog's meshes, as for ibsr-index build.")
@click.option("--topk", default=10, show_default=True, type=click.IntRange(min=1),
              help="k of the top-k instance accuracy.")
@json_option
def eval_cmd(checkpoints, data_dir, cache_dir, up_axis, topk, as_json):
    """Compare checkpoints (CHECKPOINTS: ibsr .pt files, e.g. the runs of an ablation) on one
    dataset, each scored as it was trained (its config's mask mode, views, attention). Attention
    models also get the mean-of-views score of the same embeddings and the attention's spread
    (effective number of views), which show what the attention adds. The model scores in
    float32 here; `ibsr-eval` measures the same through an index and the search pipeline."""
    from ibsr.model.checkpoint import load_checkpoint_with_info
    from ibsr.train import evaluate_checkpoint, load_dataset

    loaded = [load_checkpoint_with_info(path) for path in checkpoints]  # all readable before any work
    datasets, rows = {}, []  # one dataset per input size
    for path, (model, info) in zip(checkpoints, loaded):
        size = (model.config.render_size, model.config.query_size)
        if size not in datasets:
            datasets[size] = load_dataset(data_dir, *size, cache_dir, up_axis, progress=not as_json)
        rows.append(evaluate_checkpoint(model, info, datasets[size], topk, name=str(path)))
    if as_json:
        print_json({"data": str(data_dir), "results": rows})
        return
    click.echo(f"{'checkpoint':<40} {'step':>5} {'V':>3} {'mask':<8} {'att':<4} {'cat':<4} {'top1':>6} "
               f"{f'top{topk}':>6} {'categ':>6}  {'mean-of-views top1':>18} {'eff. views':>10}")
    for r in rows:
        mean = f"{r['mean_of_views']['top1']:.1%}" if "mean_of_views" in r else "-"
        spread = f"{r['attention_spread']['effective_views']:.2f}" if "attention_spread" in r else "-"
        click.echo(f"{_short(r['checkpoint']):<40} {r['step'] if r['step'] is not None else '-':>5} {r['views']:>3} "
                   f"{r['mask']:<8} {'yes' if r['attention'] else 'no':<4} {'yes' if r['category_loss'] else 'no':<4} "
                   f"{r['top1']:>6.1%} {r[f'top{topk}']:>6.1%} {r['category']:>6.1%}  "
                   f"{mean:>18} {spread:>10}")
    click.echo(f"{rows[0]['queries']} queries against {rows[0]['shapes']} shapes of {data_dir}")


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 40 else "..." + text[-37:]


@main.command("import-jittor")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the ibsr checkpoint (.pt) for --weights / ibsr-index / ibsr-search.")
@json_option
def import_jittor_cmd(checkpoint, out_path, as_json):
    """Convert one of the authors' Jittor checkpoints (CHECKPOINT: the .pt/.pkl written by
    `jt.save(retrieval_net.state_dict(), path)`) into an ibsr checkpoint. The networks are
    inferred from the arrays; input sizes take the paper's 224 px and 12 views."""
    from ibsr.model import checkpoint_id, import_jittor, save_checkpoint

    model = import_jittor(checkpoint)
    info = {"imported_from": str(checkpoint), "source": "jittor",
            "command": _command_line()}
    save_checkpoint(model, out_path, info)
    config = model.config.to_dict()
    if as_json:
        print_json({"out": str(out_path), "encoder_id": checkpoint_id(out_path), "config": config})
        return
    click.echo("inferred config: " + ", ".join(f"{k}={v}" for k, v in config.items()))
    click.echo(f"wrote {out_path} (encoder id {checkpoint_id(out_path)})")


@main.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the copy (e.g. ibsr/model/weights/default.pt).")
@click.option("--half/--no-half", default=True, show_default=True,
              help="Store the weights in float16 (BatchNorm statistics stay float32): half the file, "
                   "the way shipped weights are stored.")
@json_option
def export_cmd(checkpoint, out_path, half, as_json):
    """Copy an ibsr checkpoint (e.g. a run's last.pt) for shipping: float16 weights, same config
    and info (the info records where it came from)."""
    from ibsr.model import checkpoint_id, load_checkpoint_with_info, save_checkpoint

    model, info = load_checkpoint_with_info(checkpoint)
    info = {**info, "exported_from": {"path": str(checkpoint), "encoder_id": checkpoint_id(checkpoint)},
            "half": half}
    save_checkpoint(model, out_path, info, half=half)
    summary = {"out": str(out_path), "encoder_id": checkpoint_id(out_path), "bytes": out_path.stat().st_size}
    if as_json:
        print_json(summary)
        return
    click.echo(f"wrote {out_path} ({summary['bytes'] / 1e6:.1f} MB, encoder id {summary['encoder_id']})")


@main.command("average")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the averaged checkpoint.")
@click.option("--weight", "weights", multiple=True, type=float,
              help="One per checkpoint, in order (normalized to sum to 1), e.g. --weight 0.7 --weight 0.3.  "
                   "[default: equal weights]")
@click.option("--half/--no-half", default=True, show_default=True,
              help="Store the weights in float16, as `export` does.")
@json_option
def average_cmd(checkpoints, out_path, weights, half, as_json):
    """Average the weights of CHECKPOINTS of one lineage (a model and short fine-tunes of it;
    WiSE-FT): one model that keeps much of each fine-tune's gain and of the start's behaviour.
    The configs must match. Tensors equal in every input are copied unchanged, so when every
    run froze the rendering encoder, indexes built with the first checkpoint stay valid."""
    from ibsr.model import checkpoint_id, save_checkpoint
    from ibsr.train.average import average_checkpoints

    model, info = average_checkpoints(list(checkpoints), weights)
    info["command"] = _command_line()
    save_checkpoint(model, out_path, info, half=half)
    sources = [{k: v for k, v in source.items() if k != "info"} for source in info["averaged_from"]]
    summary = {"out": str(out_path), "encoder_id": checkpoint_id(out_path), "averaged_from": sources,
               "same_rendering_as_first": info["same_rendering_as_first"]}
    if as_json:
        print_json(summary)
        return
    for source in sources:
        click.echo(f"{source['weight']:.3f} x {source['path']} (encoder id {source['encoder_id']})")
    kept = ("the first checkpoint's: its indexes stay valid" if info["same_rendering_as_first"]
            else "averaged: rebuild indexes with the new checkpoint")
    click.echo(f"wrote {out_path} (encoder id {summary['encoder_id']}); rendering encoder {kept}")


@main.command("mask")
@click.option("--data", "data_dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Training dataset folder (queries.jsonl with image and mask per line, as `ibsr-data synth` "
                   "writes); repeat to train on several. Required, here or in --config.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: config.json, state.pt (resumable), metrics.jsonl, last.pt (the mask network in "
                   "the shipped format: copy it to ibsr/model/weights/mask.pt).")
@click.option("--val", "val_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Validation dataset folder: mask IoU against its exact masks at the end of the run.")
@click.option("--steps", default=None, type=click.IntRange(min=1), help="Optimizer steps.  [default: 3000]")
@click.option("--batch-size", default=None, type=click.IntRange(min=1), help="Photos per step.  [default: 64]")
@click.option("--lr", default=None, type=float,
              help="Adam learning rate (after a short warm-up; cosine decay to 0 over the last 30% of the steps).  "
                   "[default: 0.001]")
@click.option("--size", default=None, type=click.IntRange(min=32, max=1024),
              help="Network input side: photos are resized to this square for training and at search time.  "
                   "[default: 224]")
@click.option("--seed", default=None, type=int,
              help="Seed of the decoder init, batches and augmentation.  [default: 0]")
@click.option("--device", default=None, help="torch device: auto (CUDA when present), cpu, cuda, cuda:1.  "
                                             "[default: auto]")
@click.option("--threads", default=None, type=click.IntRange(min=0),
              help="torch CPU threads (0: torch's default).  [default: 0]")
@click.option("--cache", "cache_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Cache of the decoded, resized photos and masks (keyed by the files' contents).  "
                   "[default: data/cache]")
@click.option("--checkpoint-every", default=None, type=click.IntRange(min=1),
              help="Steps between saves of the resumable state.pt (also saved at the end and on Ctrl-C/SIGTERM).  "
                   "[default: 500]")
@click.option("--init", "init_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Fine-tune this mask network (.pt from `ibsr-train mask`, e.g. the shipped "
                   "ibsr/model/weights/mask.pt) instead of starting from ImageNet; --size must be its size.")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Config file (TOML): its seed and [mask] table; the flags above override it.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its state.pt; only --steps, --device, --threads and the "
                   "checkpoint cadence may change.")
@json_option
def mask_cmd(data_dirs, out_dir, val_dir, steps, batch_size, lr, size, seed, device, threads, cache_dir,
             checkpoint_every, init_path, config_path, resume, as_json):
    """Train the automatic-mask network (EfficientNet-Lite0 encoder from ImageNet + FPN decoder) on
    the exact masks of synthetic photos; the searcher uses it for photos without mask or alpha."""
    from ibsr.train.config import MaskTrainConfig, command_config, override, read_config_file
    from ibsr.train.mask import train_mask

    tables = override(read_config_file(config_path) if config_path else {}, "mask",
                      data=[str(d) for d in data_dirs] or None, val=_text(val_dir), steps=steps,
                      batch_size=batch_size, lr=lr, size=size, seed=seed, device=device, threads=threads,
                      cache=_text(cache_dir), checkpoint_every=checkpoint_every, init=_text(init_path))
    config = command_config(MaskTrainConfig, tables, str(config_path or "the command line"))
    command = _command_line()
    summary = train_mask(config, out_dir, resume=resume, command=command, progress=not as_json)
    if as_json:
        print_json(summary.to_dict())
        return
    click.echo(f"trained {summary.step}/{summary.steps} steps on {summary.train_photos} photos "
               f"({summary.seconds_per_step:.3f} s/step on {summary.device}) in {summary.out}")
    if summary.val:
        click.echo(f"validation mask IoU: mean {summary.val['iou_mean']:.3f}, median {summary.val['iou_median']:.3f} "
                   f"({summary.val['photos']} photos)")
    click.echo(f"last checkpoint: {summary.last_checkpoint}")


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


@main.command("adapt")
@click.argument("catalog", type=click.Path(path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="The adapted checkpoint to write (.pt), for ibsr-search/ibsr-eval/ibsr-index --weights.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The model to adapt. Default: the model shipped with ibsr.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-clock budget of the whole command, photos included; the number of training steps "
                   "is what fits after the photos, measured on this machine.  [default: 10]")
@click.option("--max-steps", type=click.IntRange(min=0), default=None,
              help="At most this many training steps, whatever the budget (0: no limit).  [default: 0]")
@click.option("--photos-per-shape", type=click.IntRange(min=2), default=None,
              help="Synthetic photos made of each catalog shape; the last one of each is held out to "
                   "measure the model before and after.  [default: 6]")
@click.option("--photo-size", type=click.IntRange(min=32), default=None,
              help="Side of the synthetic photos, px.  [default: 256]")
@click.option("--side", type=click.Choice(["query", "both"]), default=None,
              help="query: fine-tune the photo side only; indexes built with the base weights stay valid "
                   "and accept the result without a rebuild. both: fine-tune everything; rebuild the index "
                   "with the result.  [default: query]")
@click.option("--lr", type=click.FloatRange(min=0), default=None,
              help="Adam learning rate, decayed to 0 over the last 30% of the steps; 0: a fifth of the rate "
                   "the base model was trained at (from its checkpoint info), or 2e-05 if it does not say.  "
                   "[default: 0]")
@click.option("--batch-size", type=click.IntRange(min=2), default=None,
              help="Photos (and distinct shapes) per training step.  [default: 30]")
@click.option("--seed", type=int, default=None, help="Seed of the photos and the training.  [default: 0]")
@click.option("--category-loss/--no-category-loss", default=None,
              help="Train CMIC's category term on the catalog's categories (its folder names); turn it off "
                   "when folders are not categories (e.g. a 'misc' folder of unrelated objects).  "
                   "[default: --category-loss]")
@click.option("--whole-copies/--no-whole-copies", default=None,
              help="Train on every photo a second time searched whole (crop = photo), the input the mask "
                   "network gives a photo it cannot segment. Measured on real photos: more right shapes "
                   "first, fewer right categories (benchmarks/RESULTS.md).  [default: --no-whole-copies]")
@click.option("--up-axis", type=click.Choice(UP_AXES), default=None,
              help="Which axis of the mesh files points up, as for ibsr-index build.  [default: y]")
@click.option("--work", "work_path", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Work folder: photos, caches, the resumable training state. Default: .adapt-<name> "
                   "beside --out. Photos already made there are reused by later runs.")
@click.option("--resume", is_flag=True,
              help="Finish the interrupted run in the work folder, with its settings and step plan "
                   "(the same steps as an uninterrupted run).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Photo worker processes (0: in this process).  [default: 2]")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="torch CPU threads (0: every CPU this process may use).  [default: 0]")
@click.option("--device", default=None, help="torch device: auto, cpu, cuda, cuda:1.  [default: auto]")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Config file (TOML): its seed and [adapt] table; the flags above override it (and with "
                   "--resume, both override the run's own settings).")
@json_option
def adapt_cmd(catalog, out_path, weights, minutes, max_steps, photos_per_shape, photo_size, side, lr, batch_size,
              seed, category_loss, whole_copies, up_axis, work_path, resume, workers, threads, device, config_path,
              as_json):
    """Adapt a model to CATALOG (a folder of meshes or a manifest, as for ibsr-index build) with
    no labelled photo: make synthetic photos of every catalog mesh, fine-tune on them, score the
    held-out photos before and after, and write --out. What is done survives Ctrl-C, SIGTERM
    or a crash (finished photos, measurements, the training state saved every minute):
    continue with --resume."""
    from ibsr.train.adapt import adapt, recorded_options, work_dir
    from ibsr.train.config import AdaptOptions, command_config, override, read_config_file

    tables = override(read_config_file(config_path) if config_path else {}, "adapt", minutes=minutes,
                      max_steps=max_steps, photos_per_shape=photos_per_shape, photo_size=photo_size, side=side,
                      lr=lr, batch_size=batch_size, seed=seed, category_loss=category_loss, whole_copies=whole_copies,
                      up_axis=up_axis, workers=workers, threads=threads, device=device)
    base = AdaptOptions()
    if resume:  # options given neither on the command line nor in --config are the run's own
        base, recorded_weights = recorded_options(work_dir(out_path, work_path))
        weights = weights or recorded_weights
    options = command_config(AdaptOptions, tables, str(config_path or "the command line"), base=base)
    command = _command_line()
    report = adapt(catalog, out_path, options, weights=weights, work=work_path, resume=resume, command=command,
                   progress=not as_json)
    if as_json:
        print_json(report)
        return
    before, after = report["before"], report["after"]
    click.echo(f"adapted {report['shapes']} shapes in {report['steps']} steps at lr {report['lr']:g} "
               f"({report['seconds_per_step'] or 0:.2f} s/step, {report['seconds'] / 60:.1f} min)")
    click.echo(f"held-out photos ({after['queries']}): top-1 {before['top1']:.1%} -> {after['top1']:.1%}, "
               f"top-10 {before['top10']:.1%} -> {after['top10']:.1%}, "
               f"category {before['category']:.1%} -> {after['category']:.1%}")
    click.echo(f"wrote {report['out']} (encoder id {report['encoder_id']})")
    if report["worse_on_held_out"]:  # a fine-tuned model is not always a better one: say so, keep both
        click.echo(f"warning: the adapted model puts fewer held-out photos first than the base "
                   f"({before['top1']:.1%} -> {after['top1']:.1%}); keep searching with the base, or adapt "
                   f"again with more --photos-per-shape or a smaller --lr", err=True)
    if report["rebuild_index"]:
        click.echo(f"the rendering encoder changed: index the catalog with it, e.g. "
                   f"ibsr-index build {catalog} --weights {report['out']} --index NEW_INDEX")
    else:
        click.echo(f"query side only: indexes built with {report['base']['path']} (encoder id "
                   f"{report['base']['encoder_id']}) accept it as is: ibsr-search PHOTO --weights {report['out']}")


if __name__ == "__main__":
    main()
