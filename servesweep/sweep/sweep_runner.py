"""Run a scenario's sweep: one server start per configuration, every load level against it.

Each finished point (configuration x load level) is appended to `points.jsonl` at once, so a
sweep that is stopped or crashes keeps what it measured, and a rerun with the same output
directory skips finished points. A configuration that fails to start, or whose server dies
under load, is recorded as failed points with the cause: that marks the upper boundary of what
the hardware can serve, and the sweep goes on with the next configuration.

With an accuracy gate, each configuration's gate metric is measured once its server is ready
(unloaded) and, when the spec sets `under_load`, again after its load levels while its
recommended load runs; verdicts come once every configuration is measured. The sweep only
calls the gate at those moments (sweep/gate.py, SweepGate).
"""

from __future__ import annotations

import json
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from rich.console import Console
from rich.text import Text

from servesweep.analysis.recommend import analyse_sweep
from servesweep.backends import LaunchedServer, ServerConfig, launch
from servesweep.backends.builtin import builtin_model_defaults
from servesweep.confidence import fmt_ci, level_values, merge_ci
from servesweep.errors import (
    MeasurementError,
    OutputError,
    ServerStartError,
    UnsupportedConfig,
)
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.load_runner import run_async
from servesweep.loadgen.tokenizer import LocalTokenizer
from servesweep.loadtest import LoadTestConfig, run_on_server
from servesweep.models.tiny import build_tiny_model
from servesweep.models.smollm2 import read_provenance
from servesweep.models.trained import RECIPE_FILE
from servesweep.quality.drift import drift_prompts, greedy_outputs
from servesweep.console import plain_console
from servesweep.results import append_point, read_points, write_json
from servesweep.results.points import SweepPoint, point_from_summary
from servesweep.results.summary import Interval, WindowTelemetry
from servesweep.results.ladder_search import write_ladder_search
from servesweep.results.recommendation import Recommendation
from servesweep.results.sweep_files import DRIFT_FILE, write_drift, write_model_record
from servesweep.scenarios.schema import BUILTIN_MODEL, BUILTIN_SMOLLM2_MODEL, BUILTIN_TRAINED_MODEL, Scenario
from servesweep.sweep import SweepInterrupted
from servesweep.sweep.config_search_run import ConfigSearchDriver
from servesweep.sweep.gate import SweepGate
from servesweep.sweep.ladder import ConcurrencyLadder, RateSearch
from servesweep.sweep.observation import Observation


def _write_model_record(out_dir: Path, model_dir: str) -> None:
    """What the report needs to say which model the numbers come from (results.sweep_files
    `model.json`): the directory and, when servesweep trained the model, its training record
    (recipe, tokens, held-out perplexity); when servesweep built it from a published model, its
    provenance (servesweep.models.smollm2)."""
    record = Path(model_dir) / RECIPE_FILE
    training = None
    if record.exists():
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError) as exc:
            # A label for the report is no reason to stop the sweep: the model goes unlabelled.
            write_model_record(out_dir, model_dir, None, f"{record}: {exc}")
            return
        training = {k: data.get(k) for k in ("recipe", "train_tokens", "held_out_perplexity")}
    write_model_record(out_dir, model_dir, training, provenance=read_provenance(model_dir))


def merge_extra_repeat(point: SweepPoint, more: SweepPoint, why: list[str]) -> None:
    """Fold one extra repeat (a point of one window) into a rung's point: its figures join ci95
    (the point's headline, the means over its repeats, follows), its failures and preemptions add
    up, KV peak takes the higher."""
    s, extra = point.figures, more.figures
    ci = s.ci95 or {}
    label = next(iter(ci), point.level)
    one = {k: {"values": [v]} for k, v in level_values(extra.to_file()).items() if v is not None}
    before = {k: v.to_file() for k, v in ci[label].items()} if label in ci else {}
    # Through the model's own entries (an Interval each), in the order merge_ci gives them.
    s.ci95 = {label: {k: Interval.model_validate(v) for k, v in merge_ci(before, one).items()}}
    s.repeats = int(s.repeats or 1) + 1
    s.completed = int(s.completed or 0) + int(extra.completed or 0)
    s.failed = int(s.failed or 0) + int(extra.failed or 0)
    # The point's telemetry is its summary's (one section in the file, written twice): both take it.
    for t in {id(x): x for x in (point.telemetry, s.telemetry) if x is not None}.values():
        _merge_telemetry(t, more.telemetry)
    if more.status == "failed":
        point.status, point.cause = "failed", more.cause
    point.extra_repeats = [*point.extra_repeats, {"dir": more.dir, "why": list(why)}]


