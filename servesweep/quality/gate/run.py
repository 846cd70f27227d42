"""One accuracy-gate evaluation: measure the configuration under test (attached or launched),
obtain the reference (a stored result, a running server, or a launched one), and judge.

Problems that stop the measurement (an unreachable or dead server, a missing reference, a
changed eval set) become an `error` result with exit code 2, written like any other verdict.

Under load (`--under-load N`, or the spec's `under_load: {concurrency: N}`): the configuration
under test is measured while N closed-loop streaming requests of the default workload run against
it (servesweep.quality.gate.under_load), and judged against the reference measured unloaded;
gate.json then also holds the load's evidence. The reference is always measured unloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


from servesweep import controlplane
from servesweep.backends import config_from_dict, launch
from servesweep.errors import ConfigError, ServerError, TargetError
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.load_runner import run_async
from servesweep.loadgen.target import check_loopback, probe_target
from servesweep.loadgen.workload import Workload
from servesweep.quality.gate.measure import GateMeasurementError, Measurement, measure
from servesweep.quality.gate.spec import GateSpec, GateSpecError, load_eval_set, load_gate_spec
from servesweep.quality.gate.under_load import UnderLoadMeasurement, measure_under_load, under_load_verdict
from servesweep.quality.gate.verdict import GateResult, error_result, judge, read_reference
from servesweep.results import GATE_UNDER_LOAD_RECORDS_FILE, GATE_UNDER_LOAD_TELEMETRY_FILE, write_json


@dataclass
class GateRun:
    """What `servesweep gate` was asked to do (see servesweep.cli.gate for the options)."""

    spec: Path
    out: Path
    url: str | None = None
    backend: str | None = None
    model: str | None = None
    precision: str | None = None
    server_options: dict = field(default_factory=dict)  # max_model_len, dummy_weights, extra_args, ...
    reference: Path | None = None
    reference_precision: str | None = None
    reference_url: str | None = None
    record_reference: bool = False
    allow_remote: bool = False
    under_load: int | None = None  # concurrency of the load the candidate is measured under
    log: Callable[[str], None] = print


def _under_load_concurrency(run: GateRun, spec: GateSpec) -> tuple[int | None, str]:
    """The load's concurrency and where it came from; None: measure unloaded."""
    if run.under_load is not None:
        if run.under_load < 1:
            raise GateSpecError(f"--under-load must be >= 1, got {run.under_load}")
        return run.under_load, "--under-load"
    if spec.under_load is None:
        return None, ""
    if spec.under_load.concurrency is None:
        raise GateSpecError("the spec's under_load: true means a sweep's recommended load, which servesweep gate "
                            "does not have: give --under-load N (or under_load: {concurrency: N} in the spec)")
    return spec.under_load.concurrency, "the gate spec's concurrency"


def _measure_under_load(spec: GateSpec, samples: list[dict], base_url: str, model: str | None, precision: str | None,
                        load: tuple[int, str], out: Path, server: Any = None) -> UnderLoadMeasurement:
    concurrency, source = load
    telemetry = server.telemetry(out / GATE_UNDER_LOAD_TELEMETRY_FILE) if server is not None else None
    return run_async(measure_under_load(
        spec, samples, base_url, model, precision, Workload(), LoadLevel(concurrency=concurrency, num_requests=1),
        source, out / GATE_UNDER_LOAD_RECORDS_FILE, telemetry=telemetry,
        tokenizer_dir=server.tokenizer_dir if server is not None else None))


def _measure_url(run: GateRun, spec: GateSpec, samples: list[dict], url: str, model: str | None,
                 precision: str | None, load: tuple[int, str] | None = None) -> Measurement | UnderLoadMeasurement:
    if not run.allow_remote:
        check_loopback(url)
    if load is not None:
        run.log(f"measuring {spec.metric} on {len(samples)} samples under a load of {load[0]} concurrent requests")
        return _measure_under_load(spec, samples, url, model, precision, load, run.out)

    async def go() -> Measurement:
        async with controlplane.session() as session:
            info = await probe_target(session, url, model)
        return await measure(spec, samples, url, info.model, precision)

    return run_async(go())


def _measure_launched(run: GateRun, spec: GateSpec, samples: list[dict], precision: str,
                      load: tuple[int, str] | None = None) -> Measurement | UnderLoadMeasurement:
    config = config_from_dict({"kind": run.backend, "model": run.model, "precision": precision,
                               **{k: v for k, v in run.server_options.items() if v is not None}})
    run.log(f"starting {config.kind} at {precision} for {run.model}; log in {run.out}")
    with launch(config, run.out) as server:
        run.log(f"measuring {spec.metric} on {len(samples)} samples at {precision}"
                + (f" under a load of {load[0]} concurrent requests" if load else ""))
        if load is not None:
            result = _measure_under_load(spec, samples, server.base_url, server.model_name, precision, load,
                                         run.out, server)
        else:
            result = run_async(measure(spec, samples, server.base_url, server.model_name, precision))
        failure = server.poll_failure()
        if failure:
            raise ServerError(f"the {precision} server died during the measurement: {failure}")
        return result


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


def _candidate(run: GateRun, spec: GateSpec, samples: list[dict],
               load: tuple[int, str] | None = None) -> Measurement | UnderLoadMeasurement:
    if run.url:
        return _measure_url(run, spec, samples, run.url, run.model, run.precision, load)
    return _measure_launched(run, spec, samples, run.precision or "bf16", load)


def evaluate(run: GateRun) -> GateResult:
    """Measure and judge. A broken spec raises GateSpecError (there are no fields to report)."""
    spec = load_gate_spec(run.spec)
    try:
        if bool(run.url) == bool(run.backend):
            raise GateSpecError("give exactly one of --url (attach) or --backend vllm --model DIR (launch)")
        if run.backend and not run.model:
            raise GateSpecError(f"--backend {run.backend} needs --model DIR")
        samples = load_eval_set(spec)
        if not run.allow_remote:  # every URL, before anything is measured (the reference comes first)
            for url in (run.url, run.reference_url):
                if url:
                    check_loopback(url)
        if run.record_reference and run.under_load is not None:
            raise GateSpecError("--record-reference measures a reference, and references are measured unloaded: "
                                "leave out --under-load")
        if run.record_reference:
            m = _candidate(run, spec, samples)
            write_json(run.out / "reference.json", m.model_dump(mode="json"))
            value = f"{m.value:.4g}" if m.value is not None else "recorded"
            return GateResult(status="passed", passed=True,
                              message=f"reference recorded: {spec.metric} {value} in {run.out / 'reference.json'}",
                              metric=spec.metric, threshold={}, method=spec.method.model_dump(mode="json"),
                              precision=m.target.get("precision"), value=m.value, measurement=m)
        concurrency, load_source = _under_load_concurrency(run, spec)
        reference, source = _reference(run, spec, samples)
        if concurrency is not None:
            measured = _candidate(run, spec, samples, (concurrency, load_source))
            return under_load_verdict(spec, measured, reference, f"{source} (unloaded)", measured.precision)
        candidate = _candidate(run, spec, samples)
        return judge(spec, candidate, reference, source)
    except ServerError as exc:
        # Not measured because the server failed (did not start, died): exit 3, as for every command.
        return error_result(spec, str(exc).splitlines()[0], run.precision).model_copy(update={"server_failed": True})
    except (ConfigError, GateMeasurementError, TargetError) as exc:
        return error_result(spec, str(exc).splitlines()[0], run.precision)
