"""One accuracy-gate evaluation: measure the configuration under test (attached or launched),
obtain the reference (a stored result, a running server, or a launched one), and judge.

Problems that stop the measurement (an unreachable or dead server, a missing reference, a
changed eval set) become an `error` result with exit code 2, written like any other verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import aiohttp

from servesweep.backends import config_from_dict, launch
from servesweep.errors import ConfigError, ServerError, TargetError
from servesweep.loadgen.runner import run_async
from servesweep.loadgen.target import check_loopback, probe_target
from servesweep.quality.gate.measure import GateMeasurementError, Measurement, measure
from servesweep.quality.gate.spec import GateSpec, GateSpecError, load_eval_set, load_gate_spec
from servesweep.quality.gate.verdict import GateResult, error_result, judge, read_reference
from servesweep.results import write_json


@dataclass
class GateRun:
    """What `servesweep gate` was asked to do (see servesweep.cli.gate for the options)."""

    spec: Path
    out: Path
    url: str | None = None
    backend: str | None = None
    model: str | None = None
    precision: str | None = None
    server_options: dict = field(default_factory=dict)  # max_model_len, load_format, extra_args, ...
    reference: Path | None = None
    reference_precision: str | None = None
    reference_url: str | None = None
    record_reference: bool = False
    allow_remote: bool = False
    log: Callable[[str], None] = print


def _measure_url(run: GateRun, spec: GateSpec, samples: list[dict], url: str, model: str | None,
                 precision: str | None) -> Measurement:
    if not run.allow_remote:
        check_loopback(url)

    async def go() -> Measurement:
        async with aiohttp.ClientSession() as session:
            info = await probe_target(session, url, model)
        return await measure(spec, samples, url, info.model, precision)

    return run_async(go())


def _measure_launched(run: GateRun, spec: GateSpec, samples: list[dict], precision: str) -> Measurement:
    config = config_from_dict({"kind": run.backend, "model": run.model, "precision": precision,
                               **{k: v for k, v in run.server_options.items() if v is not None}})
    run.log(f"starting {config.kind} at {precision} for {run.model}; log in {run.out}")
    server = launch(config, run.out)
    try:
        run.log(f"measuring {spec.metric} on {len(samples)} samples at {precision}")
        result = run_async(measure(spec, samples, server.base_url, server.model_name, precision))
        failure = server.poll_failure()
        if failure:
            raise GateMeasurementError(f"the {precision} server died during the measurement: {failure}")
        return result
    finally:
        server.stop()


def _reference(run: GateRun, spec: GateSpec, samples: list[dict]) -> tuple[Measurement, str]:
    if run.reference:
        return read_reference(run.reference), str(run.reference)
    if run.reference_url:
        m = _measure_url(run, spec, samples, run.reference_url, None, run.reference_precision)
        source = run.reference_url
    elif run.backend:
        precision = run.reference_precision or spec.method.reference_precision
        m = _measure_launched(run, spec, samples, precision)
        source = f"launched {run.model} at {precision}"
    else:
        raise GateSpecError("no reference: with --url give --reference RESULT.json or --reference-url URL "
                            "(or --record-reference to store this server's measurement as one)")
    write_json(run.out / "reference.json", m.model_dump(mode="json"))
    return m, source


def _candidate(run: GateRun, spec: GateSpec, samples: list[dict]) -> Measurement:
    if run.url:
        return _measure_url(run, spec, samples, run.url, run.model, run.precision)
    return _measure_launched(run, spec, samples, run.precision or "bf16")


def evaluate(run: GateRun) -> GateResult:
    """Measure and judge. A broken spec raises GateSpecError (there are no fields to report)."""
    spec = load_gate_spec(run.spec)
    try:
        if bool(run.url) == bool(run.backend):
            raise GateSpecError("give exactly one of --url (attach) or --backend vllm --model DIR (launch)")
        if run.backend and not run.model:
            raise GateSpecError(f"--backend {run.backend} needs --model DIR")
        samples = load_eval_set(spec)
        if run.record_reference:
            m = _candidate(run, spec, samples)
            write_json(run.out / "reference.json", m.model_dump(mode="json"))
            value = f"{m.value:.4g}" if m.value is not None else "recorded"
            return GateResult(status="passed", passed=True,
                              message=f"reference recorded: {spec.metric} {value} in {run.out / 'reference.json'}",
                              metric=spec.metric, threshold={}, method=spec.method.model_dump(mode="json"),
                              precision=m.target.get("precision"), value=m.value, measurement=m)
        reference, source = _reference(run, spec, samples)
        candidate = _candidate(run, spec, samples)
        return judge(spec, candidate, reference, source)
    except (ConfigError, GateMeasurementError, TargetError, ServerError) as exc:
        return error_result(spec, str(exc).splitlines()[0], run.precision)
