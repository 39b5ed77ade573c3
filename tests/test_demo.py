"""ibsr-demo, the README's first command, on a small catalog: it generates, indexes, searches
and reports ranks that agree with its own hits; a second run reuses the index, a run with
another model builds it again."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ibsr.cli.demo import main


def test_demo_runs_end_to_end_and_reports_consistent_ranks(tmp_path, tiny_weights):
    out = tmp_path / "demo"
    args = ["--out", str(out), "--shapes-per-category", "2", "--photos-per-category", "1", "--seed", "77", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    results, summary = payload["results"], payload["summary"]
    truths = [json.loads(line)["shape_id"] for line in (out / "queries.jsonl").read_text().splitlines()]
    assert len(results) == len(truths) == summary["photos"] == 8
    ranks = [next((h["rank"] for h in r["hits"] if h["shape_id"] == t), None) for r, t in zip(results, truths)]
    assert summary["top1"] == sum(rank == 1 for rank in ranks)
    assert summary["topk"] == sum(rank is not None for rank in ranks)
    assert summary["topk"] >= 6  # 16 shapes, 5 hits shown: the shipped model must do far better than chance
    assert (out / "results.html").stat().st_size > 10_000

    again = CliRunner().invoke(main, args[:-1])
    assert again.exit_code == 0, again.output
    assert "indexed 0 shapes (16 already indexed)" in again.output
    assert f"correct shape at rank 1: {summary['top1']}/8" in again.output

    # another model (e.g. an updated shipped one): the demo's own index is built again, not refused
    other = CliRunner().invoke(main, args[:-1] + ["--weights", str(tiny_weights)])
    assert other.exit_code == 0, other.output
    assert "was built with another model: building it again" in other.output
    assert "indexed 16 shapes (0 already indexed)" in other.output
