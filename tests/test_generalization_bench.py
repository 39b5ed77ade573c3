"""benchmarks/generalization.py's paired comparison: photo by photo, with an exact sign test."""

from __future__ import annotations

import importlib.util
from math import comb
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("generalization", Path(__file__).parent.parent / "benchmarks" / "generalization.py")
generalization = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generalization)


def test_sign_test_is_the_two_sided_binomial_tail():
    assert generalization.sign_test(0, 5) == pytest.approx(2 / 32)
    assert generalization.sign_test(3, 3) == 1.0 and generalization.sign_test(0, 0) == 1.0
    assert generalization.sign_test(12, 30) == pytest.approx(2 * sum(comb(42, i) for i in range(13)) / 2**42)
    assert generalization.sign_test(30, 12) == generalization.sign_test(12, 30)


def test_paired_counts_the_photos_only_one_model_puts_first():
    def first(*flags):
        return {"first": {f"p{i}.jpg": f for i, f in enumerate(flags)}}

    results = {
        "old": {"set": {"given": first(True, True, False, False), "auto": first(True, False, False, False)}},
        "new": {"set": {"given": first(True, False, True, True), "auto": {"first": {"p0.jpg": False, "p9.jpg": True}}}},
    }
    out = generalization.paired(results)
    assert out["new/set/given"] == {"only_old": 1, "only_new": 2, "sign_test_p": 1.0}
    # only the photos both runs scored are compared
    assert out["new/set/auto"] == {"only_old": 1, "only_new": 0, "sign_test_p": 1.0}
    assert generalization.paired({"only": results["old"]}) == {}
