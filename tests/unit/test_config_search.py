"""The config search (sweep: {search: auto}) on synthetic measurements with known answers."""

from pathlib import Path

import pytest

from servesweep.results.config_search_record import (
    SKIP_BUDGET,
    SKIP_DOMINATED,
    SKIP_NOT_REACHED,
    SKIP_SAME_LADDER,
    STOP_CONVERGED,
    STOP_EXHAUSTED,
    STOP_MAX_STARTS,
    STOP_NOTHING_FITS,
    ConfigSearchRecord,
    Measured,
    read_search_record,
)
from servesweep.loadgen.stats import SLO
from servesweep.results import SweepPoint, append_point
from servesweep.results.ladder_search import LadderSearch
from servesweep.scenarios.schema import Scenario
from servesweep.scenarios.search import ConfigSearchConfig
from servesweep.sweep.config_search import Candidate, ConfigSearch, beats, measured_from_points, noise
from servesweep.sweep.config_search_run import ConfigSearchDriver

SEQS = [4, 8, 16, 32]
TOKENS = [256, 512, 2048]
GIB = 2**30


def label(seqs: int, tokens: int, precision: str = "bf16") -> str:
    return f"{precision}-seqs{seqs}-tok{tokens}"


def grid(seqs=SEQS, tokens=TOKENS, precisions=("bf16",), est=None) -> list[Candidate]:
    return [Candidate(label(s, t, p), {"max_batch_size": s, "max_num_tokens": t, "precision": p},
                      est(s) if est else None, "synthetic")
            for p in precisions for s in seqs for t in tokens]


def m(goodput, stop="knee", ceiling=None, ci=None, failed=None) -> Measured:
    return Measured(goodput=goodput, level="c8" if goodput is not None else None, output_tok_s=goodput,
                    goodput_ci95_half=ci, ladder_stop=stop, ladder_ceiling=ceiling, failed=failed)


def drive(search: ConfigSearch, measure) -> list[str]:
    order = []
    while (pick := search.next_config()) is not None:
        order.append(pick[0])
        search.record(pick[0], measure(pick[0]))
    return order


def landscape(values: dict[int, float], stop="knee"):
    """Goodput by max_num_batched_tokens; the ladder stops below the cap (knee) everywhere."""
    def measure(name: str) -> Measured:
        tokens = int(name.rsplit("tok", 1)[1])
        return m(values[tokens], stop=stop)
    return measure


VLLM_NAMES = {"max_batch_size": "max_num_seqs", "max_num_tokens": "max_num_batched_tokens"}


def options(**kw) -> ConfigSearchConfig:
    return ConfigSearchConfig(method="auto", **kw)


def make(candidates: list[Candidate], opts: ConfigSearchConfig | None = None, **kw) -> ConfigSearch:
    """A search over `candidates` with vLLM's knob names, under the concurrency ladder (ceiling 32)."""
    kw.setdefault("ladder_max", 32)
    return ConfigSearch(candidates, opts or options(), names=VLLM_NAMES, **kw)


def test_starts_at_the_highest_cap_and_the_middle_of_the_other_axes():
    search = make(grid(), options())
    name, why = search.next_config()
    assert name == label(32, 512)
    assert why.startswith("start:") and "max_num_seqs 32" in why
    assert "max_num_batched_tokens 512, the middle of 256..2048" in why
    assert search.next_config() == (name, why)  # the same until recorded
    assert [(a.kind, a.knob) for a in search.axes] == [("batch_cap", "max_num_seqs"),
                                                       ("ordinal", "max_num_batched_tokens")]


def test_walks_uphill_along_an_axis_and_skips_lower_caps_as_dominated():
    search = make(grid(), options(noise_floor=0.05))
    order = drive(search, landscape({256: 8.0, 512: 10.0, 2048: 12.0}))
    assert order == [label(32, 512), label(32, 256), label(32, 2048)]
    assert search.best == label(32, 2048) and search.stop_reason == STOP_CONVERGED
    rec = search.record_model(1.0, None)
    assert rec.starts == 3 and rec.grid_size == 12
    assert {s.config for s in rec.skipped} | {s.config for s in rec.steps} == {c.label for c in grid()}
    skipped = {s.config: s for s in rec.skipped}
    assert skipped[label(16, 2048)].rule == SKIP_DOMINATED and label(32, 2048) in skipped[label(16, 2048)].why
    assert all(s.rule == SKIP_DOMINATED for s in rec.skipped)
    assert rec.steps[2].moved and "new best" in rec.steps[2].verdict
    assert rec.steps[1].verdict.startswith(f"not above {label(32, 512)}")
    assert rec.anchor == rec.best.config == label(32, 2048)


