"""Run the headroom measurement (sweep/headroom_plan.py says what it measures) on the verified
configuration: on the verification's own server right after its passing attempt, or, when that
was not done (an earlier sweep, `servesweep headroom DIR`), on a server launched with the
verification's last sizing.

Resumable per step: `headroom.json` is written after every step (`finished: false` until the
last), and a rerun continues with the next factor as long as the verification is of the same
point. With a deadline, a step that would not fit what is left (its window, the drain of an
overload, slack; plus a server start when one is needed) is not started: SweepInterrupted.

The length tail (servesweep.sweep.kv_tail) is predicted from the workload's length distributions
and the service times of the verification's traffic run, and measured on that run: its
preemptions per 10,000 requests, and the mean KV tokens one running request held (the KV gauge x
the pool / the running batch, averaged over the samples with at least half the batch running).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from servesweep.backends import DEFAULT_KIND, config_from_dict, launch
from servesweep.loadgen.arrivals import LoadLevel, default_open_arrival
from servesweep.loadtest import LoadTestConfig, run_on_server
from servesweep.results.headroom import (
    HEADROOM_FILE,
    Headroom,
    SizingOption,
    TailRisk,
    new_headroom,
    read_headroom,
    write_headroom,
)
from servesweep.results.summary import SUMMARY_FILE, Summary, WindowTelemetry
from servesweep.results.verification import (
    VERIFICATION_FILE,
    AttemptRun,
    AttemptSizing,
    Verification,
    read_verification,
)
from servesweep.scenarios.schema import Scenario
from servesweep.sweep import DEFAULT_START_S, SweepInterrupted
from servesweep.sweep.headroom_plan import (
    device_memory,
    find_length_onsets,
    find_onsets,
    headroom_step,
    length_stop_reason,
    step_seconds,
    stop_reason,
)
from servesweep.sweep.kv_tail import length_scale_at_rate, longest_request_blocks, scaled, simulate, upper_95_per_10k
from servesweep.sweep.observation import Observation

NULL_BLOCKS = 1  # vLLM's pool holds one block no request uses
KV_POOL_MEANING = ("the KV pool is the verification's sizing: max_num_seqs x (p99 prompt + p99 output) tokens "
                   "/ 0.775; oom_margin_pct is its headroom under the stress run, which the sizing aimed at "
                   "22.5 %: it checks the sizing arithmetic, not the traffic to come (see the onsets and tail)")


@dataclass(slots=True, frozen=True)
class VerifiedRun:
    """What the headroom measurement starts from: the verification's passing attempt."""

    config: str
    level: str | None
    attempt_dir: Path
    sizing: AttemptSizing
    traffic: AttemptRun
    concurrency: int

    @classmethod
    def from_verification(cls, out: Path, verification: Verification) -> "VerifiedRun | None":
        last = verification.last()
        if last is None or not verification.passed or verification.config is None:
            return None
        return cls(config=verification.config, level=verification.level,
                   attempt_dir=out / "verification" / f"attempt-{len(verification.attempts)}",
                   sizing=last.sizing, traffic=last.traffic,
                   concurrency=int(last.sizing.max_num_seqs or 1))


def _read_summary(path: Path) -> Summary:
    """A run's summary.json; an empty one (every figure None) when it cannot be read."""
    try:
        return Summary.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError):
        return Summary()


def _kv_tokens_per_request(telemetry: Path, pool_tokens: int, concurrency: int) -> float | None:
    """Mean KV tokens one running request held, from the KV gauge and the running batch."""
    values = []
    try:
        lines = telemetry.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            s = json.loads(line)
        except ValueError:
            continue
        running, kv = s.get("running"), s.get("kv_usage")
        if running and kv is not None and running >= concurrency / 2:
            values.append(kv * pool_tokens / running)
    return sum(values) / len(values) if values else None


