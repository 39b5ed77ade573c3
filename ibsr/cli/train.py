"""`ibsr-train`: train CMIC models and import the authors' Jittor checkpoints.

    ibsr-train run --config configs/small.toml --out runs/small [--resume] [--json]
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
