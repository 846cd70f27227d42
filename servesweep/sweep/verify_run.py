"""Verify the recommendation before it is made: relaunch the recommended configuration with
its KV cache sized to the OOM-margin band for the stress run's expected peak (sweep/sizing.py)
and run the two checks of sweep/verify_plan.py on it: the scenario's traffic at the recommended load
for a longer window, and a stress (p99 lengths, bursty arrivals at the same mean rate). A
failed attempt whose failure is a memory one (preemption, margin out of band) steps from what it
measured (sizing.step_back) and runs again, at most twice; a failure that more KV cannot fix
(the SLOs over the longer window, failed requests without preemption) ends the verification.

Resumable per attempt: `verification.json` is written after every attempt (`finished: false`
until the last), and a rerun continues with the next attempt from the stored sizing and stress
figures, as long as the recommendation is still the same point. With a deadline (`time_left_s`),
an attempt that would not fit what is left (the configuration's measured server start + both
windows + ATTEMPT_SLACK_S) is not started: the run stops as interrupted and resumes there.
Everything lands in `verification.json`, which the report reads; nothing here decides what is
recommended, that is analysis/selection.py's job on the sweep's points.

After a passing attempt, on the same server, the headroom measurement (sweep/headroom_run.py)
steps the offered load up; one still owed (cut short, or a verification done earlier) runs on a
server of its own once the verification is done.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.text import Text

from servesweep.backends import config_from_dict, launch
from servesweep.errors import ConfigError, ServerStartError, UnsupportedConfig
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadtest import LoadTestConfig, run_on_server
from servesweep.analysis.recommend import SweepAnalysis
from servesweep.results import SweepPoint, Summary, read_points
from servesweep.results.verification import (
    VERIFICATION_FILE,
    AttemptRun,
    AttemptSizing,
    Verification,
    new_verification,
    read_verification,
    write_verification,
)
from servesweep.scenarios.schema import Scenario
from servesweep.sweep import DEFAULT_START_S, SweepInterrupted
from servesweep.sweep.headroom_run import HeadroomRun, VerifiedRun
from servesweep.sweep.observation import Observation
from servesweep.sweep.sizing import MAX_STEP_BACKS, Sizing, SizingInputs, size_kv, step_back
from servesweep.sweep.verify_plan import RunPlan, add_attempt, judge, plan_verification

ATTEMPT_SLACK_S = 60.0  # warm-up, drain and the server's stop, on top of the start and the two windows
MEMORY_CHECKS = {"preemptions", "margin"}


def sizing_inputs(point: SweepPoint, concurrency: int, config: Any,
                  stress_request_tokens: int | None = None) -> SizingInputs:
    """What the sizing arithmetic needs, from the recommended point's telemetry and server facts.
    The run's memory fraction goes in as the server's own (its backend reads it by its own rule)."""
    t = point.server_telemetry
    peak_dev, pool_bytes = t.device_mem_peak_bytes, t.kv_pool_bytes
    return SizingInputs(
        kind=config.kind, tensor_parallel_size=config.tensor_parallel_size, concurrency=concurrency, kv_peak_bytes=t.kv_cache_peak_bytes, kv_peak_frac=t.kv_cache_peak_frac,
        pool_bytes=pool_bytes, pool_tokens=t.kv_pool_tokens, block_size=point.server_record.block_size,
        max_model_len=config.max_model_len, device_total_bytes=t.device_mem_total_bytes,
        memory_fraction=config.memory_fraction,
        non_kv_bytes=(peak_dev - pool_bytes) if peak_dev and pool_bytes and peak_dev > pool_bytes else None,
        max_num_seqs=config.max_batch_size, stress_request_tokens=stress_request_tokens,
    )


def attempt_seconds(point: SweepPoint, plan: Any) -> float:
    """What one attempt takes: the configuration's measured server start + both windows + slack."""
    start = point.server_record.startup_s or DEFAULT_START_S
    windows = sum((run.level.duration_s or 0.0) for run in (plan.traffic, plan.stress))
    return float(start) + windows + ATTEMPT_SLACK_S


def memory_only(judgement: Any) -> bool:
    """Every failed check is one a different KV budget may fix: a measured preemption or margin out
    of band, and failed requests or a broken SLO only in a run that preempted. A check that failed
    because nothing was measured (a server that did not start, no telemetry) is not one."""
    failed = [c for c in judgement.checks if not c.ok]
    if not failed:
        return False
    for c in failed:
        measured = "not measured" not in c.detail  # verify_plan.py's wording for a figure nobody saw
        if c.check in MEMORY_CHECKS and measured:
            continue
        if c.check in ("failures", "slo") and _preempted(judgement, c.run):
            continue
        return False
    return True


def _preempted(judgement: Any, run: str) -> bool:
    return any(c.run == run and c.check == "preemptions" and not c.ok and "not measured" not in c.detail
               for c in judgement.checks)


