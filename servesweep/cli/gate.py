"""`servesweep gate`: measure a task-level metric and block a deploy on regression.

    servesweep gate --spec FILE [--url URL | --backend vllm --model DIR --precision P]
                    [--reference RESULT.json | --reference-precision P | --reference-url URL] --out DIR

Exit 0 when the gate holds, 1 when it fails, 2 when it could not be measured. DIR/gate.json
holds the verdict and the numbers either way; DIR/reference.json holds a reference measured in
this run, reusable with --reference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from servesweep.quality.gate.measure import GateMeasurementError, Measurement, measure
from servesweep.quality.gate.spec import GateSpec, GateSpecError, load_eval_set, load_gate_spec
from servesweep.quality.gate.verdict import GateResult, error_result, judge, read_reference
from servesweep.loadgen.runner import run_async
from servesweep.loadgen.target import TargetError, check_loopback, probe_target

PRECISIONS = ["fp32", "fp16", "bf16", "fp8"]


def register(sub: Any) -> None:
    gate = sub.add_parser("gate", help="accuracy gate: measure a task-level metric against a reference; "
                                       "exit 0 pass, 1 regression, 2 not measured")
    gate.add_argument("--spec", type=Path, required=True, help="gate spec (YAML or JSON)")
    gate.add_argument("--out", type=Path, required=True, help="results directory for gate.json")
    target = gate.add_argument_group("the configuration under test")
    target.add_argument("--url", default=None, help="attach to a running server")
    target.add_argument("--backend", choices=["vllm"], default=None, help="launch this server")
    target.add_argument("--model", default=None, help="with --backend: model directory; with --url: served name")
    target.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="with --backend: precision to serve (default bf16); with --url: label only")
    target.add_argument("--max-model-len", type=int, default=None)
    target.add_argument("--load-format", choices=["auto", "dummy"], default=None)
    target.add_argument("--server-arg", action="append", default=[], metavar="ARG")
    target.add_argument("--startup-timeout", type=float, default=900.0)
    target.add_argument("--allow-remote", action="store_true")
    ref = gate.add_argument_group("the reference (default with --backend: the spec's reference_precision)")
    refs = ref.add_mutually_exclusive_group()
    refs.add_argument("--reference", type=Path, default=None,
                      help="a stored result: an earlier run's gate.json or reference.json")
    refs.add_argument("--reference-precision", choices=PRECISIONS, default=None,
                      help="launch the same model at this precision and measure it first")
    refs.add_argument("--reference-url", default=None, help="a running server at the reference precision")
    gate.add_argument("--record-reference", action="store_true",
                      help="only measure the target and write DIR/reference.json (no verdict)")


def _measure_url(spec: GateSpec, samples: list[dict], url: str, model: str | None, precision: str | None,
                 allow_remote: bool) -> Measurement:
    if not allow_remote:
        check_loopback(url)

    async def go() -> Measurement:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            info = await probe_target(session, url, model)
        return await measure(spec, samples, url, info.model, precision)

    return run_async(go())


def _measure_launched(spec: GateSpec, samples: list[dict], args: argparse.Namespace, precision: str,
                      out: Path) -> Measurement:
    from servesweep.backends.vllm import VllmServerConfig
    from servesweep.cli.common import console, start_server

    config = VllmServerConfig(model=args.model, precision=precision, max_model_len=args.max_model_len,
                              load_format=args.load_format, startup_timeout_s=args.startup_timeout,
                              extra_args=args.server_arg)
    server = start_server(config, out)
    try:
        console.print(f"measuring {spec.metric} on {len(samples)} samples at {precision}")
        result = run_async(measure(spec, samples, server.base_url, server.model_name, precision))
        failure = server.process.poll_failure()
        if failure:
            raise GateMeasurementError(f"the {precision} server died during the measurement: {failure}")
        return result
    finally:
        server.stop()


def _reference(spec: GateSpec, samples: list[dict], args: argparse.Namespace, out: Path) -> tuple[Measurement, str]:
    if args.reference:
        return read_reference(args.reference), str(args.reference)
    if args.reference_url:
        m = _measure_url(spec, samples, args.reference_url, None, args.reference_precision, args.allow_remote)
        source = args.reference_url
    elif args.backend:
        precision = args.reference_precision or spec.method.reference_precision
        m = _measure_launched(spec, samples, args, precision, out)
        source = f"launched {args.model} at {precision}"
    else:
        raise GateSpecError("no reference: with --url give --reference RESULT.json or --reference-url URL "
                            "(or --record-reference to store this server's measurement as one)")
    _write(out / "reference.json", m.model_dump(mode="json"))
    return m, source


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _candidate(spec: GateSpec, samples: list[dict], args: argparse.Namespace, out: Path) -> Measurement:
    if args.url:
        return _measure_url(spec, samples, args.url, args.model, args.precision, args.allow_remote)
    return _measure_launched(spec, samples, args, args.precision or "bf16", out)


def evaluate(args: argparse.Namespace) -> GateResult:
    """Everything but printing; problems that stop the measurement become an `error` result."""
    from servesweep.cli import UsageError

    spec = load_gate_spec(args.spec)  # a broken spec has no fields to report: the caller prints it
    out: Path = args.out
    try:
        if bool(args.url) == bool(args.backend):
            raise GateSpecError("give exactly one of --url (attach) or --backend vllm --model DIR (launch)")
        if args.backend and not args.model:
            raise GateSpecError("--backend vllm needs --model DIR")
        samples = load_eval_set(spec)
        if args.record_reference:
            m = _candidate(spec, samples, args, out)
            _write(out / "reference.json", m.model_dump(mode="json"))
            value = f"{m.value:.4g}" if m.value is not None else "recorded"
            return GateResult(status="passed", passed=True,
                              message=f"reference recorded: {spec.metric} {value} in {out / 'reference.json'}", metric=spec.metric, threshold={},
                              method=spec.method.model_dump(mode="json"), precision=m.target.get("precision"),
                              value=m.value, measurement=m)
        reference, source = _reference(spec, samples, args, out)
        candidate = _candidate(spec, samples, args, out)
        return judge(spec, candidate, reference, source)
    except (GateSpecError, GateMeasurementError, TargetError, UsageError) as exc:
        return error_result(spec, str(exc), args.precision)


def cmd_gate(args: argparse.Namespace) -> int:
    from servesweep.cli import UsageError
    from servesweep.cli.common import console

    try:
        result = evaluate(args)
    except GateSpecError as exc:
        raise UsageError(str(exc)) from None
    colour = {"passed": "green", "failed": "red", "error": "yellow"}[result.status]
    console.print(f"[{colour}]accuracy gate {result.message}[/{colour}]", soft_wrap=True)
    if not args.record_reference or result.status == "error":
        _write(args.out / "gate.json", result.model_dump(mode="json"))
        console.print(f"results: {args.out / 'gate.json'}", soft_wrap=True)
    return result.exit_code
