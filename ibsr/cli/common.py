"""What every ibsr command shares: option names, and errors as one line with no traceback."""

from __future__ import annotations

import json
import sys

import click

from ibsr.errors import IbsrError
from ibsr.searcher.options import DEFAULT_CANDIDATES, DEFAULT_NEIGHBORS, DEFAULT_PREFILTER
from ibsr.searcher.prefilters import described_prefilters, prefilter_names


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
mask_weights_option = click.option(
    "--mask-weights", type=click.Path(dir_okay=False), default=None,
    help="Mask network (.pt from `ibsr-train mask`) to use instead of the shipped one.")
device_option = click.option("--device", default=None, help="torch device (cpu, cuda, cuda:1). Default: cuda if available.")
candidates_option = click.option("--candidates", default=DEFAULT_CANDIDATES, show_default=True, type=int,
                                 help="--prefilter ann: shapes reranked per query.")
neighbors_option = click.option("--neighbors", default=DEFAULT_NEIGHBORS, show_default=True, type=int,
                                help="--prefilter category: nearest shapes whose categories are reranked.")


def prefilter_option(lead: str, tail: str):
    """--prefilter: its choices, and what each reranks, from the prefilter registry
    (`ibsr.searcher.prefilters`), between the command's own `lead` and `tail`."""
    return click.option("--prefilter", default=DEFAULT_PREFILTER, show_default=True,
                        type=click.Choice(prefilter_names()), help=f"{lead}: {described_prefilters()}. {tail}")


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2))
