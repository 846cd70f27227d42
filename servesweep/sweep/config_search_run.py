"""Run the config search (`sweep: {search: auto}`) through the sweep: each configuration it picks
is run as the grid runs any (SweepRunner.run_one: one server start, its ladder or levels), and
`search.json` is rewritten after every step.

Resumable like the grid: the search is deterministic, so a rerun with the same output directory
makes the same choices from the measurements on disk; a configuration measured before is not
started again (its step says `resumed`), and one cut mid-ladder continues its ladder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from servesweep.backends import ServerConfig
from servesweep.results.config_search_record import SEARCH_FILE, ConfigSearchRecord, read_search_record
from servesweep.results import read_points, write_json
from servesweep.results.ladder_search import read_ladder_search
from servesweep.scenarios.schema import Scenario
from servesweep.sweep.config_budget import GIB, estimate_bytes
from servesweep.sweep.config_search import AXIS_FIELDS, Candidate, ConfigSearch, describe_goodput, measured_from_points


class _Runner(Protocol):
    scenario: Scenario
    out: Path
    console: Console

    def run_one(self, config: ServerConfig, prefix: str, points: list[dict[str, Any]]) -> bool: ...


def request_tokens(scenario: Scenario) -> int:
    """The longest request the workload sends (prompt + output), for the budget estimate."""
    w = scenario.workload
    longest = w.input_len.max_value + w.shared_prefix_len + w.output_len.max_value
    return min(longest, scenario.max_model_len) if scenario.max_model_len else longest


def build_search(scenario: Scenario, configs: list[ServerConfig]) -> ConfigSearch:
    tokens = request_tokens(scenario)
    candidates = []
    for c in configs:
        est, note = estimate_bytes(c, tokens)
        candidates.append(Candidate(c.label(), {f: getattr(c, f, None) for f in AXIS_FIELDS}, est, note))
    budget = scenario.vram_budget_gib * GIB if scenario.vram_budget_gib else None
    ladder_max = scenario.load.ladder.max_concurrency if scenario.load.concurrency == "auto" else None
    names = {k: v for c in configs for k, v in c.knob_names.items()}
    return ConfigSearch(candidates, scenario.sweep.search, budget, ladder_max, names)


class ConfigSearchDriver:
    def __init__(self, runner: _Runner, configs: list[ServerConfig]) -> None:
        self.runner = runner
        self.configs = {c.label(): c for c in configs}
        self.search = build_search(runner.scenario, configs)

    def _previous(self) -> ConfigSearchRecord | None:
        try:
            return read_search_record(self.runner.out)
        except (OSError, ValueError):
            return None  # a damaged record is rebuilt from the points

    def _write(self, wall_s: float) -> ConfigSearchRecord:
        record = self.search.record_model(wall_s, self.runner.scenario.vram_budget_gib)
        write_json(self.runner.out / SEARCH_FILE, record.model_dump(mode="json"))
        return record

    def _measured(self, label: str) -> Any:
        scenario = self.runner.scenario
        points = [p for p in read_points(self.runner.out) if p.config == label]
        ladder = read_ladder_search(self.runner.out / "configs" / label)
        auto = scenario.load.concurrency == "auto"
        return measured_from_points(points, scenario.slo, scenario.slo.percentile if scenario.slo else 99,
                                    scenario.load.ladder.kv_full_frac if auto else 1.0, ladder)

    def run(self) -> ConfigSearchRecord:
        console, search = self.runner.console, self.search
        previous = self._previous()
        earlier_wall = {s.config: s.wall_s for s in previous.steps} if previous else {}
        base_wall = previous.wall_s if previous else 0.0
        t0 = time.monotonic()
        skipped_budget = list(search.skipped.values())
        console.print(f"config search over {len(self.configs)} configurations "
                      f"({', '.join(f'{a.knob} x{len(a.values)}' for a in search.axes) or 'one'}); "
                      f"{len(skipped_budget)} over the VRAM budget", soft_wrap=True)
        while (pick := search.next_config()) is not None:
            label, why = pick
            n = len(search.steps) + 1
            console.print(f"[search {n}, {len(self.configs)} in the grid] {label}: {why}", soft_wrap=True)
            t = time.monotonic()
            launched = self.runner.run_one(self.configs[label], "  ", read_points(self.runner.out))
            wall = time.monotonic() - t if launched else earlier_wall.get(label)
            step = search.record(label, self._measured(label), resumed=not launched, wall_s=wall)
            console.print(f"  {label}: {describe_goodput(step.measured)}; {step.verdict}", soft_wrap=True)
            self._write(base_wall + time.monotonic() - t0)
        record = self._write(base_wall + time.monotonic() - t0)
        self._announce(record)
        return record

    def _announce(self, record: ConfigSearchRecord) -> None:
        console = self.runner.console
        console.print(f"config search stopped ({record.stop_reason}): {record.stop_detail}", soft_wrap=True)
        if record.best is None:
            console.print(f"CONFIG SEARCH ENDED WITHOUT A BEST CONFIGURATION: {record.no_best}",
                          style="bold red", soft_wrap=True)
        else:
            console.print(f"config search: best {record.best.config} ({record.best.goodput:.3g} req/s at "
                          f"{record.best.level}) after {record.starts} of {record.grid_size} starts; "
                          f"{len(record.skipped)} not started ({SEARCH_FILE})", soft_wrap=True)
