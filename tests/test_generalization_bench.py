"""benchmarks/generalization.py's paired comparison: photo by photo, with an exact sign test."""

from __future__ import annotations

import importlib.util
from itertools import product
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("generalization", Path(__file__).parent.parent / "benchmarks" / "generalization.py")
generalization = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generalization)


def enumerated_p(only_a: int, only_b: int) -> float:
    """The sign test by brute force: of all 2^n equally likely win/loss sequences, the share whose
    smaller side is at most this split's smaller side (two-sided, symmetric)."""
    n, k = only_a + only_b, min(only_a, only_b)
    return sum(min(sum(s), n - sum(s)) <= k for s in product((0, 1), repeat=n)) / 2**n


def test_sign_test_is_the_two_sided_binomial_tail():
    assert generalization.sign_test(0, 5) == pytest.approx(2 / 32)  # by hand: all wins either way
    assert generalization.sign_test(1, 9) == pytest.approx(2 * 11 / 1024)  # (1 + 10) sequences per side
    assert generalization.sign_test(3, 3) == 1.0 and generalization.sign_test(0, 0) == 1.0
    for split in [(2, 12), (5, 9), (6, 7), (0, 14), (7, 7)]:
        assert generalization.sign_test(*split) == pytest.approx(min(1.0, enumerated_p(*split)))
    assert generalization.sign_test(30, 12) == generalization.sign_test(12, 30)


def test_paired_counts_the_photos_only_one_model_puts_first():
    def first(*flags):
        return {"per_photo": {"top1": {f"p{i}.jpg": f for i, f in enumerate(flags)}}}

    results = {
        "old": {"set": {"given": first(True, True, False, False), "auto": first(True, False, False, False)}},
        "new": {"set": {"given": first(True, False, True, True),
                        "auto": {"per_photo": {"top1": {"p0.jpg": False, "p9.jpg": True}}}}},
    }
    out = generalization.paired(results)
    assert out["new/set/given"] == {"only_old": 1, "only_new": 2, "sign_test_p": 1.0}
    # only the photos both runs scored are compared
    assert out["new/set/auto"] == {"only_old": 1, "only_new": 0, "sign_test_p": 1.0}
    assert generalization.paired({"only": results["old"]}) == {}


def report(*records):
    """An ibsr-eval --per-query report of real photos: (shape id, rank, category hit, first hit)."""
    return {"records": [{"image": f"p{i}.jpg", "shape_id": shape, "rank": rank, "category_hit": category,
                         "top": [top] if top else []}
                        for i, (shape, rank, category, top) in enumerate(records)],
            "shape_metrics": {"summary": {"chamfer": 0.1}}}


def test_real_rows_compare_top10_category_and_family_photo_by_photo_too():
    billy = "bookcase/pix3d_ikea_billy_1"
    old = report((billy, 1, True, billy), (billy, 12, True, "bookcase/pix3d_ikea_billy_2"),
                 ("chair/pix3d_ikea_poang_1", 3, True, "chair/other"), ("chair/pix3d_ikea_poang_1", None, False, None))
    new = report((billy, 2, True, "bookcase/pix3d_ikea_billy_4"), (billy, 5, False, "desk/pix3d_ikea_galant_1"),
                 ("chair/pix3d_ikea_poang_1", 1, True, "chair/pix3d_ikea_poang_1"),
                 ("chair/pix3d_ikea_poang_1", 9, True, "chair/pix3d_ikea_poang_2"))
    results = {name: {"real-photos": {"auto": {"per_photo": generalization.per_photo(r, {})}}}
               for name, r in (("old", old), ("new", new))}
    out = generalization.paired(results)
    assert out["new/real-photos/auto"] == {"only_old": 1, "only_new": 1, "sign_test_p": 1.0}
    assert out["new/real-photos/auto/top10"] == {"only_old": 0, "only_new": 2, "sign_test_p": 0.5}
    assert out["new/real-photos/auto/category"] == {"only_old": 1, "only_new": 1, "sign_test_p": 1.0}
    assert out["new/real-photos/auto/family"] == {"only_old": 1, "only_new": 2, "sign_test_p": 1.0}
    # synthetic rows have no family
    synthetic = {name: {"set": {"given": {"per_photo": generalization.per_photo(r, None)}}}
                 for name, r in (("old", old), ("new", new))}
    assert "new/set/given/family" not in generalization.paired(synthetic)


def test_family_mean_top1_counts_each_family_once():
    billy, poang = "bookcase/pix3d_ikea_billy_1", "chair/pix3d_ikea_poang_2"
    r = report(*[(billy, 1, True, billy)] * 8, (poang, 4, True, "chair/x"), (poang, 1, True, poang))
    metrics = generalization.real_metrics(r, {})
    assert metrics["family"] == pytest.approx(9 / 10)  # per photo
    assert metrics["family_mean_top1"] == pytest.approx((8 / 8 + 1 / 2) / 2)  # per family
    assert metrics["per_family"] == {"billy": {"photos": 8, "top1": 8, "family": 8},
                                     "poang": {"photos": 2, "top1": 1, "family": 1}}


def test_query_side_variants_share_one_index(tiny_weights, other_weights, tmp_path):
    import torch

    from ibsr.model import load_checkpoint_with_info, save_checkpoint

    model, info = load_checkpoint_with_info(tiny_weights)
    with torch.no_grad():
        for p in model.query_encoder.parameters():
            p.add_(0.01)  # a query-side change: the rendering encoder is untouched
    variant = tmp_path / "variant.pt"
    save_checkpoint(model, variant, info)
    builders = generalization.index_builder({"a": str(tiny_weights), "b": str(variant), "c": str(other_weights)})
    assert builders == {"a": str(tiny_weights), "b": str(tiny_weights), "c": str(other_weights)}


def test_real_rows_are_skipped_with_a_message_without_the_real_folders(tmp_path, capsys):
    import argparse

    args = argparse.Namespace(real_dev=tmp_path / "no_dev", real_train=tmp_path / "no_train", seed=41, workers=1)
    assert generalization.make_real_sets(tmp_path / "work", args) == []
    assert "real rows skipped" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_the_mask_network_of_auto_rows_is_part_of_the_report_key(tmp_path, monkeypatch):
    """A report of automatic masks is keyed by the mask network that made them: the given one,
    else the installed one; rows with the exact masks do not depend on it."""
    installed, given = tmp_path / "installed.pt", tmp_path / "given.pt"
    installed.write_bytes(b"a")
    given.write_bytes(b"b")
    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(installed))
    assert generalization.automatic_mask_files("auto", None) == [installed]
    assert generalization.automatic_mask_files("auto", str(given)) == [given]
    assert generalization.automatic_mask_files("given", str(given)) == []
    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(tmp_path / "absent.pt"))  # GrabCut: no network file
    assert generalization.automatic_mask_files("auto", None) == []
