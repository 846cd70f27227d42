"""The accuracy gate inside a sweep: what the sweep calls, at three moments, when the scenario
names a gate spec (`accuracy_gate:`).

  measure(server, config_dir)       once a configuration's server is ready: the gate metric,
                                    unloaded (gate-measurement.json)
  under_load(server, config, ...)   after its load levels, when the spec sets `under_load`: the
                                    metric while the configuration's recommended load runs
                                    (sweep/gate_load.py chooses it; quality/gate/under_load.py)
  verdicts()                        once every configuration is measured: gate.json (unloaded) and
                                    gate-under-load.json, both against the reference precision's
                                    unloaded measurement

A rerun measures only what has no file yet. Without a gate spec every call does nothing.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from rich.console import Console

from servesweep.backends import LaunchedServer, ServerConfig
from servesweep.errors import ConfigError, MeasurementError, TargetError
from servesweep.loadgen.load_runner import run_async
from servesweep.quality.gate.measure import GateMeasurementError, Measurement
from servesweep.quality.gate.measure import measure as measure_gate
from servesweep.quality.gate.spec import GateSpecError, load_eval_set, load_gate_spec
from servesweep.quality.gate.under_load import UnderLoadMeasurement, measure_under_load, under_load_verdict
from servesweep.quality.gate.verdict import error_result, judge
from servesweep.results import (
    GATE_MEASUREMENT_FILE,
    GATE_UNDER_LOAD_FILE,
    GATE_UNDER_LOAD_MEASUREMENT_FILE,
    GATE_UNDER_LOAD_RECORDS_FILE,
    GATE_UNDER_LOAD_TELEMETRY_FILE,
    read_points,
    write_json,
)
from servesweep.scenarios.schema import Scenario
from servesweep.sweep import SweepInterrupted
from servesweep.sweep.gate_load import choose_gate_load
from servesweep.sweep.ladder import ConcurrencyLadder, RateSearch


class SweepGate:
    """The gate of one sweep (module docstring); `out`: the sweep's results directory."""

    def __init__(self, scenario: Scenario, out: Path, console: Console) -> None:
        self.scenario = scenario
        self.out = out
        self.console = console

    @property
    def percentile(self) -> int:
        return self.scenario.slo.percentile if self.scenario.slo else 99

    @cached_property
    def _inputs(self) -> tuple[Any, list[dict[str, Any]]]:
        """The gate spec and its eval set, read (and hash-checked) once per sweep."""
        spec = load_gate_spec(self.scenario.accuracy_gate)
        return spec, load_eval_set(spec)

    def measure(self, server: LaunchedServer, config_dir: Path) -> None:
        """Measure the gate metric on this configuration; verdicts come once every configuration is measured."""
        path = config_dir / GATE_MEASUREMENT_FILE
        if self.scenario.accuracy_gate is None or path.exists():
            return
        spec, samples = self._inputs
        try:
            m = run_async(measure_gate(spec, samples, server.base_url, server.model_name, server.config.precision))
        except GateMeasurementError as exc:
            self.console.print(f"  accuracy gate not measured: {exc}")
            return
        write_json(path, m.model_dump(mode="json"))
        self.console.print(f"  accuracy gate: {spec.metric} measured"
                           + (f" = {m.value:.4g}" if m.value is not None else ""))

    def verdicts(self) -> None:
        """One gate.json per configuration, judged against the spec's reference precision."""
        spec, _ = self._inputs
        measured = {p.parent: Measurement.model_validate_json(p.read_text())
                    for p in sorted((self.out / "configs").glob(f"*/{GATE_MEASUREMENT_FILE}"))}
        want = spec.method.reference_precision
        reference = next(((d, m) for d, m in measured.items() if m.target.get("precision") == want), None)
        for config_dir, m in measured.items():
            precision = m.target.get("precision")
            if reference is None:
                result = error_result(spec, f"the reference precision {want} is not among this sweep's "
                                            "measured configurations", precision)
            else:
                try:
                    result = judge(spec, m, reference[1], f"{reference[0].name} in this sweep")
                except GateSpecError as exc:
                    result = error_result(spec, str(exc), precision)
            write_json(config_dir / "gate.json", result.model_dump(mode="json"))
            self.console.print(f"accuracy gate {config_dir.name}: {result.message}", soft_wrap=True)
        if spec.under_load is not None:
            self._under_load_verdicts(spec, reference)

    def _under_load_verdicts(self, spec: Any, reference: tuple[Path, Any] | None) -> None:
        """gate-under-load.json per configuration: its measurement under load against the reference
        precision's UNLOADED measurement."""
        want = spec.method.reference_precision
        for path in sorted((self.out / "configs").glob(f"*/{GATE_UNDER_LOAD_MEASUREMENT_FILE}")):
            measured = UnderLoadMeasurement.model_validate_json(path.read_text())
            result = under_load_verdict(
                spec, measured, reference[1] if reference else None,
                f"{reference[0].name} in this sweep (unloaded)" if reference else "", measured.precision,
                missing_reference=f"the reference precision {want} has no unloaded measurement in this sweep")
            write_json(path.parent / GATE_UNDER_LOAD_FILE, result.model_dump(mode="json"))
            self.console.print(f"accuracy gate {path.parent.name}: {result.message}", soft_wrap=True)

    def load_pending(self, config_dir: Path) -> bool:
        """The gate spec asks for a measurement under load and this configuration has none yet."""
        return (self.scenario.accuracy_gate is not None and self._inputs[0].under_load is not None
                and not (config_dir / GATE_UNDER_LOAD_MEASUREMENT_FILE).exists())

    def under_load(self, server: LaunchedServer, config: ServerConfig, config_dir: Path,
                         search: ConcurrencyLadder | RateSearch | None = None) -> None:
        """After the configuration's levels, the gate metric measured while its recommended load runs
        (servesweep.quality.gate.under_load); recorded as not measured, with the cause, when it cannot be."""
        if not self.load_pending(config_dir):
            return
        spec, samples = self._inputs
        precision = server.config.precision
        died = server.poll_failure()
        level, source = (None, f"the server died: {died}") if died else choose_gate_load(
            spec.under_load, self.scenario.load, [p for p in read_points(self.out) if p.config == config.label()],
            search, self.scenario.slo, self.percentile)
        if level is None:
            result = UnderLoadMeasurement(status="not_measured", precision=precision, cause=source)
        else:
            self.console.print(f"  accuracy gate under load: {level.label} ({source})")
            records = config_dir / GATE_UNDER_LOAD_RECORDS_FILE
            # Left by an attempt that was stopped before it measured anything (no measurement file).
            records.unlink(missing_ok=True)
            (config_dir / GATE_UNDER_LOAD_TELEMETRY_FILE).unlink(missing_ok=True)
            try:
                result = run_async(measure_under_load(
                    spec, samples, server.base_url, server.model_name, precision, self.scenario.workload, level,
                    source, records, telemetry=server.telemetry(config_dir / GATE_UNDER_LOAD_TELEMETRY_FILE),
                    tokenizer_dir=server.tokenizer_dir))
            except (MeasurementError, TargetError, ConfigError) as exc:
                result = UnderLoadMeasurement(status="not_measured", precision=precision,
                                              cause=str(exc).splitlines()[0])
            if result.status == "interrupted":
                raise SweepInterrupted()
        write_json(config_dir / GATE_UNDER_LOAD_MEASUREMENT_FILE, result.model_dump(mode="json"))
        if result.status == "measured":
            value = result.measurement.value
            self.console.print(f"  accuracy gate under load: {spec.metric} measured"
                               + (f" = {value:.4g}" if value is not None else "") + f"; load: {result.load.describe()}",
                               soft_wrap=True)
        else:
            self.console.print(f"  accuracy gate under load not measured: {result.cause}", soft_wrap=True)
