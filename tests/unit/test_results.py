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
from servesweep.results.points import SweepPoint
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
        assert Summary.model_validate(summary).levels[1].telemetry.to_file() == {"window": [1.0, 3.0]}
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
    from servesweep.analysis.selection import points_frame

    for path in sorted(EXAMPLES.rglob("points.jsonl")):
        points = read_points(path.parent)
        raws = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        df = points_frame(points, model_dir="/nonexistent")  # no weights here: memory from telemetry only
        assert len(df) == len(points) == len(raws), path
        first = points[0]
        assert first.spec.precision == df.precision[0] and first.figures.completed == df.completed[0], path
        for point, raw in zip(points, raws):  # the views the verification and the SKU measurement read
            server, telemetry = point.server_record, point.server_telemetry
            assert server.gpus == (raw.get("server") or {}).get("gpus"), path
            assert server.block_size == ((raw.get("server") or {}).get("kv_pool") or {}).get("block_size"), path
            assert telemetry.kv_pool_tokens == (raw.get("telemetry") or {}).get("kv_pool_tokens"), path


def _migrated(raw: dict) -> dict:
    """A version 1 point as version 2 writes it: with repeats, the load test's own figures back in
    their places (from `pooled_over_repeats`, which goes) and the means over the repeats left to ci95."""
    summary = dict(raw.get("summary") or {})
    if "pooled_over_repeats" not in summary:
        return raw
    pooled = summary.pop("pooled_over_repeats")
    summary.update({k: pooled[k] for k in ("output_token_throughput", "request_throughput")})
    summary["goodput"] = {**summary["goodput"], "request_goodput": pooled["request_goodput"]}
    return {**raw, "schema_version": 2, "summary": summary}


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("points.jsonl")), ids=str)
def test_committed_points_load_and_write_back_unchanged(path):
    """Every committed point through SweepPoint and back: byte for byte (key order and all) where
    it needs no migration; a version 1 point run with repeats comes back in version 2's layout,
    and its headline (what the report and the searches read) is still the means it held."""
    from servesweep.results.io import dumps

    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    points = read_points(path.parent)
    assert len(points) == len(lines)
    for line, point in zip(lines, points):
        raw = json.loads(line)
        back = point.to_file()
        if "pooled_over_repeats" not in (raw.get("summary") or {}):
            assert dumps(back) == line, (path, point.config, point.level)
            continue
        assert _json(back) == _migrated(raw), (path, point.config, point.level)
        old = raw["summary"]
        assert point.summary.headline_output_token_throughput == old["output_token_throughput"]
        assert point.summary.headline_request_throughput == old["request_throughput"]
        assert point.summary.headline_request_goodput == old["goodput"]["request_goodput"]
        assert point.summary.headline_view()["output_token_throughput"] == old["output_token_throughput"]
        again = SweepPoint.model_validate(json.loads(dumps(back)))  # the migrated line reads as itself
        assert again.to_file() == back


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("summary.json")), ids=str)
def test_committed_summaries_write_back_in_their_own_order(path):
    raw = path.read_bytes()
    assert dumps_indented(read_summary(path).to_file()) == raw.rstrip(b"\n"), path


def dumps_indented(data):
    from servesweep.results.io import dumps

    return dumps(data, indent=True)


def _ladder_searches():
    """The committed load searches (a configuration's ladder, `configs/<config>/search.json`, also
    copied to a results folder's top in examples/cpu-repeats): every search.json but a config
    search's (results.config_search), which has `steps`."""
    return [p for p in sorted(EXAMPLES.rglob("search.json")) if "steps" not in json.loads(p.read_text())]