def _merge_telemetry(t: WindowTelemetry, te: WindowTelemetry | None) -> None:
    if te is None:
        return
    if te.preemptions is not None:
        t.preemptions = (t.preemptions or 0) + te.preemptions
    peaks = [x for x in (t.kv_cache_peak_frac, te.kv_cache_peak_frac) if x is not None]
    t.kv_cache_peak_frac = max(peaks) if peaks else None


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    points: list[SweepPoint]
    frame: pd.DataFrame  # analysis.selection.points_frame of the points
    recommendation: Recommendation


class SweepRunner:
    def __init__(self, scenario: Scenario, scenario_path: Path, out_dir: Path, console: Console | None = None,
                 show_progress: bool | None = None) -> None:
        self.scenario = scenario
        self.scenario_path = scenario_path
        self.out = out_dir
        self.console = console or plain_console(stderr=True)
        self.show_progress = show_progress
        self.levels = scenario.load.levels()
        self.gate = SweepGate(scenario, out_dir, self.console)

    def model_dir(self) -> str:
        if self.scenario.model == BUILTIN_MODEL:
            return str(build_tiny_model())
        if self.scenario.model == BUILTIN_TRAINED_MODEL:
            from servesweep.models.trained import train_model

            return str(train_model(log=self.console.print))
        if self.scenario.model == BUILTIN_SMOLLM2_MODEL:
            from servesweep.models.smollm2 import build_smollm2

            return str(build_smollm2(log=self.console.print))
        return self.scenario.model

    def run(self, verify: bool | None = None, deadline_s: float | None = None,
            headroom: bool | None = None) -> SweepOutcome:
        """Every configuration's levels (fixed, or found by the adaptive search), the accuracy
        gate's verdicts, then (unless `verify` is False) the verification of the recommendation and,
        when it passes (unless `headroom` is False), its headroom.
        `deadline_s`: seconds this call may take; a verification attempt that would not fit in what
        is left is not started (SweepInterrupted: a rerun resumes there). The points are analysed
        once: the verification verifies that analysis's recommendation and the outcome carries it
        with the verification and headroom folded in."""
        started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.scenario_path, self.out / "scenario.yaml")
        write_json(self.out / "scenario.json", self.scenario.model_dump(mode="json"))
        points = read_points(self.out)
        model_dir = self.model_dir()
        _write_model_record(self.out, model_dir)
        configs = self.configs(model_dir)
        if self.scenario.sweep.search.method == "auto":
            ConfigSearchDriver(self, configs).run()
        else:
            for i, config in enumerate(configs, 1):
                self.run_one(config, f"[{i}/{len(configs)}]", points)
        if self.scenario.accuracy_gate:
            self.gate.verdicts()
        analysis = analyse_sweep(self.out)
        if self.scenario.verify if verify is None else verify:
            from servesweep.sweep.verify_run import Confirmation

            left = None if deadline_s is None else deadline_s - (time.monotonic() - started)
            Confirmation(self.scenario, self.out, self.console, self.show_progress,
                         headroom=headroom).run(analysis, time_left_s=left)
        frame, recommendation = analysis.with_runs(self.out)
        return SweepOutcome(read_points(self.out), frame, recommendation)

    def run_one(self, config: ServerConfig, prefix: str, points: list[SweepPoint]) -> bool:
        """One configuration's levels (or the rest of them); False when all were measured before
        and no server was started."""
        if self.scenario.load.adaptive:
            stored = {p.level: p for p in points if p.config == config.label()}
            return self._run_search(config, stored, prefix)
        done = {(p.config, p.level) for p in points}
        todo = [lv for lv in self.levels if (config.label(), lv.label) not in done]
        gate_load = self.gate.load_pending(self.out / "configs" / config.label())
        if not todo and not gate_load:
            self.console.print(f"{prefix} {config.label()}: all points done, skipped")
            return False
        self.console.print(f"{prefix} {config.label()}: {len(todo)} load level(s)"
                           + (", then the accuracy gate under load" if gate_load else ""))
        self._run_config(config, todo)
        return True

    def configs(self, model_dir: str) -> list[ServerConfig]:
        configs = self.scenario.server_configs(model_dir)
        if self.scenario.model == BUILTIN_MODEL:
            configs = [builtin_model_defaults(c) for c in configs]
        return configs

    # --- the adaptive search (load: {concurrency: auto} or {request_rate: auto}) -------------
    def _new_search(self, config: ServerConfig) -> ConcurrencyLadder | RateSearch:
        load, slo = self.scenario.load, self.scenario.slo
        if load.concurrency == "auto":
            options = load.ladder
            if config.max_batch_size:
                # Past the server's batch cap more concurrency only queues: the knee is below it.
                options = options.model_copy(update={"max_concurrency": min(options.max_concurrency,
                                                                            config.max_batch_size)})
            return ConcurrencyLadder(options, slo, max_repeats=load.repeat_cap)
        return RateSearch(load.rate_search, slo, max_repeats=load.repeat_cap)

    def _search_level(self, value: float) -> LoadLevel:
        load = self.scenario.load
        return load.level(concurrency=int(value)) if load.concurrency == "auto" else load.level(request_rate=value)

    @property
    def _percentile(self) -> int:
        return self.scenario.slo.percentile if self.scenario.slo else 99

    def _run_search(self, config: ServerConfig, stored: dict[str, SweepPoint], prefix: str) -> bool:
        search = self._new_search(config)
        # Resume: replay the rungs already measured; the search asks for the same levels again.
        while (value := search.next_level()) is not None:
            point = stored.get(self._search_level(value).label)
            if point is None:
                break
            search.record(value, Observation.from_point(point, self._percentile))
        config_dir = self.out / "configs" / config.label()
        if search.done and not self.gate.load_pending(config_dir):
            self.console.print(f"{prefix} {config.label()}: search done ({search.stop_reason}), skipped")
            write_ladder_search(config_dir, search.to_model())
            return False
        first = search.next_level()
        self.console.print(f"{prefix} {config.label()}: " + ("adaptive load search" if first is not None else
                                                              "search done; the accuracy gate under load"))
        server = self._launch(config, config_dir, [self._search_level(first)] if first is not None else [])
        if server is None:
            return True
        try:
            with server:
                self._server_ready(server, config_dir)
                self._search_rungs(server, config, config_dir, search)
                self.gate.under_load(server, config, config_dir, search)
        finally:  # after the server stopped, as a search cut short is resumed from this file
            write_ladder_search(config_dir, search.to_model())
        return True

    def _search_rungs(self, server: LaunchedServer, config: ServerConfig, config_dir: Path,
                      search: ConcurrencyLadder | RateSearch) -> None:
        """The rungs the search asks for, each recorded as a point, until it stops or the server dies."""
        while (value := search.next_level()) is not None:
            level = self._search_level(value)
            point = self._run_level(server, config, level, config_dir)
            if point.interrupted:
                raise SweepInterrupted()
            point.search = {"rung": len(search.rungs) + 1, "reason": search.pending_reason}
            obs = self._repeat_uncertain(server, config, level, config_dir, point, search)
            self._append(point)
            search.record(value, obs)
            if point.status == "failed":
                break
        self.console.print(f"  search stopped: {search.stop_reason}; recommended "
                           f"{getattr(search, 'recommended_concurrency', None) or getattr(search, 'best_rate', None)}")

    def _repeat_uncertain(self, server: LaunchedServer, config: ServerConfig, level: LoadLevel, config_dir: Path,
                          point: SweepPoint, search: ConcurrencyLadder | RateSearch) -> Observation:
        """Run the rung once more (fresh prompts, `<level>/extra-<k>/`) while its SLO verdict is
        uncertain and the repeat cap allows; each extra repeat's figures join the point's ci95."""
        obs = Observation.from_point(point, self._percentile)
        extra = 0
        while point.status == "ok" and (why := search.wants_repeat(obs)):
            extra += 1
            self.console.print(f"  {level.label}: another repeat ({obs.n + 1} of at most {search.max_repeats}): "
                               + "; ".join(why), soft_wrap=True)
            more = self._run_level(server, config, level, config_dir, repeats=1, extra=extra)
            if more.interrupted:
                raise SweepInterrupted()
            merge_extra_repeat(point, more, why)
            obs = Observation.from_point(point, self._percentile)
        return obs

    def _server_ready(self, server: LaunchedServer, config_dir: Path) -> None:
        self.console.print(f"  {server.config.kind} {server.version} healthy after {server.startup_s:.0f} s "
                           f"(KV pool {server.kv_pool.get('tokens')} tokens)")
        self._drift(server, config_dir)
        self.gate.measure(server, config_dir)

    def _append(self, point: SweepPoint) -> None:
        append_point(self.out, point)

    def _failed(self, config: ServerConfig, levels: Iterable[LoadLevel], cause: str, detail: str) -> None:
        for level in levels:
            self._append(SweepPoint.model_validate({
                "config": config.label(), "config_spec": config.model_dump(mode="json"), "level": level.label,
                "level_spec": level.model_dump(exclude_none=True), "status": "failed", "cause": cause, "detail": detail}))

    def _launch(self, config: ServerConfig, config_dir: Path, levels: list[LoadLevel]) -> LaunchedServer | None:
        """The configuration's server, or None after recording `levels` as failed with the cause."""
        try:
            return launch(config, config_dir)
        except (ServerStartError, UnsupportedConfig) as exc:
            cause = exc.cause if isinstance(exc, ServerStartError) else "unsupported on this device"
            detail = exc.detail if isinstance(exc, ServerStartError) else str(exc)
            self.console.print(Text.assemble((f"  failed to start: {cause}", "red"),
                                             f" ({detail}); recorded as failed points"), soft_wrap=True)
            self._failed(config, levels, cause, detail)
            return None

    def _run_config(self, config: ServerConfig, todo: list[LoadLevel]) -> None:
        config_dir = self.out / "configs" / config.label()
        server = self._launch(config, config_dir, todo)
        if server is None:
            return
        with server:
            self._server_ready(server, config_dir)
            for n, level in enumerate(todo):
                point = self._run_level(server, config, level, config_dir)
                if point.interrupted:
                    # Not recorded: a resumed sweep measures this point again.
                    raise SweepInterrupted()
                self._append(point)
                if point.status == "failed":
                    self._failed(config, todo[n + 1:], "server died at an earlier level", str(point.cause))
                    break
            self.gate.under_load(server, config, config_dir)

    def _drift(self, server: LaunchedServer, config_dir: Path) -> None:
        spec = self.scenario.drift
        path = config_dir / DRIFT_FILE
        if spec is None or path.exists():
            return
        try:
            tokenizer = LocalTokenizer(server.config.model)
        except FileNotFoundError:
            self.console.print("  drift probe skipped: no local tokenizer")
            return

        async def probe() -> list[dict[str, Any]]:
            prompts = await drift_prompts(tokenizer, spec.prompts, spec.prompt_len)
            return await greedy_outputs(server.base_url, server.model_name, prompts, spec.max_tokens,
                                        spec.top_logprobs)

        try:
            write_drift(path, server.config.precision, run_async(probe()))
        except (MeasurementError, OSError) as exc:
            self.console.print(f"  drift probe failed: {exc}")

    def _precision_options(self, extra: int) -> dict[str, Any]:
        """load.target_precision for a point's first load test (an extra repeat is one window)."""
        load = self.scenario.load
        if extra or load.target_precision is None:
            return {}
        return {"target_precision": load.target_precision, "max_repeats": max(2, load.repeat_cap)}

    def _run_level(self, server: LaunchedServer, config: ServerConfig, level: LoadLevel,
                   config_dir: Path, repeats: int | None = None, extra: int = 0) -> SweepPoint:
        """One point: the level run `repeats` times (the scenario's by default); `extra` k > 0 is the
        k-th extra repeat of an uncertain rung, in its own directory with its own seed."""
        level_dir = config_dir / level.label
        workload = self.scenario.workload
        # Each point its own prompts: with the scenario's seed for every point, every rung resent the
        # first rung's prompts and the server answered half their tokens from its prefix cache
        # (measured on the CPU vLLM, examples/cpu-repeats). Deterministic: the seed + crc32(label).
        seed = workload.seed + zlib.crc32(level.label.encode())
        if extra:
            level_dir = level_dir / f"extra-{extra}"
            seed += 1000 * extra
        workload = workload.model_copy(update={"seed": seed % 2**32})
        load = LoadTestConfig(base_url=server.base_url, model=server.model_name, out_dir=level_dir,
                              levels=[level], workload=workload, slo=self.scenario.slo,
                              show_progress=self.show_progress, tokenizer_dir=server.tokenizer_dir,
                              repeats=self.scenario.load.repeats if repeats is None else repeats,
                              **self._precision_options(extra))
        point = point_from_summary(config.label(), config.model_dump(mode="json"), level.label,
                                   level.model_dump(exclude_none=True), run_on_server(server, load),
                                   str(level_dir.relative_to(self.out)), died=server.poll_failure())
        summary = point.figures
        if summary.output_error:
            # The disk is full: the sweep stops here (exit 5); what was measured is on disk.
            where = summary.summary_path or f"{level_dir}/summary.json"
            raise OutputError(f"{summary.output_error} (the level's summary: {where})")
        self._say_level(level, point)
        return point

    def _say_level(self, level: LoadLevel, point: SweepPoint) -> None:
        summary = point.figures
        if summary.ci95:
            self.console.print(f"  {level.label}: {summary.repeats} repeats, output tok/s "
                               f"{fmt_ci(summary.repeat_interval('output_tok_s'))}, TTFT p99 "
                               f"{fmt_ci(summary.repeat_interval('ttft_ms.p99'), ',.1f')} ms "
                               "(mean ± 95 % CI half-width)", soft_wrap=True)
        tput = summary.headline_output_token_throughput  # the repeats' mean with repeats
        self.console.print(Text.assemble(
            f"  {level.label}: {summary.completed} ok, {summary.failed} failed, "
            f"{tput:,.0f} output tok/s, TTFT p50 {summary.quantile('ttft_ms', 'p50') or 0:.1f} ms",
            (f" {point.status}: {point.cause or ''}" if point.status != "ok" else "", "red")),
            soft_wrap=True)
        hits = [v.hit_rate for v in (summary.prefix_cache or {}).values() if v.warn]
        if hits:
            self.console.print(f"  {level.label}: {max(hits):.0%} of prompt tokens hit the server's prefix cache, more "
                               "than the workload intends: its latencies read low (summary.json prefix_cache)",
                               style="yellow", soft_wrap=True)
        for reason in (point.timing_check.reasons if point.timing_check else None) or []:
            self.console.print(f"  {level.label}: timing suspect, SLO verdicts on it say so: {reason}",
                               style="yellow", soft_wrap=True)
