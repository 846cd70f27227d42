"""Quality under load: the gate metric measured while a load runs against the same server.

Batching changes numerics (other sequences share the kernels, the batch shape picks the kernel,
chunked prefill splits prompts), so a precision can pass the gate alone and regress under
concurrency. Here the gate's requests (servesweep.quality.gate.measure) are sent while a load
level runs in the same event loop:

  load starts -- its first request completes -- gate starts ... gate ends -- load stopped
              (warm-up: the load's requests have                  (what is in flight is
               been in flight a whole request's latency)           cancelled)

The load is a `LoadLevel` (closed-loop concurrency, or an open-loop rate) with the caller's
workload, run as an ordinary load test (servesweep.loadtest.run_load_test: its target probe,
tokenizer, runner, telemetry and summary) for as long as the measurement takes: the measurement is
the load test's `during` hook, and the load stops when it returns. The measurement starts only once the load's first request has completed, so
the server's batch holds the load when the gate's requests arrive; a first request that failed
means the load is not running and nothing is measured. The gate's own requests (at most
measure.CONCURRENT_REQUESTS at once, as when it is measured unloaded) join the load's batch.

Evidence, so a reader can check the load really ran during the measurement (`LoadEvidence`, all
times in seconds on the load's clock, from the load's start):
  gate_start_s, gate_end_s    the measurement's window; load_start_s <= gate_start_s and
                              gate_end_s <= load_end_s when the measurement counts
  requests_overlapping        load requests in flight at some moment of the window
  in_flight_mean              the load's requests in flight, averaged over the window (client side)
  completed_during            load requests that completed inside the window (failed_during: failed)
  output_tokens_during        content chunks the load's streams received inside the window (one
                              token each on vLLM's streams); None for a non-streamed workload
  running_batch_mean/_peak    the server's running batch over the window (vLLM num_requests_running),
                              the gate's own requests included; None without telemetry
  whole_load                  the load's usual statistics over its whole run (loadgen.stats)

A measurement under load that cannot be taken (the load did not start, failed, or stopped before
the measurement ended; the measurement itself failed) is recorded as `not_measured` with the cause.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel

from servesweep.backends.base import Telemetry
from servesweep.errors import ServesweepError
from servesweep.loadgen.arrivals import LoadLevel
from servesweep.loadgen.records import ERROR_CANCELLED, RequestRecord
from servesweep.loadgen.stats import summarize
from servesweep.loadgen.workload import Workload
from servesweep.loadtest import LoadTestConfig, RunningLoad, run_load_test
from servesweep.quality.gate.measure import GateMeasurementError, Measurement, measure
from servesweep.quality.gate.spec import GateSpec, GateSpecError
from servesweep.quality.gate.verdict import GateResult, error_result, judge
from servesweep.results.io import GATE_UNDER_LOAD_SUMMARY_FILE

# The load level's duration bound: it is stopped as soon as the measurement ends, this only
# keeps a runaway measurement from holding the server forever.
LOAD_CAP_S = 6 * 3600.0
WHOLE_LOAD_KEYS = ("completed", "failed", "cancelled", "duration_s", "request_throughput",
                   "output_token_throughput")


class LoadEvidence(BaseModel):
    """What the load did during the measurement (see the module docstring)."""

    level: dict[str, Any]  # the load level as run (duration-bounded; stopped when the gate ended)
    label: str
    source: str  # why this load: the spec's concurrency, the search's recommendation, the best point
    concurrency: int | None = None
    request_rate: float | None = None
    load_start_s: float | None = None
    load_end_s: float | None = None
    gate_start_s: float | None = None
    gate_end_s: float | None = None
    requests_overlapping: int = 0
    in_flight_mean: float | None = None
    completed_during: int = 0
    failed_during: int = 0
    output_tokens_during: int | None = None
    output_tok_s_during: float | None = None
    running_batch_mean: float | None = None
    running_batch_peak: float | None = None
    preemptions: float | None = None
    prompt_pool_wrapped: bool = False
    whole_load: dict[str, Any] = {}
    records_file: str | None = None

    def describe(self) -> str:
        """A few words for the report: the load and what it did during the window."""
        parts = [f"{self.label} ({self.source})"]
        if self.in_flight_mean is not None:
            parts.append(f"{self.in_flight_mean:.1f} in flight")
        parts.append(f"{self.completed_during} completed" + (f", {self.failed_during} failed" if self.failed_during
                                                              else ""))
        if self.output_tok_s_during is not None:
            parts.append(f"{self.output_tok_s_during:,.0f} output tok/s")
        if self.running_batch_mean is not None:
            parts.append(f"running batch {self.running_batch_mean:.1f}")
        return ", ".join(parts) + " during the measurement"


UNDER_LOAD_MEASUREMENT_SCHEMA_VERSION = 1  # files written before the field existed are version 1


class UnderLoadMeasurement(BaseModel):
    """What gate-under-load-measurement.json holds."""

    schema_version: int = UNDER_LOAD_MEASUREMENT_SCHEMA_VERSION
    status: Literal["measured", "not_measured", "interrupted"]
    precision: str | None = None
    cause: str | None = None
    load: LoadEvidence | None = None
    measurement: Measurement | None = None


class UnderLoadResult(GateResult):
    """What gate-under-load.json holds: the verdict on the measurement under load against the
    reference's UNLOADED measurement, with the load's evidence."""

    load: LoadEvidence | None = None


def background_level(level: LoadLevel) -> LoadLevel:
    """`level` as a load that runs until it is stopped: no request count, no warm-up phase (the
    measurement waits for the load's first completion instead)."""
    data = level.model_dump(exclude_none=True)
    data.update(num_requests=None, duration_s=LOAD_CAP_S, warmup_requests=0)
    return LoadLevel.model_validate(data)


def load_evidence(records: Iterable[RequestRecord], gate_start: float, gate_end: float) -> dict[str, Any]:
    """The load's activity inside [gate_start, gate_end] (seconds on the records' clock)."""
    window = gate_end - gate_start
    overlapping, busy, completed, failed = 0, 0.0, 0, 0
    chunks, streamed = 0, False
    for r in records:
        start, end = r.start_s, r.end_s
        if start is None:
            continue
        end = gate_end if end is None else end
        if start < gate_end and end > gate_start:
            overlapping += 1
            busy += min(end, gate_end) - max(start, gate_start)
        if r.end_s is not None and gate_start <= r.end_s <= gate_end:
            if r.ok:
                completed += 1
            elif r.error_kind != ERROR_CANCELLED:
                failed += 1
        if r.chunk_arrivals_s:
            streamed = True
            chunks += sum(1 for t in r.chunk_arrivals_s if gate_start <= t <= gate_end)
    return {
        "requests_overlapping": overlapping,
        "in_flight_mean": busy / window if window > 0 else None,
        "completed_during": completed,
        "failed_during": failed,
        "output_tokens_during": chunks if streamed else None,
        "output_tok_s_during": chunks / window if streamed and window > 0 else None,
    }


async def _gate_during(load: RunningLoad, spec: GateSpec, samples: list[dict[str, Any]], precision: str | None,
                       timeout_s: float, telemetry: Telemetry | None, window: dict[str, Any]) -> None:
    """The gate measured while `load` runs, from its first completed request; what it saw goes into
    `window` (gate_start, gate_end, telemetry_end, measurement, or the cause it was not measured)."""
    first = await load.first_completion()
    if first is None:
        window["cause"] = ("the load ended before its first request completed: "
                           + (load.abort_reason or "no request was sent"))
        return
    if not first.ok:
        window["cause"] = f"the load's first request failed ({first.error_kind}: {first.error_message})"
        return
    window["gate_start"] = load.clock()
    gate = asyncio.create_task(measure(spec, samples, load.base_url, load.model, precision, timeout_s))
    ended = asyncio.create_task(load.ended.wait())
    try:
        await asyncio.wait({ended, gate}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
        if not gate.done():
            gate.cancel()
            await asyncio.gather(gate, return_exceptions=True)
    window["gate_end"] = load.clock()
    if gate.cancelled():
        window["cause"] = ("the load stopped before the measurement ended: "
                           + (load.abort_reason or "it ran out of time"))
    elif gate.exception() is not None:
        exc = gate.exception()
        if not isinstance(exc, GateMeasurementError):
            raise exc
        window["cause"] = str(exc).splitlines()[0]
    else:
        window["measurement"] = gate.result()
    if telemetry is not None:
        await asyncio.get_running_loop().run_in_executor(None, telemetry.sample_now)
    window["telemetry_end"] = load.clock()


def _fill_evidence(evidence: LoadEvidence, summary: dict[str, Any], records: list, window: dict[str, Any],
                   telemetry: Telemetry | None) -> None:
    """The load's own figures, and those of the measurement's window, into `evidence`."""
    if summary["levels"]:
        lv = summary["levels"][0]
        evidence.load_start_s, evidence.load_end_s = lv["start_s"], lv["end_s"]
        evidence.prompt_pool_wrapped = lv["prompt_pool_wrapped"]
        evidence.whole_load = {k: lv[k] for k in WHOLE_LOAD_KEYS} | {"errors": lv["errors"]}
    else:
        whole = summarize(records)
        evidence.whole_load = {k: whole[k] for k in WHOLE_LOAD_KEYS} | {"errors": whole["errors"]}
    gate_start, gate_end = window.get("gate_start"), window.get("gate_end")
    if gate_start is not None and gate_end is not None:
        evidence.gate_start_s, evidence.gate_end_s = gate_start, gate_end
        for key, value in load_evidence(records, gate_start, gate_end).items():
            setattr(evidence, key, value)
        if telemetry is not None and window.get("telemetry_end") is not None:
            stats = telemetry.window_stats(gate_start, window["telemetry_end"])
            evidence.running_batch_mean = stats.get("running_batch_mean")
            evidence.running_batch_peak = stats.get("running_batch_peak")
            evidence.preemptions = stats.get("preemptions")


async def measure_under_load(
    spec: GateSpec, samples: list[dict[str, Any]], base_url: str, model: str | None, precision: str | None,
    workload: Workload, level: LoadLevel, source: str, records_path: Path,
    telemetry: Telemetry | None = None, tokenizer_dir: Path | str | None = None, timeout_s: float = 300.0,
) -> UnderLoadMeasurement:
    """Run `level` (as `background_level`) against the server with the load test's own set-up
    (servesweep.loadtest.run_load_test) and measure the gate metric during it (its `during` hook).
    The load's records go to `records_path`, its summary beside them (GATE_UNDER_LOAD_SUMMARY_FILE)."""
    level = background_level(level)
    evidence = LoadEvidence(level=level.model_dump(exclude_none=True), label=level.label, source=source,
                            concurrency=level.concurrency, request_rate=level.request_rate,
                            records_file=records_path.name)

    def not_measured(cause: str) -> UnderLoadMeasurement:
        return UnderLoadMeasurement(status="not_measured", precision=precision, cause=cause, load=evidence)

    window: dict[str, Any] = {}  # gate_start, gate_end, telemetry_end, measurement: what `during` saw
    seen: list[RunningLoad] = []

    async def during(load: RunningLoad) -> None:
        seen.append(load)
        await _gate_during(load, spec, samples, precision, timeout_s, telemetry, window)

    config = LoadTestConfig(base_url=base_url, model=model, levels=[level], workload=workload,
                            out_dir=records_path.parent, tokenizer_dir=tokenizer_dir, allow_remote=True,
                            show_progress=False, records_file=records_path.name,
                            summary_file=GATE_UNDER_LOAD_SUMMARY_FILE)
    try:
        summary = await run_load_test(config, telemetry=telemetry, telemetry_tail_s=0.0, during=during)
    except ServesweepError as exc:
        if not seen:  # before the load started (the target, the lengths): the caller's to report
            raise
        return not_measured(f"the load failed: {str(exc).splitlines()[0]}")  # e.g. prompts that cannot be built
    if summary["interrupted"]:
        return UnderLoadMeasurement(status="interrupted", precision=precision, cause="interrupted by signal",
                                    load=evidence)
    outcome = seen[0].outcome
    records = [r for lv in outcome.levels for r in lv.records or []] if outcome is not None else []
    _fill_evidence(evidence, summary, records, window, telemetry)
    if "cause" in window:
        return not_measured(window["cause"])
    if not evidence.requests_overlapping:
        return not_measured("no load request was in flight during the measurement")
    return UnderLoadMeasurement(status="measured", precision=precision, load=evidence,
                                measurement=window["measurement"])


def under_load_verdict(spec: GateSpec, measured: UnderLoadMeasurement, reference: Measurement | None,
                       reference_source: str, precision: str | None, missing_reference: str | None = None
                       ) -> UnderLoadResult:
    """The verdict on a measurement under load against the reference's unloaded measurement;
    an `error` result with the cause when either side is missing or they are not comparable."""
    load = measured.load
    where = f" under load ({load.label})" if load is not None else " under load"
    if measured.status != "measured" or measured.measurement is None:
        base = error_result(spec, f"{where.strip()}: {measured.cause}", precision)
    elif reference is None:
        base = error_result(spec, f"{where.strip()}: {missing_reference or 'no reference measurement'}", precision)
    else:
        try:
            base = judge(spec, measured.measurement, reference, reference_source)
        except GateSpecError as exc:
            base = error_result(spec, f"{where.strip()}: {exc}", precision)
        else:
            head, _, detail = base.message.partition(": ")
            base.message = f"{head}{where}: {detail} (reference measured unloaded)"
    return UnderLoadResult(**base.model_dump(exclude={"measurement"}), measurement=base.measurement, load=load)
