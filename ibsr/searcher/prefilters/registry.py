"""Prefilter name -> `Prefilter`: which shapes each query's exact rerank scores.

A prefilter subclasses `Prefilter` once, in its own module of this package, and registers under
its `--prefilter` name with `@register(name)`; the registry holds one instance per name. Whatever
offers the choice (`SearchOptions`' check, the command lines' `--prefilter`, the service's form
field and `/options`, the page's <select>) reads the names and help here, so a new prefilter is
one class in one new module.
"""

from __future__ import annotations

import numpy as np

from ibsr.errors import IbsrError
from ibsr.searcher.prefilters.candidates import CandidateSet
from ibsr.searcher.prefilters.lookup import ShapeLookup


class Prefilter:
    """One registered prefilter (`name`)."""

    help = ""  # what it reranks, one clause for --prefilter's help and the page (after "'name' ")

    def __init__(self, name: str):
        self.name = name

    def check(self, options) -> None:
        """Raise a one-line `IbsrError` for a setting of `options` (a `SearchOptions`) that this
        prefilter reads and cannot take; settings it never reads are not its business."""

    def candidates(self, lookup: ShapeLookup, q: np.ndarray, options) -> list[CandidateSet]:
        """The candidate sets of the queries `q` (B x D float32, pooled-vector space): each query
        in exactly one set, queries that share candidates in the same one (one rerank call)."""
        raise NotImplementedError


_REGISTRY: dict[str, Prefilter] = {}


def register(name: str):
    """Class decorator: register an instance of the `Prefilter` subclass under `name`."""
    def decorate(cls: type[Prefilter]) -> type[Prefilter]:
        if name in _REGISTRY:
            raise ValueError(f"prefilter {name!r} is registered twice")
        _REGISTRY[name] = cls(name)
        return cls
    return decorate


def prefilter_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def prefilter_help() -> dict[str, str]:
    """name -> what it reranks, in registry order."""
    return {name: prefilter.help for name, prefilter in _REGISTRY.items()}


def described_prefilters() -> str:
    """Every prefilter and what it reranks, for a help text: "'ann' reranks ...; 'category' ..."."""
    return "; ".join(f"{name!r} {text}" for name, text in prefilter_help().items())


def get_prefilter(name: str) -> Prefilter:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise IbsrError(f"--prefilter must be one of {', '.join(_REGISTRY)}, not {name!r}") from None
