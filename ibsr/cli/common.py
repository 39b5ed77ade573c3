"""What every ibsr command shares: option names, and errors as one line with no traceback."""

from __future__ import annotations

import json
import sys

import click

from ibsr.errors import IbsrError


class IbsrCommand(click.Command):
    """Turns an `IbsrError` into `error: <message>` on stderr and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except IbsrError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


class IbsrGroup(click.Group):
    command_class = IbsrCommand


index_option = click.option(
    "--index", "index", type=click.Path(file_okay=False), default=None, envvar="IBSR_INDEX",
    help="Index directory. Default: $IBSR_INDEX, else ./ibsr_index.")
weights_option = click.option(
    "--weights", type=click.Path(dir_okay=False), default=None,
    help="Model checkpoint (.pt). Default: the model shipped with ibsr.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")
mask_method_option = click.option(
    "--mask-method", default="auto", show_default=True, type=click.Choice(["auto", "model", "grabcut"]),
    help="Automatic mask of a photo with neither mask file nor alpha channel: 'model' = the learned mask "
         "network (falls back to GrabCut when its mask is empty or tiny), 'grabcut' = OpenCV GrabCut from "
         "the image border, 'auto' = the network when one is installed (ibsr/model/weights/mask.pt) or given "
         "(--mask-weights), else GrabCut. Results say which made each mask (mask_source).")
mirror_option = click.option(
    "--mirror/--no-mirror", default=False, show_default=True,
    help="Embed each photo and its left-right mirror image and average the two: a second look at the same "
         "shape for twice the encoding time. Off by default: with the shipped model it gained nothing "
         "consistent (benchmarks/RESULTS.md, \"Mirror averaging\").")
mask_weights_option = click.option(
    "--mask-weights", type=click.Path(dir_okay=False), default=None,
    help="Mask network (.pt from `ibsr-train mask`) to use instead of the shipped one.")
device_option = click.option("--device", default=None, help="torch device (cpu, cuda, cuda:1). Default: cuda if available.")


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2))