def test_a_gain_inside_the_noise_does_not_move_the_best():
    search = make(grid(seqs=[32], tokens=[256, 512, 1024, 2048]), options(noise_floor=0.10))
    # 512 starts (the lower middle); 1024 is 5 % better: inside the 10 % floor, so the walk does
    # not go on to 2048 although 2048 would have been better still.
    order = drive(search, landscape({256: 9.0, 512: 10.0, 1024: 10.5, 2048: 20.0}))
    assert order == [label(32, 512), label(32, 256), label(32, 1024)]
    # The moves stay at 512; the best reported is the highest measured, 1024, within the noise of it.
    assert search.anchor == label(32, 512) and search.best == label(32, 1024)
    assert "inside the noise" in search.steps[2].verdict and not search.steps[2].moved
    assert search.steps[2].best_after == label(32, 1024)
    skipped = {s.config: s for s in search.record_model(0, None).skipped}
    assert skipped[label(32, 2048)].rule == SKIP_NOT_REACHED


def test_noise_uses_the_repeats_intervals_when_both_have_them():
    a, b = m(10.0, ci=0.3), m(10.5, ci=0.4)
    assert noise(a, b, 0.10) == pytest.approx(0.5)
    assert not beats(b, a, 0.10)  # a 0.5 gap is not more than the 0.5 of the intervals
    assert beats(m(10.6, ci=0.3), m(10.0, ci=0.4), 0.10)  # 0.6 is, though under the 10 % floor
    assert not beats(b, m(10.0), 0.10)  # one without repeats: the 10 % floor (1.05)
    assert beats(m(1.0), m(None), 0.1) and not beats(m(None), m(1.0), 0.1)


def test_a_cap_that_bound_the_ladder_makes_the_next_cap_a_neighbour_to_try():
    est = lambda s: s * GIB  # noqa: E731 (seqs 32 needs 32 GiB)
    search = make(grid(tokens=[512], est=est), options(), budget_bytes=20 * GIB)
    assert search.skipped[label(32, 512)].rule == SKIP_BUDGET
    assert "over the 20 GiB budget" in search.skipped[label(32, 512)].why
    name, why = search.next_config()
    assert name == label(16, 512) and "the highest that fits the budget" in why
    search.record(name, m(10.0, stop="ceiling", ceiling=16))
    # 16 hit its cap below the ladder's 32, but 32 is over the budget: nothing left above.
    assert search.next_config() is None and search.stop_reason == STOP_CONVERGED
    assert search.skipped[label(8, 512)].rule == SKIP_DOMINATED


def test_same_ladder_rule_upwards():
    search = make(grid(tokens=[512]), options())
    search.measured[label(8, 512)] = m(5.0, stop="knee")
    rule, why = search.rule_out(label(16, 512))
    assert rule == SKIP_SAME_LADDER and "stopped its ladder at knee" in why
    search.measured[label(8, 512)] = m(5.0, stop="ceiling", ceiling=8)
    assert search.rule_out(label(16, 512)) is None  # the cap bound it: a higher cap may do better
    search.measured[label(8, 512)] = m(None, failed="out of memory")
    assert search.rule_out(label(4, 512)) is None  # a failed start proves nothing about lower caps


def test_categorical_axis_tries_every_other_value():
    search = make(grid(seqs=[16], tokens=[512], precisions=("bf16", "fp16", "fp32")))
    values = {"bf16": 10.0, "fp16": 10.2, "fp32": 4.0}
    order = drive(search, lambda n: m(values[n.split("-")[0]]))
    assert order == [label(16, 512, "bf16"), label(16, 512, "fp16"), label(16, 512, "fp32")]
    assert search.anchor == label(16, 512, "bf16")  # fp16 within the 5 % floor: no move
    assert search.best == label(16, 512, "fp16")


def test_without_the_ladder_max_num_seqs_is_an_ordinal_axis():
    search = make(grid(tokens=[512]), ladder_max=None)
    assert search.axes[0].kind == "ordinal"
    assert search.next_config()[0] == label(8, 512)  # the lower middle, no dominance
    assert search.rule_out(label(4, 512)) is None


def test_nothing_fits_the_budget():
    search = make(grid(est=lambda s: 100 * GIB), options(), budget_bytes=GIB)
    assert search.next_config() is None and search.stop_reason == STOP_NOTHING_FITS
    rec = search.record_model(0, 1.0)
    assert rec.best is None and "no configuration met the limits" in rec.no_best
    assert len(rec.skipped) == 12


def test_a_search_where_nothing_meets_the_limits_ends_without_a_best():
    search = make(grid(seqs=[8, 16], tokens=[256, 512]), options())
    order = drive(search, lambda n: m(None, stop="slo"))
    # Each measured top cap dominates the lower one; the rest are tried one by one.
    assert order == [label(16, 256), label(16, 512)]
    assert search.stop_reason == STOP_EXHAUSTED and search.best is None
    assert search.record_model(0, None).no_best


def test_max_starts():
    search = make(grid(), options(max_starts=2))
    drive(search, landscape({256: 11.0, 512: 10.0, 2048: 12.0}))
    assert len(search.steps) == 2 and search.stop_reason == STOP_MAX_STARTS
    assert search.best == label(32, 256)


