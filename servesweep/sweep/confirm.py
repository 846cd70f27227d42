"""Verify the recommendation before it is made: relaunch the recommended configuration with
its KV cache sized to the OOM-margin band (sweep/sizing.py) and run the two checks of
sweep/verify.py on it: the scenario's traffic at the recommended load for a longer window, and a
stress (p99 lengths, bursty arrivals at the same mean rate). A failed attempt steps back one
notch (sizing.step_back) and runs again, at most twice. Everything lands in
`verification.json`, which the report reads; nothing here decides what is recommended, that is
reports/analysis.py's job on the sweep's points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from servesweep.backends import config_from_dict, launch
from servesweep.errors import ConfigError, ServerStartError, UnsupportedConfig
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.runner import run_async
from servesweep.loadtest import LoadTestConfig, run_load_test
from servesweep.reports.render import analyse
from servesweep.results import read_json_file, read_points, write_json
from servesweep.scenarios.schema import Scenario
from servesweep.sweep import SweepInterrupted
from servesweep.sweep.observation import Observation
from servesweep.sweep.sizing import MAX_STEP_BACKS, Sizing, SizingInputs, size_kv, step_back
from servesweep.sweep.verify import RunPlan, Verification, judge, plan_verification

VERIFICATION_FILE = "verification.json"


def sizing_inputs(point: dict[str, Any], concurrency: int, config: Any) -> SizingInputs:
    """What the sizing arithmetic needs, from the recommended point's telemetry and server facts."""
    t = point.get("telemetry") or {}
    pool = (point.get("server") or {}).get("kv_pool") or {}
    peak_dev, pool_bytes = t.get("device_mem_peak_bytes"), t.get("kv_pool_bytes")
    return SizingInputs(
        concurrency=concurrency, kv_peak_bytes=t.get("kv_cache_peak_bytes"), kv_peak_frac=t.get("kv_cache_peak_frac"),
        pool_bytes=pool_bytes, pool_tokens=t.get("kv_pool_tokens"), block_size=pool.get("block_size"),
        max_model_len=config.max_model_len, device_total_bytes=t.get("device_mem_total_bytes"),
        gpu_memory_utilization=config.memory_fraction,
        non_kv_bytes=(peak_dev - pool_bytes) if peak_dev and pool_bytes and peak_dev > pool_bytes else None,
        max_num_seqs=config.max_batch_size,
    )


class Confirmation:
    def __init__(self, scenario: Scenario, out: Path, console: Console, show_progress: bool | None = None) -> None:
        self.scenario = scenario
        self.out = out
        self.console = console
        self.show_progress = show_progress
        self.path = self.out / VERIFICATION_FILE

    def _write(self, data: dict[str, Any]) -> None:
        write_json(self.path, data)

    def run(self) -> dict[str, Any]:
        if self.path.exists():
            done = read_json_file(self.path)
            if done.get("finished"):
                self.console.print(f"verification: done earlier ({'passed' if done.get('passed') else 'failed'}), "
                                   "skipped")
                return done
        _, result = analyse(self.out)
        rec = result.get("production_recommendation")
        if not rec:
            data = {"finished": True, "passed": False, "skipped": "no point met the SLOs within the budget: "
                                                                 "nothing to verify"}
            self._write(data)
            return data
        point = next(p for p in read_points(self.out)
                     if p["config"] == rec["based_on"]["config"] and p["level"] == rec["based_on"]["level"])
        config = config_from_dict(point["config_spec"])
        concurrency = rec["concurrency"] or rec["max_batch_size"] or 1
        try:
            sizing = size_kv(sizing_inputs(point, concurrency, config))
            plan = plan_verification(self.scenario.workload, concurrency,
                                     (point.get("summary") or {}).get("request_throughput") or 0.0,
                                     LoadLevel.model_validate(point["level_spec"]),
                                     max_model_len=config.max_model_len)
        except (ValueError, ConfigError) as exc:
            data = {"finished": True, "passed": False, "skipped": f"cannot verify: {exc}"}
            self.console.print(f"[yellow]verification skipped: {exc}[/yellow]")
            self._write(data)
            return data
        verification = Verification(plan=plan.to_dict())
        self.console.print(f"verification of {rec['based_on']['config']} at concurrency {concurrency}: "
                           f"KV budget {sizing.kv_cache_memory_bytes / 2**20:.1f} MiB, max batch {sizing.max_num_seqs}")
        command: list[str] | None = None
        for attempt in range(MAX_STEP_BACKS + 1):
            sized = config.model_copy(update={"kv_cache_memory_bytes": sizing.kv_cache_memory_bytes,
                                              "max_batch_size": sizing.max_num_seqs})
            traffic, stress, command = self._attempt(sized, plan.traffic, plan.stress, attempt)
            judgement = judge(traffic, stress, self.scenario.slo)
            verification.add(sizing.to_dict(), traffic, stress, judgement)
            verification.command = command
            colour = "green" if judgement.passed else "red"
            self.console.print(f"  attempt {attempt + 1}: [{colour}]{'passed' if judgement.passed else 'failed'}[/{colour}]"
                               + ("" if judgement.passed else f" ({'; '.join(judgement.reasons)})"), soft_wrap=True)
            self._write({"finished": False, "config": point["config"], **verification.to_dict()})
            if judgement.passed or attempt == MAX_STEP_BACKS:
                break
            sizing = step_back(sizing)
        data = {"finished": True, "config": point["config"], "level": point["level"],
                "server_config": config.model_dump(mode="json"), **verification.to_dict()}
        self._write(data)
        return data

    def _attempt(self, config: Any, traffic: RunPlan, stress: RunPlan,
                 attempt: int) -> tuple[Observation, Observation, list[str] | None]:
        attempt_dir = self.out / "verification" / f"attempt-{attempt + 1}"
        percentile = self.scenario.slo.percentile if self.scenario.slo else 99
        try:
            server = launch(config, attempt_dir)
        except (ServerStartError, UnsupportedConfig) as exc:
            failed = Observation(output_tok_s=0.0, failed=1, percentile=percentile)
            self.console.print(f"  [red]the sized server did not start: {exc}[/red]")
            return failed, failed, None
        try:
            observed = []
            for plan in (traffic, stress):
                run_dir = attempt_dir / plan.kind
                load = LoadTestConfig(base_url=server.base_url, model=server.model_name, out_dir=run_dir,
                                      levels=[plan.level], workload=plan.workload, slo=self.scenario.slo,
                                      show_progress=self.show_progress,
                                      tokenizer_dir=getattr(server, "tokenizer_dir", None))
                summary = run_async(run_load_test(load, telemetry=server.telemetry(run_dir / "telemetry.jsonl"),
                                                  server_watch=server, server_info=server.info()))
                if summary.get("interrupted"):
                    raise SweepInterrupted()
                status = "failed" if server.poll_failure() else "ok"
                observed.append(Observation.from_point(
                    {"status": status, "summary": summary, "telemetry": summary.get("telemetry"),
                     "timing_check": (summary.get("levels") or [{}])[0].get("timing_check")}, percentile))
                if status == "failed":
                    observed.append(Observation(output_tok_s=0.0, failed=1, percentile=percentile))
                    break
            return observed[0], observed[1], list(server.info().get("command") or [])
        finally:
            server.stop()
