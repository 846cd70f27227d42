import numpy as np
import pytest

from servesweep.loadgen.records import ERROR_CANCELLED, ERROR_HTTP, RequestRecord
from servesweep.loadgen.stats import SLO, distribution, summarize


def make_record(i, sent, ttft, itl_gaps, n_out, warmup=False, error=None):
    first = sent + ttft
    arrivals = [first]
    for gap in itl_gaps:
        arrivals.append(arrivals[-1] + gap)
    return RequestRecord(
        request_id=i, level="c1", warmup=warmup, scheduled_s=sent, sent_s=sent,
        first_token_s=None if error else first, end_s=arrivals[-1] + 0.001,
        chunk_arrivals_s=[] if error else arrivals, prompt_tokens=10, completion_tokens=None if error else n_out,
        output_len_requested=n_out, error_kind=error, error_message="boom" if error else None,
    )


def test_distribution_matches_numpy():
    rng = np.random.default_rng(1)
    values = rng.lognormal(3, 1, 1000)
    d = distribution(values)
    assert d["mean"] == pytest.approx(values.mean())
    assert d["std"] == pytest.approx(values.std())
    for p in (50, 90, 95, 99):
        assert d[f"p{p}"] == pytest.approx(np.percentile(values, p))
    assert d["max"] == pytest.approx(values.max())
    assert d["count"] == 1000


def test_empty_distribution_is_all_none():
    d = distribution([])
    assert d["mean"] is None and d["p99"] is None and d["count"] == 0


def test_derived_latencies():
    r = make_record(0, sent=1.0, ttft=0.05, itl_gaps=[0.01, 0.02, 0.03], n_out=4)
    assert r.ttft_ms == pytest.approx(50)
    assert r.itl_ms == pytest.approx([10, 20, 30])
    assert r.e2e_ms == pytest.approx(50 + 60 + 1)
    # TPOT = (e2e - ttft) / (n - 1)
    assert r.tpot_ms == pytest.approx((111 - 50) / 3)


def test_summary_counts_throughput_and_excludes_warmup():
    records = [make_record(0, 0.0, 5.0, [0.01] * 3, 4, warmup=True)]  # slow warm-up, left out
    records += [make_record(i, 1.0 + i * 0.5, 0.1, [0.01] * 9, 10) for i in range(1, 5)]
    records.append(make_record(5, 1.2, 0.1, [], 10, error=ERROR_HTTP))
    records.append(make_record(6, 1.3, 0.1, [], 10, error=ERROR_CANCELLED))
    s = summarize(records)
    assert s["completed"] == 4 and s["failed"] == 1 and s["cancelled"] == 1 and s["warmup_excluded"] == 1
    assert s["errors"] == {ERROR_HTTP: 1}
    # window: first measured send (1.5) .. last measured non-cancelled end
    ok = [r for r in records[1:5]]
    window = max(r.end_s for r in records[1:6]) - min(r.sent_s for r in records[1:7])
    assert s["duration_s"] == pytest.approx(window)
    assert s["output_token_throughput"] == pytest.approx(40 / window)
    assert s["total_token_throughput"] == pytest.approx(80 / window)
    assert s["ttft_ms"]["p50"] == pytest.approx(100)
    assert s["itl_ms"]["count"] == 36
    assert s["output_len_mismatch"] == 0
    assert all(r.ok for r in ok)


def test_goodput_counts_requests_meeting_every_slo():
    records = [make_record(i, i * 0.1, ttft, [0.01] * 4, 5) for i, ttft in enumerate([0.05, 0.2, 0.05, 0.05])]
    records[3].chunk_arrivals_s[-1] += 1.0  # a slow tail breaks its TPOT
    records[3].end_s += 1.0
    s = summarize(records, SLO(ttft_ms=100, tpot_ms=50))
    assert s["goodput"]["good_requests"] == 2
    assert s["goodput"]["request_goodput"] == pytest.approx(2 / s["duration_s"])
    assert "goodput" not in summarize(records)


def test_output_length_mismatch_is_counted():
    r = make_record(0, 0.0, 0.1, [0.01], 2)
    r.output_len_requested = 5
    assert summarize([r])["output_len_mismatch"] == 1


def test_latencies_count_from_the_socket_and_client_delay_is_reported_apart():
    from servesweep.loadgen.records import RequestRecord
    from servesweep.loadgen.stats import summarize

    r = RequestRecord(request_id=0, level="c1", warmup=False, scheduled_s=0.0, sent_s=1.000, wire_s=1.004,
                      first_token_s=1.054, end_s=1.104, chunk_arrivals_s=[1.054, 1.104], completion_tokens=2)
    assert r.ttft_ms == pytest.approx(50.0) and r.e2e_ms == pytest.approx(100.0)
    assert r.client_send_delay_ms == pytest.approx(4.0)
    legacy = RequestRecord(request_id=1, level="c1", warmup=False, scheduled_s=0.0, sent_s=1.0, first_token_s=1.05,
                           end_s=1.1)
    assert legacy.ttft_ms == pytest.approx(50.0) and legacy.client_send_delay_ms is None
    summary = summarize([r, legacy])
    assert summary["client_send_delay_ms"]["count"] == 1
    assert summary["client_send_delay_ms"]["max"] == pytest.approx(4.0)