def tail_risk(scenario: Scenario, run: VerifiedRun, target_per_10k: float) -> TailRisk:
    """The length tail at the recommended load: predicted vs measured, and two sizings."""
    workload = scenario.workload
    if workload.dataset is not None:
        return TailRisk(status="not_measured", reason="a dataset workload has no length distribution to draw from")
    summary = _read_summary(run.attempt_dir / "traffic" / SUMMARY_FILE)
    tel = summary.telemetry or WindowTelemetry()
    block = run.sizing.inputs.block_size
    pool_tokens = tel.kv_pool_tokens or ((run.sizing.kv_blocks or 0) * (block or 0)) or None
    if not block or not pool_tokens:
        return TailRisk(status="not_measured", reason="the KV block size or pool size was not recorded")
    ttft, tpot = summary.quantile("ttft_ms", "mean"), summary.quantile("tpot_ms", "mean")
    prefill = int(round(ttft / tpot)) if ttft and tpot else 0
    occ = simulate(workload.input_len, workload.output_len, run.concurrency, int(block), prefill,
                   context=scenario.max_model_len)
    allocated = int(pool_tokens) // int(block)
    # vLLM keeps one block of its pool out of use (the null block) and its KV gauge counts the rest:
    # the sizing's 31 blocks on the CPU read 80 % with 24 in use (examples/cpu-headroom).
    reserved = NULL_BLOCKS if (run.sizing.kind or DEFAULT_KIND) == DEFAULT_KIND else 0
    pool_blocks = allocated - reserved
    per_block = (run.sizing.kv_cache_memory_bytes or 0) / (run.sizing.kv_blocks or allocated) or None
    target_blocks = max(occ.blocks_for_rate(target_per_10k), 1)

    def option(name: str, usable: int, basis: str) -> SizingOption:
        blocks = usable + reserved
        return SizingOption(name=name, kv_blocks=blocks, kv_tokens=blocks * int(block),
                            kv_bytes=blocks * per_block if per_block else None,
                            predicted_preemptions_per_10k=occ.preemptions_per_10k(usable), basis=basis)

    scale = length_scale_at_rate(workload.input_len, workload.output_len, run.concurrency, int(block), prefill,
                                 pool_blocks, target_per_10k, context=scenario.max_model_len)
    completed = int(summary.completed or 0)
    preempted = run.traffic.preemptions
    return TailRisk(
        status="measured", concurrency=run.concurrency, pool_blocks=pool_blocks, block_size=int(block),
        prefill_steps=prefill, predicted_preemptions_per_10k=occ.preemptions_per_10k(pool_blocks),
        predicted_kv_tokens_per_request=occ.tokens_per_request(), simulated_requests=occ.requests,
        measured_requests=completed, measured_preemptions=preempted,
        measured_preemptions_per_10k=(preempted / completed * 1e4) if completed and preempted is not None else None,
        measured_upper_95_per_10k=upper_95_per_10k(completed) if not preempted else None,
        measured_kv_tokens_per_request=_kv_tokens_per_request(run.attempt_dir / "traffic" / "telemetry.jsonl",
                                                              pool_blocks * int(block), run.concurrency),
        measured_from=str((run.attempt_dir / "traffic").relative_to(run.attempt_dir.parents[1])),
        target_preemptions_per_10k=target_per_10k, length_factor_at_target=scale,
        batch_cap_bound_frac=run.concurrency * longest_request_blocks(
            workload.input_len, workload.output_len, int(block), scenario.max_model_len) / pool_blocks,
        sizings=[option("p99 sizing (verified)", pool_blocks, str(run.sizing.target_source or "the verification")),
                 option(f"target <= {target_per_10k:g} preemptions per 10k requests", target_blocks,
                        "the smallest pool whose predicted rate (and every larger pool's) is within the target")],
        model=(f"{run.concurrency} requests always in flight (closed loop), lengths drawn from the workload "
               f"({workload.input_len} in, {workload.output_len} out), each holding its prompt for {prefill} step(s) "
               "(mean TTFT / mean TPOT of the traffic run) and then prompt + tokens so far, in whole blocks; a "
               f"preemption each time the sum grows past the pool; {occ.requests:,} simulated requests"))


