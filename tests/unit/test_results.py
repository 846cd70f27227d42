"""The result files' contracts (servesweep.results): every committed file loads through its model
and writes back what it read; each file names its own schema version; the two load generators
fill summary.json through the one builder."""

import datetime as dt
import json
from pathlib import Path

import pytest

from servesweep.results import (
    RECOMMENDATION_SCHEMA_VERSION,
    SUMMARY_SCHEMA_VERSION,
    VERIFICATION_SCHEMA_VERSION,
    build_summary,
    level_entry,
    read_points,
    read_recommendation,
    read_summary,
    read_verification,
    write_summary,
)
from servesweep.results.recommendation import Recommendation
from servesweep.results.summary import Summary
from servesweep.results.verification import Verification

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _json(data):
    return json.loads(json.dumps(data, default=float))


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("recommendation.json")), ids=str)
def test_committed_recommendations_load_and_write_back_unchanged(path):
    raw = json.loads(path.read_text())
    rec = read_recommendation(path)
    assert rec.schema_version == RECOMMENDATION_SCHEMA_VERSION
    assert _json(rec.to_file()) == raw
    if rec.production_recommendation is not None:
        # The server's own names, through the recommendation's knobs (vLLM's in these files).
        prod = rec.production_recommendation
        assert prod.server_knob("max_batch_size") == raw["production_recommendation"][prod.knob_names()["max_batch_size"]]


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("verification.json")), ids=str)
def test_committed_verifications_load_and_write_back_unchanged(path):
    raw = json.loads(path.read_text())
    v = read_verification(path)
    assert v.schema_version == VERIFICATION_SCHEMA_VERSION  # files without the field are version 1
    assert _json(v.to_file()) == raw


def test_committed_summaries_and_points_load():
    summaries = sorted(EXAMPLES.rglob("summary.json"))
    assert summaries
    for path in summaries:
        s = read_summary(path)
        assert s.schema_version == SUMMARY_SCHEMA_VERSION and s.levels, path
        assert _json(s.to_file()) == json.loads(path.read_text()), path
    for path in sorted(EXAMPLES.rglob("points.jsonl")):
        assert read_points(path.parent), path


class _Telemetry:
    def window_stats(self, start_s, end_s):
        return {"window": [start_s, end_s]}


def test_one_builder_for_both_load_generators(tmp_path):
    stats = {"completed": 3, "failed": 0, "warnings": [], "ttft_ms": {"mean": 1.0}}
    levels = [level_entry("c1", {"concurrency": 1}, 0.0, 1.0, False, stats, _Telemetry()),
              level_entry("c2", {"concurrency": 2}, 1.0, 3.0, False, stats, _Telemetry())]
    common = dict(target={"url": "u"}, workload={}, seed=1, levels_requested=[], slo=None, tokenizer=None,
                  started_at=dt.datetime.now(dt.timezone.utc), host={}, stats=stats, levels=levels,
                  telemetry=_Telemetry())
    run = build_summary(**common, run={"arrival_clock": "kernel"})
    locust = build_summary(**common, load_generator="locust", run={"load": {}})
    assert run["tool"] == {"name": "servesweep", "version": run["tool"]["version"]}
    assert locust["tool"]["load_generator"] == "locust"
    for summary in (run, locust):
        assert summary["schema_version"] == SUMMARY_SCHEMA_VERSION
        assert summary["telemetry"] == {"window": [0.0, 3.0]}  # the whole test's window
        assert Summary.model_validate(summary).levels[1].telemetry == {"window": [1.0, 3.0]}
    # Written as built (key order and all) once it fits the contract; a writer that broke it is a bug.
    assert write_summary(tmp_path, run) == tmp_path / "summary.json"
    assert list(json.loads((tmp_path / "summary.json").read_text())) == list(run)
    with pytest.raises(ValueError):
        write_summary(tmp_path, {**run, "levels": "c1"})


def test_models_keep_fields_they_do_not_name():
    rec = Recommendation.model_validate({"production_recommendation": {
        "precision": "bf16", "based_on": {"config": "c", "level": "l"}, "knobs": {"max_batch_size": "max_batch_size"},
        "kv_cache_config.max_tokens": 4096}, "added_later": 1})
    assert rec.to_file()["added_later"] == 1
    assert rec.production_recommendation.to_file()["kv_cache_config.max_tokens"] == 4096
    assert "verification" not in rec.production_recommendation.to_file()  # unset fields are not written as null
    assert Verification().to_file() == {}


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("predicted_vs_*.json")), ids=str)
def test_committed_comparisons_load_and_write_back_unchanged(path):
    from servesweep.reports.projection import Comparison, comparison_markdown

    raw = json.loads(path.read_text())
    table = Comparison.model_validate(raw)
    assert _json(table.to_file()) == raw
    assert comparison_markdown(table).startswith(f"# Predicted vs measured: {raw['target_sku']}")


def test_committed_points_read_through_the_typed_views():
    from servesweep.reports.analysis import points_frame
    from servesweep.results.points import SweepPoint

    for path in sorted(EXAMPLES.rglob("points.jsonl")):
        points = read_points(path.parent)
        df = points_frame(points, model_dir="/nonexistent")  # no weights here: memory from telemetry only
        assert len(df) == len(points), path
        first = SweepPoint.model_validate(points[0])
        assert first.spec.precision == df.precision[0] and first.figures.completed == df.completed[0], path
