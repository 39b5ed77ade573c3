"""SearchOptions: one frozen value per search, checked once when made, with the one-line errors
the command lines print; the prefilter registry that names its choices."""

import dataclasses

import pytest

from ibsr.cli import eval as eval_cli
from ibsr.cli import search as search_cli
from ibsr.errors import IbsrError
from ibsr.searcher import SearchOptions
from ibsr.searcher.options import search_options
from ibsr.searcher.prefilters import Prefilter, get_prefilter, prefilter_help, prefilter_names, register


def test_defaults_and_frozen():
    options = SearchOptions()
    assert (options.topk, options.prefilter, options.candidates, options.neighbors, options.category) == (
        10, "category", 1000, 10, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.topk = 5


@pytest.mark.parametrize("settings, message", [
    (dict(topk=0), "--topk must be at least 1 (got 0)"),
    (dict(prefilter="magic"), "--prefilter must be one of ann, category, none, not 'magic'"),
    (dict(prefilter="ann", candidates=0), "--candidates must be at least 1 (got 0)"),
    (dict(neighbors=0), "--neighbors must be at least 1 (got 0)"),
])
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(IbsrError) as error:
        SearchOptions(**settings)
    assert str(error.value) == message


def test_a_prefilter_checks_only_the_settings_it_reads():
    SearchOptions(prefilter="none", candidates=0, neighbors=0)  # neither is read
    SearchOptions(prefilter="ann", neighbors=0)
    SearchOptions(category="chair", neighbors=0)  # a given category replaces the prefilter
    with pytest.raises(IbsrError, match="--prefilter"):
        SearchOptions(category="chair", prefilter="magic")  # still a name it must know


def test_keyword_settings_replace_the_given_options_and_are_checked():
    base = SearchOptions(prefilter="ann", candidates=4)
    assert search_options() == SearchOptions()
    assert search_options(base, topk=3) == SearchOptions(topk=3, prefilter="ann", candidates=4)
    with pytest.raises(IbsrError, match="--candidates"):
        search_options(base, candidates=0)
    with pytest.raises(TypeError):
        search_options(base, mirror=True)


def test_group_key_leaves_only_topk_out():
    assert SearchOptions(topk=3).group_key() == SearchOptions(topk=9).group_key()
    for other in (dict(prefilter="none"), dict(candidates=5), dict(neighbors=3), dict(category="lamp")):
        assert SearchOptions(**other).group_key() != SearchOptions().group_key()


def test_the_registry_names_every_choice():
    assert prefilter_names() == ("ann", "category", "none")
    assert all(text for text in prefilter_help().values())
    assert get_prefilter("none").name == "none"
    with pytest.raises(ValueError, match="registered twice"):
        register("ann")(Prefilter)
    for cli in (search_cli, eval_cli):  # the command lines offer exactly the registry's names
        [option] = [p for p in cli.main.params if p.name == "prefilter"]
        assert tuple(option.type.choices) == prefilter_names() and option.default == SearchOptions().prefilter
        assert all(text in option.help for text in prefilter_help().values())