class HeadroomRun:
    def __init__(self, scenario: Scenario, out: Path, console: Console, show_progress: bool | None = None,
                 enabled: bool | None = None) -> None:
        self.scenario = scenario
        self.spec = scenario.headroom
        self.enabled = self.spec.enabled if enabled is None else enabled
        self.out = out
        self.console = console
        self.show_progress = show_progress
        self.path = out / HEADROOM_FILE
        # Requests sent (and finished) before the next step's window: a server launched for the
        # headroom alone is cold, and its first window read a TTFT p99 of 3 s where the warm
        # verification server read 0.5 s (examples/cpu-headroom, 2026-12-07). Set by standalone().
        self.warmup_requests = 0

    def _stored(self, run: VerifiedRun) -> Headroom | None:
        stored = read_headroom(self.path)
        if stored is not None and stored.config == run.config and stored.level == run.level:
            return stored
        return None

    def pending(self, verification: Verification | None) -> VerifiedRun | None:
        """The verified run still to measure (None: disabled, nothing verified, or done)."""
        run = VerifiedRun.from_verification(self.out, verification) if verification else None
        if not self.enabled or run is None:
            return None
        stored = self._stored(run)
        return None if stored is not None and stored.finished else run

    def _new(self, run: VerifiedRun) -> Headroom:
        stored = self._stored(run)
        if stored is not None and stored.steps:
            self.console.print(f"headroom: resuming after {len(stored.steps)} step(s)")
            return stored
        rate = run.traffic.request_rate
        return new_headroom(
            finished=False, config=run.config, level=run.level, recommended_rate=rate,
            recommended_basis=f"requests/s measured over the verification's traffic run (closed loop at concurrency "
                              f"{run.concurrency})",
            factors=list(self.spec.factors), length_factors=list(self.spec.length_factors), window_s=self.spec.window_s,
            arrival=self.scenario.load.arrival or default_open_arrival(self.scenario.load.burstiness),
            steps=[], kv_pool_bytes=run.sizing.kv_cache_memory_bytes, kv_pool_meaning=KV_POOL_MEANING)

    def _level(self, factor: float, rate: float, length_factor: float = 1.0) -> LoadLevel:
        load = self.scenario.load
        name = f"headroom-x{factor:g}" if length_factor == 1.0 else f"headroom-length-x{length_factor:g}"
        warmup, self.warmup_requests = self.warmup_requests, 0
        return LoadLevel(request_rate=rate * factor, arrival=load.arrival or default_open_arrival(load.burstiness),
                         burstiness=load.burstiness, duration_s=self.spec.window_s, warmup_requests=warmup, name=name)

    def _step(self, server: Any, factor: float, rate: float,
              length_factor: float = 1.0) -> tuple[Observation, WindowTelemetry | None, int, str]:
        level = self._level(factor, rate, length_factor)
        run_dir = self.out / "headroom" / level.label
        workload = self.scenario.workload
        if length_factor != 1.0:
            workload = workload.model_copy(update={"input_len": scaled(workload.input_len, length_factor),
                                                   "output_len": scaled(workload.output_len, length_factor)})
        # Fresh prompts per step (the same seed would answer from the prefix cache).
        workload = workload.model_copy(update={"seed": (workload.seed + zlib.crc32(level.label.encode())) % 2**32})
        percentile = self.scenario.slo.percentile if self.scenario.slo else 99
        load = LoadTestConfig(base_url=server.base_url, model=server.model_name, out_dir=run_dir, levels=[level],
                              workload=workload, slo=self.scenario.slo, show_progress=self.show_progress,
                              tokenizer_dir=server.tokenizer_dir)
        summary = Summary.model_validate(run_on_server(server, load))
        if summary.interrupted:
            raise SweepInterrupted()
        status = "failed" if server.poll_failure() else "ok"
        obs = Observation.from_summary(summary, status, percentile)
        return obs, summary.telemetry, int(summary.completed or 0), str(run_dir.relative_to(self.out))

    def measure(self, server: Any, run: VerifiedRun, deadline: float | None = None) -> Headroom:
        """The load search on `server` (already serving the verified sizing), the length search, then
        the tail and the device margin; headroom.json after every step."""
        headroom = self._new(run)
        rate = headroom.recommended_rate
        if not rate:
            return self._finish(headroom, run, skipped="the verification's traffic run measured no request rate")
        factors = headroom.factors
        while stop_reason(headroom.steps, factors) is None:
            factor = factors[len(headroom.steps)]
            needed = step_seconds(headroom.window_s or self.spec.window_s, factor)
            if deadline is not None and deadline - time.monotonic() < needed:
                self.console.print(f"headroom: step x{factor:g} needs about {needed:.0f} s, "
                                   f"{max(0.0, deadline - time.monotonic()):.0f} s left: stopped, run again to resume")
                raise SweepInterrupted()
            obs, telemetry, completed, run_dir = self._step(server, factor, rate)
            step = headroom_step(obs, factor, rate * factor, self.scenario.slo, telemetry, completed, run_dir)
            headroom.steps = [*headroom.steps, step]
            self.console.print(f"  headroom x{factor:g} ({step.offered_rate:.3g} req/s offered): "
                               f"{step.achieved_rate or 0:.3g} req/s done, TTFT p{step.percentile} "
                               f"{step.ttft_ms or 0:,.0f} ms, KV peak {100 * (step.kv_peak_frac or 0):.0f} %, "
                               f"preemptions {step.preemptions}, failed {step.failed}", soft_wrap=True)
            self._save_progress(headroom)
        self._length_search(server, headroom, rate, deadline)
        return self._finish(headroom, run)

    def _length_search(self, server: Any, headroom: Headroom, rate: float, deadline: float | None) -> None:
        """At the recommended rate, longer and longer requests until the pool preempts (sweep/headroom_plan.py)."""
        factors = headroom.length_factors
        at_recommended = headroom.steps[0] if headroom.steps and headroom.steps[0].factor == 1.0 else None
        if at_recommended is not None and at_recommended.preemptions:
            headroom.length_stop_reason = "not run: the pool preempted at the recommended load already (load search)"
            return
        window = headroom.window_s or self.spec.window_s
        while length_stop_reason(headroom.length_steps, factors) is None:
            length = factors[len(headroom.length_steps)]
            needed = step_seconds(window, length)  # longer requests drain longer, about in proportion
            if deadline is not None and deadline - time.monotonic() < needed:
                self.console.print(f"headroom: length step x{length:g} needs about {needed:.0f} s, "
                                   f"{max(0.0, deadline - time.monotonic()):.0f} s left: stopped, run again to resume")
                raise SweepInterrupted()
            obs, telemetry, completed, run_dir = self._step(server, 1.0, rate, length)
            step = headroom_step(obs, 1.0, rate, self.scenario.slo, telemetry, completed, run_dir, length_factor=length)
            headroom.length_steps = [*headroom.length_steps, step]
            self.console.print(f"  headroom, requests x{length:g} as long ({rate:.3g} req/s offered): "
                               f"{step.achieved_rate or 0:.3g} req/s done, KV peak {100 * (step.kv_peak_frac or 0):.0f} %, "
                               f"preemptions {step.preemptions}, failed {step.failed}", soft_wrap=True)
            self._save_progress(headroom)
        headroom.length_stop_reason = length_stop_reason(headroom.length_steps, factors)

    def _save_progress(self, headroom: Headroom) -> None:
        # The onsets so far go into the file with every step: a run cut before its last step (a
        # deadline, a machine taken back) still says where the SLO broke; `finished` stays false.
        self._update_onsets(headroom)
        write_headroom(self.path, headroom)

    def _update_onsets(self, headroom: Headroom) -> None:
        headroom.stop_reason = stop_reason(headroom.steps, headroom.factors)
        headroom.onsets = find_onsets(headroom.steps, headroom.recommended_rate or 1.0, self.scenario.slo)
        if headroom.length_steps:
            headroom.length_stop_reason = length_stop_reason(headroom.length_steps, headroom.length_factors)
            headroom.length_onsets = find_length_onsets(headroom.length_steps)

    def _finish(self, headroom: Headroom, run: VerifiedRun, skipped: str | None = None) -> Headroom:
        headroom.skipped = skipped
        if skipped is None:
            self._update_onsets(headroom)
        headroom.tail = tail_risk(self.scenario, run, self.spec.target_preemptions_per_10k)
        headroom.device_memory = device_memory([*headroom.steps, *headroom.length_steps])
        headroom.finished = True
        write_headroom(self.path, headroom)
        for onset in headroom.onsets:
            self.console.print(f"  headroom {onset.kind}: " + (
                f"at {onset.offered_rate:.3g} req/s, {onset.pct_above_recommended:+.0f} % vs the recommended load"
                if onset.status == "reached" else onset.basis), soft_wrap=True)
        for length_onset in headroom.length_onsets:
            self.console.print(f"  headroom {length_onset.kind}, longer requests: {length_onset.basis}", soft_wrap=True)
        return headroom

    def standalone(self, time_left_s: float | None = None) -> Headroom | None:
        """The measurement on a server of its own, launched with the verification's last sizing
        (None when there is nothing to measure). Raises ServerStartError, UnsupportedConfig."""
        deadline = None if time_left_s is None else time.monotonic() + time_left_s
        verification = read_verification(self.out / VERIFICATION_FILE)
        run = self.pending(verification)
        if run is None or verification is None or verification.server_config is None:
            return None
        config = config_from_dict(verification.server_config).model_copy(update=run.sizing.config_update or {
            "kv_cache_memory_bytes": run.sizing.kv_cache_memory_bytes, "max_batch_size": run.sizing.max_num_seqs})
        server = _read_summary(run.attempt_dir / "traffic" / SUMMARY_FILE).server
        start = float((server.startup_s if server is not None else None) or DEFAULT_START_S)
        if deadline is not None and deadline - time.monotonic() < start + step_seconds(self.spec.window_s, 1.0):
            self.console.print("headroom: not started, too little time left for a server start and a step")
            raise SweepInterrupted()
        self.console.print(f"headroom of {run.config}: its own server with the verified sizing")
        with launch(config, self.out / "headroom") as server:  # ServerStartError, UnsupportedConfig: the caller's
            self.warmup_requests = 2 * run.concurrency
            return self.measure(server, run, deadline)