def test_deterministic_replay():
    runs = [drive(make(grid(), options()), landscape({256: 8.0, 512: 12.0, 2048: 9.0}))
            for _ in range(2)]
    assert runs[0] == runs[1] == [label(32, 512), label(32, 256), label(32, 2048)]


def _point(config: str, conc: int, goodput: float, ttft_p99: float = 100.0, status: str = "ok") -> dict:
    summary = {"completed": 10, "failed": 0, "request_throughput": goodput, "output_token_throughput": goodput * 32,
               "goodput": {"request_goodput": goodput}, "ttft_ms": {"p99": ttft_p99}, "tpot_ms": {"p99": 10.0},
               "e2e_ms": {"p99": 500.0}}
    return {"config": config, "config_spec": {}, "level": f"c{conc}", "status": status,
            "summary": summary if status == "ok" else None, "cause": None if status == "ok" else "oom",
            "telemetry": {"preemptions": 0, "kv_cache_peak_frac": 0.2}}


def test_measured_from_points_takes_the_best_clean_level():
    slo = SLO(ttft_ms=1000)
    points = [_point("a", 1, 1.0), _point("a", 2, 2.0), _point("a", 4, 3.0, ttft_p99=2000.0)]
    ladder = LadderSearch.model_validate({"stop_reason": "slo", "config": {"max_concurrency": 8}})
    got = measured_from_points([SweepPoint.model_validate(p) for p in points], slo, 99, 0.95, ladder)
    assert (got.goodput, got.level, got.ladder_stop, got.ladder_ceiling) == (2.0, "c2", "slo", 8)
    failed = measured_from_points([SweepPoint.model_validate(_point("a", 1, 0, status="failed"))], slo)
    assert failed.goodput is None and failed.failed == "oom"


class FakeRunner:
    """Stands in for SweepRunner: run_one writes synthetic points unless they are there already."""

    def __init__(self, scenario: Scenario, out: Path, goodput: dict[str, float]) -> None:
        from servesweep.console import plain_console

        self.scenario, self.out, self.console = scenario, out, plain_console()
        self.goodput, self.launched = goodput, []

    def run_one(self, config, prefix, points) -> bool:
        if any(p.config == config.label() for p in points):
            return False
        self.launched.append(config.label())
        append_point(self.out, _point(config.label(), 4, self.goodput[config.label()]))
        return True


def _scenario() -> Scenario:
    return Scenario.model_validate({
        "name": "s", "model": "/nonexistent", "load": {"concurrency": "auto", "ladder": {"max_concurrency": 8}},
        "slo": {"ttft_ms": 1000}, "sweep": {"max_num_seqs": [4, 8], "max_num_batched_tokens": [256, 512, 1024],
                                           "search": "auto"}})


def test_driver_writes_search_json_and_resumes_without_starting_again(tmp_path):
    scenario = _scenario()
    configs = scenario.server_configs("/nonexistent")
    values = {c.label(): {256: 1.0, 512: 2.0, 1024: 3.0}[c.max_num_tokens] for c in configs}
    runner = FakeRunner(scenario, tmp_path, values)
    first = ConfigSearchDriver(runner, configs).run()
    assert runner.launched == ["bf16-seqs8-tok512", "bf16-seqs8-tok256", "bf16-seqs8-tok1024"]
    assert first.best.config == "bf16-seqs8-tok1024" and first.starts == 3
    on_disk = read_search_record(tmp_path)
    assert isinstance(on_disk, ConfigSearchRecord) and on_disk.best.config == first.best.config
    again = FakeRunner(scenario, tmp_path, values)
    second = ConfigSearchDriver(again, configs).run()
    assert again.launched == []  # every choice replayed from the points on disk
    assert [s.config for s in second.steps] == [s.config for s in first.steps]
    assert all(s.resumed for s in second.steps)


def test_scenario_search_option_and_the_tokens_axis():
    scenario = _scenario()
    assert scenario.sweep.search.method == "auto" and scenario.sweep.search.noise_floor == 0.05
    labels = [c.label() for c in scenario.server_configs("/m")]
    assert labels[:3] == ["bf16-seqs4-tok256", "bf16-seqs4-tok512", "bf16-seqs4-tok1024"]
    plain = Scenario.model_validate({"name": "p", "load": {"concurrency": [1]}})
    assert plain.sweep.search.method == "grid" and plain.server_configs("/m")[0].label() == "bf16"


def test_the_benchmark_scenario_is_valid_and_the_pre_registered_grid_of_eight():
    """bench/config_search.yaml as bench/config_search_preregistration.md fixed it before the runs."""
    from servesweep.scenarios.schema import load_scenario

    scenario = load_scenario(Path(__file__).resolve().parents[2] / "bench" / "config_search.yaml")
    assert scenario.sweep.search.method == "auto" and scenario.sweep.search.noise_floor == 0.20
    assert scenario.sweep.precision == ["fp32", "bf16"] and scenario.sweep.max_num_tokens == [256, 512, 1024, 2048]
    assert len(scenario.server_configs("/m")) == 8
