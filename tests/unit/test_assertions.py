"""CI thresholds against real `summarize` output: parsing, resolution, missing values, the table rows."""

import pytest

from servesweep.errors import ConfigError
from servesweep.loadgen.records import ERROR_HTTP, RequestRecord
from servesweep.loadgen.stats import SLO, summarize
from servesweep.reports.assertions import (
    allowed_metrics,
    all_passed,
    evaluate,
    parse_assertion,
    parse_assertions,
    result_rows,
)


def record(i: int, ttft_s: float, e2e_s: float, tokens: int = 10, ok: bool = True) -> RequestRecord:
    r = RequestRecord(request_id=i, level="c1", warmup=False, scheduled_s=float(i), sent_s=float(i),
                      output_len_requested=tokens)
    if ok:
        r.first_token_s = i + ttft_s
        r.end_s = i + e2e_s
        r.prompt_tokens, r.completion_tokens = 5, tokens
    else:
        r.end_s = i + e2e_s
        r.error_kind, r.error_message = ERROR_HTTP, "HTTP 500"
    return r


@pytest.fixture
def summaries():
    # Four requests one second apart; TTFTs 0.1 0.2 0.3 0.4 s, e2e 1 s: window 4 s.
    good = summarize([record(i, 0.1 * (i + 1), 1.0) for i in range(4)], SLO(ttft_ms=250))
    all_failed = summarize([record(i, 0.1, 1.0, ok=False) for i in range(2)])
    return {"c1": good, "c8": all_failed}


def test_parse_forms_and_canonical_names():
    a = parse_assertion(" ttft_ms.p99 < 500 ")
    assert (a.text, a.metric, a.op, a.threshold) == ("ttft_ms.p99<500", "ttft_ms.p99", "<", 500.0)
    assert parse_assertion("goodput>=20").metric == "goodput.request_goodput"
    assert parse_assertion("goodput.fraction_good>0.9").metric == "goodput.fraction_good"
    assert [x.op for x in parse_assertions(["failed==0", "completed!=0", "e2e_ms.p50<=2e3", "duration_s>-1"])] \
        == ["==", "!=", "<=", ">"]
    assert parse_assertion("e2e_ms.p50<=2e3").threshold == 2000.0
    assert "ttft_ms.p99" in allowed_metrics() and "goodput" in allowed_metrics()


@pytest.mark.parametrize("text, message", [
    ("ttft_ms.p99 500", "not METRIC OP NUMBER"),
    ("ttft_ms.p99<fast", "not METRIC OP NUMBER"),
    ("ttft_ms.p99=<500", "not METRIC OP NUMBER"),
    ("", "not METRIC OP NUMBER"),
    ("ttft.p99<500", "unknown metric 'ttft.p99'; allowed: completed, failed"),
    ("ttft_ms.p42<500", "unknown metric"),
    ("goodput.slo<1", "unknown metric"),
    ("errors<1", "unknown metric"),
    ("ttft_ms<500", "ttft_ms needs a statistic, e.g. ttft_ms.p99"),
])
def test_bad_expressions_are_refused_with_the_allowed_names(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_assertion(text)


def test_evaluate_against_summaries(summaries):
    checks = parse_assertions(["ttft_ms.p50<300", "ttft_ms.max<300", "failed==0", "goodput>=0.25",
                               "goodput.good_requests==2", "request_throughput>0.9", "e2e_ms.p99<=1000"])
    results = evaluate(checks, {"c1": summaries["c1"]})
    by = {r.expression: r for r in results}
    assert by["ttft_ms.p50<300"].actual == pytest.approx(250.0) and by["ttft_ms.p50<300"].passed
    assert by["ttft_ms.max<300"].actual == pytest.approx(400.0) and not by["ttft_ms.max<300"].passed
    assert by["failed==0"].actual == 0 and by["failed==0"].passed
    # 2 of 4 requests meet TTFT <= 250 ms over a 4 s window: 0.5 good requests/s.
    assert by["goodput>=0.25"].actual == pytest.approx(0.5) and by["goodput>=0.25"].passed
    assert by["goodput.good_requests==2"].passed
    assert by["request_throughput>0.9"].actual == pytest.approx(1.0) and by["request_throughput>0.9"].passed
    assert by["e2e_ms.p99<=1000"].passed
    assert not all_passed(results)
    assert all_passed([r for r in results if r.passed])
    assert not all_passed([])


def test_missing_values_fail_with_a_reason(summaries):
    checks = parse_assertions(["ttft_ms.p99<500", "goodput>1", "failed==0", "completed>=0"])
    results = evaluate(checks, [("c8", summaries["c8"])])
    by = {r.expression: r for r in results}
    assert by["ttft_ms.p99<500"].actual is None and not by["ttft_ms.p99<500"].passed
    assert by["ttft_ms.p99<500"].note == "no value (no request completed)"
    assert by["goodput>1"].note == "no value (no SLO was given, so no goodput)" and not by["goodput>1"].passed
    assert by["failed==0"].actual == 2 and not by["failed==0"].passed and by["failed==0"].note == ""
    assert by["completed>=0"].passed


def test_levels_keep_their_order_and_rows_render(summaries):
    results = evaluate(parse_assertions(["ttft_ms.p50<300", "failed==0"]), summaries)
    assert [(r.level, r.expression) for r in results] == [
        ("c1", "ttft_ms.p50<300"), ("c1", "failed==0"), ("c8", "ttft_ms.p50<300"), ("c8", "failed==0")]
    header, rows = result_rows(results)
    assert header == ["level", "assertion", "actual", "result"]
    assert rows == [
        ["c1", "ttft_ms.p50<300", "250", "PASS"],
        ["c1", "failed==0", "0", "PASS"],
        ["c8", "ttft_ms.p50<300", "-", "FAIL: no value (no request completed)"],
        ["c8", "failed==0", "2", "FAIL"],
    ]
