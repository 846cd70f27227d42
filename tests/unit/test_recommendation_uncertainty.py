"""The recommendation states its uncertainty (issue 25): intervals over repeats of the recommended
point, an SLO verdict per metric that is "uncertain" when the interval straddles the limit, and a
plain statement when the point was measured in one window."""

import json

from servesweep.confidence import interval
from servesweep.analysis.uncertainty import recommendation_uncertainty
from servesweep.results.points import SweepPoint

SLO = {"ttft_ms": 1000, "tpot_ms": 100, "percentile": 99}


def _point(ttft_p99: list[float], tput: list[float]) -> dict:
    return SweepPoint.model_validate({
        "config": "bf16", "config_spec": {}, "level": "c32", "status": "ok",
        "summary": {"ci95": {"c32": {"output_tok_s": interval(tput), "ttft_ms.p99": interval(ttft_p99),
                                     "tpot_ms.p99": interval([40.0, 41.0, 42.0])}}}})


def test_an_interval_straddling_the_limit_is_uncertain_and_the_note_says_so(tmp_path):
    u = recommendation_uncertainty(tmp_path, _point([900, 1050, 980], [3000, 3100, 2950]), SLO, "bf16", "c32")
    assert u["repeats"] == 3 and u["method"] == "student-t over repeats"
    assert u["slo"]["ttft_ms"]["verdict"] == "uncertain"
    assert u["slo"]["tpot_ms"]["verdict"] == "met"
    assert u["output_tok_s"]["low"] < 3016 < u["output_tok_s"]["high"]
    assert "uncertain" in u["note"] and "3 repeats" in u["note"]


def test_intervals_clear_of_the_limit_are_met_or_missed(tmp_path):
    met = recommendation_uncertainty(tmp_path, _point([500, 510, 505], [3000, 3010, 3005]), SLO, "bf16", "c32")
    missed = recommendation_uncertainty(tmp_path, _point([1500, 1510, 1505], [3000, 3010, 3005]), SLO, "bf16", "c32")
    assert met["slo"]["ttft_ms"]["verdict"] == "met"
    assert missed["slo"]["ttft_ms"]["verdict"] == "missed"
    assert "uncertain" not in met["note"]


def test_one_window_says_there_is_no_interval_and_quotes_the_ladder(tmp_path):
    (tmp_path / "configs" / "bf16").mkdir(parents=True)
    (tmp_path / "configs" / "bf16" / "search.json").write_text(
        json.dumps({"uncertainty": {"note": "c48's TTFT verdict stayed uncertain at the repeat cap"}}))
    point = SweepPoint.model_validate({"config": "bf16", "config_spec": {}, "level": "c32", "status": "ok", "summary": {}})
    u = recommendation_uncertainty(tmp_path, point, SLO, "bf16", "c32")
    assert u["repeats"] == 0 and u["output_tok_s"] is None and u["slo"] == {}
    assert "no interval" in u["note"] and "c48's TTFT verdict" in u["note"]
