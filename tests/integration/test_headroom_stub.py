"""The headroom search against the stand-in, whose KV use, preemption counter and queueing are
scripted: at the recommended load nothing happens; at 8x it is full, preempts and breaks the TTFT
SLO, and the search finds each onset there through the server's own metrics."""

import json

from rich.console import Console

from servesweep.backends.telemetry import PrometheusReader, TelemetrySampler
from servesweep.backends.vllm import METRICS
from servesweep.scenarios.schema import load_scenario
from servesweep.results.verification import AttemptRun, AttemptSizing
from servesweep.sweep.headroom_run import HeadroomRun, VerifiedRun

SCENARIO = """
name: headroom-stub
model: /nonexistent
workload: {input_len: 16, output_len: 8}
load: {concurrency: [4], num_requests: 16}
slo: {ttft_ms: 400}
headroom: {factors: [1.0, 8.0], length_factors: [2.0], window_s: 2}
"""


class Attached:
    """The stand-in as the launched server the headroom search drives."""

    tokenizer_dir = None

    def __init__(self, url: str) -> None:
        self.base_url, self.model_name = url, "stub-model"

    def telemetry(self, path):
        return TelemetrySampler(PrometheusReader(self.base_url + "/metrics", METRICS), path, 0.1)

    def info(self):
        return {}

    def poll_failure(self):
        return None


def test_the_onsets_come_where_the_stand_in_was_scripted_to_break(tmp_path, stub_server):
    # 10 req/s x ~0.35 s in flight: ~3.5 requests (KV 22 %, queue 70 ms); at 80 req/s ~28 or more:
    # KV full at 16 in flight, a preemption for every arrival past 14, TTFT 20 ms per request ahead.
    stub = stub_server(itl_s=0.05, metrics=True, kv_per_request=1 / 16, preempt_above=14, ttft_per_in_flight_s=0.02)
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO)
    out = tmp_path / "out"
    attempt = out / "verification" / "attempt-1"
    (attempt / "traffic").mkdir(parents=True)
    (attempt / "traffic" / "summary.json").write_text(json.dumps({"completed": 500, "telemetry": {}}))
    run = VerifiedRun(config="bf16", level="c4", attempt_dir=attempt, sizing=AttemptSizing(max_num_seqs=4),
                      traffic=AttemptRun(request_rate=10.0, preemptions=0), concurrency=4)
    h = HeadroomRun(load_scenario(path), out, Console(quiet=True), show_progress=False).measure(Attached(stub.url), run)
    low, high = h.steps
    assert low.preemptions == 0 and low.kv_peak_frac < 0.95 and not low.slo_breaches and low.completed > 5
    assert high.preemptions > 0 and high.kv_peak_frac >= 0.95 and high.slo_breaches
    onsets = {o.kind: o for o in h.onsets}
    for kind in ("preemption", "kv_full", "slo"):
        assert onsets[kind].status == "reached" and onsets[kind].offered_rate == 80.0, onsets[kind]
        assert onsets[kind].pct_above_recommended == 700.0 and onsets[kind].interval == [10.0, 80.0]
    assert onsets["failure"].status == "not_reached" and onsets["failure"].up_to_pct == 700.0
    assert h.stop_reason == "the cap: 8x the recommended load" and h.finished
    assert h.tail.status == "not_measured"  # no block size recorded for this run
    # The length search: requests twice as long at the recommended 10 req/s, read through the same metrics.
    (longer,) = h.length_steps
    assert longer.length_factor == 2.0 and longer.offered_rate == 10.0 and longer.preemptions is not None
    assert longer.completed > 5 and (out / "headroom" / "headroom-length-x2" / "summary.json").exists()
    assert {o.kind: o.status for o in h.length_onsets}["preemption"] in ("reached", "not_reached")
    stored = json.loads((out / "headroom.json").read_text())
    assert stored["finished"] is True and len(stored["steps"]) == 2
    assert (out / "headroom" / "headroom-x8" / "summary.json").exists()
