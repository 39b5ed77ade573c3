"""`ibsr-train`: train CMIC models and import the authors' Jittor checkpoints.

    ibsr-train run --config configs/small.toml --out runs/small [--resume] [--json]
    ibsr-train eval data/runs/*/last.pt --data data/eval-unseen [--json]
    ibsr-train import-jittor cmic_pix3d.pt --out weights/pix3d.pt
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ibsr.cli.common import IbsrGroup, json_option, print_json


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
    command = " ".join(shlex.quote(a) for a in ["ibsr-train", *sys.argv[1:]])
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
            "command": " ".join(shlex.quote(a) for a in ["ibsr-train", *sys.argv[1:]])}
    save_checkpoint(model, out_path, info)
    config = model.config.to_dict()
    if as_json:
        print_json({"out": str(out_path), "encoder_id": checkpoint_id(out_path), "config": config})
        return
    click.echo("inferred config: " + ", ".join(f"{k}={v}" for k, v in config.items()))
    click.echo(f"wrote {out_path} (encoder id {checkpoint_id(out_path)})")


if __name__ == "__main__":
    main()