@pytest.mark.parametrize("path", _ladder_searches(), ids=str)
def test_committed_ladder_searches_load_and_write_back_unchanged(path):
    from servesweep.results.ladder_search import LADDER_SEARCH_SCHEMA_VERSION, LadderSearch

    raw = json.loads(path.read_text())
    search = LadderSearch.model_validate(raw)
    assert search.schema_version == LADDER_SEARCH_SCHEMA_VERSION  # files without the field are version 1
    assert _json(search.to_file()) == raw
    assert search.kind == "concurrency" and search.rungs and search.stop_reason
    assert [r.level(search.kind) for r in search.rungs] == [r["concurrency"] for r in raw["rungs"]]
    assert search.recommended == raw["recommended_concurrency"]


def test_committed_examples_include_ladder_searches():
    assert len(_ladder_searches()) >= 10
    assert any((p.parent.parent.name == "configs") for p in _ladder_searches())


def test_ladder_search_built_from_the_search_and_read_back(tmp_path):
    from servesweep.loadgen.stats import SLO
    from servesweep.results.ladder_search import (
        LADDER_SEARCH_SCHEMA_VERSION,
        read_ladder_search,
        read_ladder_searches,
        write_ladder_search,
    )
    from servesweep.scenarios.search import LadderConfig, RateSearchConfig
    from servesweep.sweep.ladder import ConcurrencyLadder, RateSearch
    from servesweep.sweep.observation import Observation

    ladder = ConcurrencyLadder(LadderConfig(max_concurrency=4), SLO(ttft_ms=1000))
    tputs = {1: 100.0, 2: 200.0, 3: 205.0, 4: 210.0}
    while (c := ladder.next_level()) is not None:
        ladder.record(c, Observation(output_tok_s=tputs[c], request_goodput=tputs[c] / 100))
    assert ladder.done and ladder.rungs
    rate = RateSearch(RateSearchConfig(start_rate=1.0, max_rate=2.0))
    rate.next_level()
    rate.record(1.0, Observation(output_tok_s=10.0, request_goodput=1.0))
    for label, search in (("bf16", ladder), ("rate", rate)):
        model = search.to_model()
        assert model.to_file() == {"schema_version": LADDER_SEARCH_SCHEMA_VERSION, **search.to_dict()}
        write_ladder_search(tmp_path / "configs" / label, model)
    got = dict(read_ladder_searches(tmp_path))
    assert list(got) == ["bf16", "rate"]
    assert got["bf16"].recommended == ladder.recommended_concurrency and got["bf16"].ceiling == 4
    assert got["rate"].recommended == rate.best_rate and got["rate"].rungs[0].level("request_rate") == 1.0
    assert read_ladder_search(tmp_path / "configs" / "none") is None


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("report-inputs.json")), ids=str)
def test_committed_report_inputs_load_and_write_back_unchanged(path):
    from servesweep.results.report_inputs import REPORT_INPUTS_SCHEMA_VERSION, ReportInputs

    raw = json.loads(path.read_text())
    inputs = ReportInputs.model_validate(raw)
    assert inputs.schema_version == REPORT_INPUTS_SCHEMA_VERSION  # files without the field are version 1
    assert _json(inputs.to_file()) == raw
    for rel in [inputs.quality_from, *inputs.measured]:
        assert rel is None or (path.parent / rel).is_dir(), rel  # the folders moved together


def test_report_inputs_written_through_the_model(tmp_path):
    from servesweep.analysis.recommend import store_report_inputs, stored_report_inputs
    from servesweep.results.report_inputs import REPORT_INPUTS_FILE, REPORT_INPUTS_SCHEMA_VERSION

    (tmp_path / "quality").mkdir()
    (tmp_path / "h200").mkdir()
    store_report_inputs(tmp_path / "tput", tmp_path / "quality", [tmp_path / "h200"])
    assert json.loads((tmp_path / "tput" / REPORT_INPUTS_FILE).read_text()) == {
        "schema_version": REPORT_INPUTS_SCHEMA_VERSION, "quality_from": "../quality", "measured": ["../h200"]}
    assert stored_report_inputs(tmp_path / "tput") == (tmp_path / "quality", [tmp_path / "h200"])