class Confirmation:
    def __init__(self, scenario: Scenario, out: Path, console: Console, show_progress: bool | None = None,
                 headroom: bool | None = None) -> None:
        self.scenario = scenario
        self.out = out
        self.console = console
        self.show_progress = show_progress
        self.path = self.out / VERIFICATION_FILE
        self.headroom = HeadroomRun(scenario, out, console, show_progress, enabled=headroom)
        self._headroom_cut = False

    def _write(self, verification: Verification) -> None:
        write_verification(self.path, verification)

    def run(self, analysis: SweepAnalysis, time_left_s: float | None = None) -> Verification:
        """Verify `analysis`'s recommendation (module docstring); `time_left_s`: the deadline, from now."""
        deadline = None if time_left_s is None else time.monotonic() + time_left_s
        stored = read_verification(self.path) or Verification()
        _, result = analysis.with_runs(self.out)
        rec = result.production_recommendation
        if rec is None:
            why = (result.no_recommendation.reason if result.no_recommendation else None) or \
                "no point met the SLOs within the budget"
            data = new_verification(finished=True, passed=False,
                                    skipped=f"no recommendation ({why}): nothing to verify")
            self.console.print(f"verification skipped: no recommendation ({why})", style="bold red")
            self._write(data)
            return data
        where = rec.based_on
        # A stored file without a level (written before it was recorded) matches any level.
        same = stored.config == where.config and (stored.level or where.level) == where.level
        if stored.finished and same:
            self.console.print(f"verification: done earlier ({'passed' if stored.passed else 'failed'}), "
                               "skipped")
            self._headroom_after(stored, deadline)
            return stored
        point = next(p for p in read_points(self.out) if p.config == where.config and p.level == where.level)
        config = config_from_dict(point.config_spec)
        concurrency = rec.concurrency or rec.max_batch_size or 1
        try:
            plan = plan_verification(self.scenario.workload, concurrency,
                                     point.figures.request_throughput or 0.0,
                                     LoadLevel.model_validate(point.level_spec),
                                     max_model_len=config.max_model_len)
            sizing = size_kv(sizing_inputs(point, concurrency, config, plan.input_len_p99 + plan.output_len_p99))
        except (ValueError, ConfigError) as exc:
            data = new_verification(finished=True, passed=False, skipped=f"cannot verify: {exc}")
            self.console.print(f"verification skipped: {exc}", style="bold red")
            self._write(data)
            return data
        verification = new_verification(finished=False, config=where.config, level=where.level, passed=False,
                                        attempts=[], command=None, plan=plan.to_dict())
        if same and not stored.finished and stored.attempts:
            # Resume: the attempts done in an earlier call stand; the next one steps from the last.
            verification.attempts, verification.passed, verification.command = \
                stored.attempts, stored.passed, stored.command
            if stored.plan is not None:
                verification.plan = stored.plan
            self.console.print(f"verification: resuming after {len(verification.attempts)} attempt(s)")
        self._attempts(verification, where, config, point, plan, sizing, concurrency, deadline)
        verification.finished = True
        verification.server_config = config.model_dump(mode="json")
        if not verification.passed:
            last = verification.last()
            verification.reason = "; ".join(last.reasons) if last else "no attempt ran"
        self._write(verification)
        self._headroom_after(verification, deadline)
        return verification

    def _attempts(self, verification: Verification, where: Any, config: Any, point: SweepPoint, plan: Any,
                  sizing: Sizing, concurrency: int, deadline: float | None) -> None:
        """The attempts still to make: each steps back from the last one's overshoot until one passes,
        one fails in a way a KV budget cannot fix, or MAX_STEP_BACKS; each is written as it ends."""
        for attempt in range(len(verification.attempts), MAX_STEP_BACKS + 1):
            if verification.attempts:
                last = verification.attempts[-1]
                previous = Sizing.model_validate(last.sizing.to_file())
                traffic, stress = Observation.from_dict(last.traffic.to_file()), Observation.from_dict(last.stress.to_file())
                judged = judge(traffic, stress, self.scenario.slo)
                if last.passed or not memory_only(judged):
                    break  # passed, or failed in a way a KV budget cannot fix
                sizing = step_back(previous, traffic, stress)
            needed = attempt_seconds(point, plan)
            if deadline is not None and deadline - time.monotonic() < needed:
                self.console.print(f"verification: attempt {attempt + 1} needs about {needed:.0f} s, "
                                   f"{max(0.0, deadline - time.monotonic()):.0f} s left: stopped, run again to resume")
                raise SweepInterrupted()
            self.console.print(f"verification of {where.config} at concurrency {concurrency}, attempt "
                               f"{attempt + 1}: KV budget {sizing.kv_cache_memory_bytes / 2**20:.1f} MiB "
                               f"({sizing.change}; target {sizing.target_source}), max batch {sizing.max_num_seqs}, "
                               f"expected margin {sizing.expected_margin_pct:.1f} %", soft_wrap=True)
            # The backend's own fields for this budget (TensorRT-LLM also sets its fraction); a
            # sizing stored before backends owned their knobs has none: the budget and batch cap.
            sized = config.model_copy(update=sizing.config_update or {
                "kv_cache_memory_bytes": sizing.kv_cache_memory_bytes, "max_batch_size": sizing.max_num_seqs})
            traffic, stress, command = self._attempt(sized, plan.traffic, plan.stress, attempt,
                                                     then=self._headroom_hook(where, sizing, attempt, deadline))
            judgement = judge(traffic, stress, self.scenario.slo)
            add_attempt(verification, sizing.to_dict(), traffic, stress, judgement)
            verification.command = command
            colour = "green" if judgement.passed else "red"
            self.console.print(Text.assemble(f"  attempt {attempt + 1}: ",
                                             ("passed" if judgement.passed else "failed", colour),
                                             "" if judgement.passed else f" ({'; '.join(judgement.reasons)})"),
                               soft_wrap=True)
            self._write(verification)

    def _headroom_hook(self, where: Any, sizing: Sizing, attempt: int,
                       deadline: float | None) -> Callable[[Any, Observation, Observation], None]:
        """What runs on the attempt's own server after its two runs: the headroom measurement, when
        the attempt passed. Cut short (deadline, Ctrl-C), it stops there so the attempt is still
        recorded; `_headroom_after` then says so, and a rerun resumes it on a server of its own."""
        def measure(server: Any, traffic: Observation, stress: Observation) -> None:
            if not judge(traffic, stress, self.scenario.slo).passed or not self.headroom.enabled:
                return
            self.console.print("headroom: the offered load stepped up on the verified server")
            run = VerifiedRun(config=where.config, level=where.level, sizing=AttemptSizing.model_validate(sizing.to_dict()),
                              traffic=AttemptRun.model_validate(traffic.to_dict()), concurrency=sizing.max_num_seqs,
                              attempt_dir=self.out / "verification" / f"attempt-{attempt + 1}")
            try:
                self.headroom.measure(server, run, deadline)
            except SweepInterrupted:
                self._headroom_cut = True
                self.console.print("headroom: stopped; run the same command again to resume it")

        return measure

    def _headroom_after(self, verification: Verification, deadline: float | None) -> None:
        """The headroom measurement still owed to a passed verification: on a server of its own."""
        if self.headroom.pending(verification) is None:
            return
        if self._headroom_cut:
            raise SweepInterrupted()
        left = None if deadline is None else deadline - time.monotonic()
        try:
            self.headroom.standalone(left)
        except (ServerStartError, UnsupportedConfig) as exc:
            self.console.print(f"headroom: its server did not start ({exc}); `servesweep headroom DIR` retries",
                               style="red", soft_wrap=True)

    def load_config(self, plan: RunPlan, server: Any, run_dir: Path) -> LoadTestConfig:
        """One run of the plan as a load test. The traffic run, whose SLO verdict is the one the
        recommendation rests on, takes the scenario's repeats (`load.repeats`), so that verdict has
        an interval too; the stress run is judged on memory, which one window shows."""
        repeats = self.scenario.load.repeats if plan.kind == "traffic" else 1
        return LoadTestConfig(base_url=server.base_url, model=server.model_name, out_dir=run_dir,
                              levels=[plan.level], workload=plan.workload, slo=self.scenario.slo,
                              show_progress=self.show_progress, repeats=repeats,
                              tokenizer_dir=server.tokenizer_dir)

    def _attempt(self, config: Any, traffic: RunPlan, stress: RunPlan, attempt: int,
                 then: Callable[[Any, Observation, Observation], None] | None = None,
                 ) -> tuple[Observation, Observation, list[str] | None]:
        attempt_dir = self.out / "verification" / f"attempt-{attempt + 1}"
        percentile = self.scenario.slo.percentile if self.scenario.slo else 99
        try:
            server = launch(config, attempt_dir)
        except (ServerStartError, UnsupportedConfig) as exc:
            failed = Observation(output_tok_s=0.0, failed=1, percentile=percentile)
            self.console.print(f"  the sized server did not start: {exc}", style="red")
            return failed, failed, None
        with server:
            observed = []
            for plan in (traffic, stress):
                summary = Summary.model_validate(run_on_server(server, self.load_config(plan, server,
                                                                                        attempt_dir / plan.kind)))
                if summary.interrupted:
                    raise SweepInterrupted()
                status = "failed" if server.poll_failure() else "ok"
                observed.append(Observation.from_summary(summary, status, percentile))
                if status == "failed":
                    observed.append(Observation(output_tok_s=0.0, failed=1, percentile=percentile))
                    break
            if then is not None and len(observed) == 2 and not server.poll_failure():
                then(server, observed[0], observed[1])
            return observed[0], observed[1], list(server.info().get("command") or [])
