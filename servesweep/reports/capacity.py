"""Capacity arithmetic: how many replicas (and GPUs, GPU-hours, dollars) a peak load needs.

Terms:
  goodput_rps     requests/s one replica serves while meeting the SLOs: `measured` on the SKU the
                  sweep ran on, `projected` (roofline, see analysis/skus.py) for the others. The
                  caller supplies one `SkuGoodput` per SKU with its `basis`; every result row keeps it.
  headroom        the fraction of goodput held back (default 0.3): a replica is planned at no more
                  than goodput x (1 - headroom), for bursts, failover and measurement error.
  planned rate    goodput x (1 - headroom): the requests/s each replica is planned to carry.
  replicas        ceil(load / planned rate), at least `min_replicas` (default 1) every hour;
                  GPUs = replicas x gpus_per_replica.
  profile         the load through a day: 24 hourly fractions of the peak (hour 0 first), or
                  (hour, requests/s) pairs covering hours 0-23 once each; none means the peak all day.
                  Each hour gets the replicas its load needs, so GPU-hours/day = sum over hours of
                  replicas x gpus_per_replica.
  cost per 1M output tokens
    at planned utilization  usd_per_gpu_hour x gpus_per_replica
                            / (planned rate x output tokens per request x 3600) x 1e6
    over the day            usd_per_day / (output tokens the profile asks for in a day) x 1e6,
                            which includes the cost of idle headroom and quiet hours.

A SKU with no goodput, or goodput 0 (no request met the SLOs), is reported as "cannot serve"
with the reason; nothing is divided by zero. A SKU without a price gets no cost figures.
Prices come from a YAML price table the user supplies (`{sku: {usd_per_gpu_hour: X}}`;
scenarios/prices/example.yaml shows the layout with fictional numbers); servesweep ships no prices.

Public API:
  plan_capacity(goodput, peak_rps, headroom=0.3, profile=None, prices=None,
                output_tokens_per_request=None, min_replicas=1, price_source=None) -> CapacityReport
  read_prices(path) -> {sku: usd_per_gpu_hour}
  render_markdown(report) -> str;  write_capacity(report, out_dir) -> (capacity.json, capacity.md)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servesweep.errors import ConfigError, OutputError, validation_message
from servesweep.analysis.energy_per_token import JOULES_PER_KWH, POWER_SOURCE, energy_cost_per_1m
from servesweep.results import write_json
from servesweep.results.recommendation import Recommendation
from servesweep.files import read_yaml_file

CAPACITY_SCHEMA_VERSION = 1
CAPACITY_JSON = "capacity.json"
CAPACITY_MD = "capacity.md"
DEFAULT_HEADROOM = 0.3
HOURS = 24
# Goodput x (1 - headroom) is rarely exact in binary floating point (1 - 0.9 is 0.0999...98), so
# a ratio that is a whole number on paper must not round up to one replica more.
_CEIL_SLACK = 1e-9

Basis = Literal["measured", "projected"]


class SkuGoodput(BaseModel):
    """One SKU's input: its single-replica goodput under the SLOs and where that number comes from."""

    model_config = ConfigDict(extra="forbid")

    goodput_rps: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    basis: Basis
    gpus_per_replica: int = Field(default=1, ge=1)
    note: str | None = None  # e.g. the projection's assumption, carried into the report
    j_per_output_token: float | None = Field(default=None, ge=0)  # measured (NVML) only


class SkuCapacity(BaseModel):
    sku: str
    basis: Basis
    gpus_per_replica: int
    goodput_rps: float | None
    planned_rps_per_replica: float | None
    status: Literal["ok", "cannot_serve"]
    reason: str | None = None
    note: str | None = None
    replicas_at_peak: int | None = None
    gpus_at_peak: int | None = None
    hourly_replicas: list[int] | None = None
    gpu_hours_per_day: float | None = None
    usd_per_gpu_hour: float | None = None
    usd_per_day: float | None = None
    usd_per_1m_output_tokens: float | None = None  # at the planned utilization
    usd_per_1m_output_tokens_day: float | None = None  # over the day's profile, idle capacity included
    kwh_per_1m_output_tokens: float | None = None  # measured GPU energy at the recommended point
    usd_energy_per_1m_output_tokens: float | None = None  # that energy at the given energy price


class CapacityReport(BaseModel):
    """What capacity.json holds."""

    schema_version: int = CAPACITY_SCHEMA_VERSION
    policy: str
    headroom: float
    min_replicas: int
    peak_rps: float
    profile: Literal["flat", "fractions", "hourly_rps"]
    hourly_rps: list[float]
    output_tokens_per_request: float | None
    price_source: str | None
    skus: list[SkuCapacity]
    usd_per_kwh: float | None = None
    energy_source: str | None = None


def _ceil(x: float) -> int:
    return math.ceil(x - _CEIL_SLACK)


def _finite_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def hourly_load(peak_rps: float | None,
                profile: Sequence[float] | Sequence[tuple[int, float]] | Mapping[int, float] | None
                ) -> tuple[float, str, list[float]]:
    """(peak requests/s, profile kind, requests/s for each of the 24 hours)."""
    if peak_rps is not None:
        peak_rps = _finite_number(peak_rps, "peak requests/s")
        if peak_rps <= 0:
            raise ConfigError(f"peak requests/s must be > 0, got {peak_rps:g}")
    if profile is None:
        if peak_rps is None:
            raise ConfigError("give a peak request rate or an hourly (hour, requests/s) profile")
        return peak_rps, "flat", [peak_rps] * HOURS
    items = list(profile.items()) if isinstance(profile, Mapping) else list(profile)
    if items and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
        if len(items) != HOURS:
            raise ConfigError(f"a diurnal profile of fractions needs {HOURS} values (hour 0 first), got {len(items)}")
        fractions = [_finite_number(x, f"profile fraction of hour {h}") for h, x in enumerate(items)]
        bad = [h for h, x in enumerate(fractions) if not 0 <= x <= 1]
        if bad:
            raise ConfigError(f"profile fractions must lie in [0, 1] (fractions of the peak); hour {bad[0]} "
                              f"has {fractions[bad[0]]:g}")
        if peak_rps is None:
            raise ConfigError("a profile of fractions needs the peak request rate it is a fraction of")
        return peak_rps, "fractions", [f * peak_rps for f in fractions]
    hourly: dict[int, float] = {}
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ConfigError(f"a diurnal profile is 24 fractions or (hour, requests/s) pairs; got {item!r}")
        hour, rps = item
        if isinstance(hour, bool) or not isinstance(hour, int) or not 0 <= hour < HOURS:
            raise ConfigError(f"profile hour must be a whole number 0-23, got {hour!r}")
        if hour in hourly:
            raise ConfigError(f"profile hour {hour} is given twice")
        rps = _finite_number(rps, f"profile requests/s of hour {hour}")
        if rps < 0:
            raise ConfigError(f"profile requests/s of hour {hour} must be >= 0, got {rps:g}")
        hourly[hour] = rps
    missing = [h for h in range(HOURS) if h not in hourly]
    if missing:
        raise ConfigError(f"an (hour, requests/s) profile must cover hours 0-23; missing {missing}")
    loads = [hourly[h] for h in range(HOURS)]
    busiest = max(loads)
    if peak_rps is None:
        if busiest <= 0:
            raise ConfigError("the hourly profile has no traffic in any hour")
        peak_rps = busiest
    elif busiest > peak_rps:
        hour = loads.index(busiest)
        raise ConfigError(f"profile hour {hour} has {busiest:g} requests/s, above the peak {peak_rps:g}")
    return peak_rps, "hourly_rps", loads


def policy_text(headroom: float, min_replicas: int) -> str:
    use = 1 - headroom
    return (f"Replicas are planned at no more than {use * 100:.4g}% of the goodput measured or projected "
            f"under the SLOs ({headroom * 100:.4g}% headroom for bursts, failover and measurement error): "
            f"replicas = ceil(requests/s / (goodput x {use:.4g})), at least {min_replicas} every hour.")


def _sku_row(sku: str, g: SkuGoodput, headroom: float, min_replicas: int, peak: float, loads: list[float],
             price: float | None, tokens_per_request: float | None, usd_per_kwh: float | None = None) -> SkuCapacity:
    row = SkuCapacity(sku=sku, basis=g.basis, gpus_per_replica=g.gpus_per_replica, goodput_rps=g.goodput_rps,
                      planned_rps_per_replica=None, status="cannot_serve", note=g.note, usd_per_gpu_hour=price)
    if g.j_per_output_token is not None:
        row.kwh_per_1m_output_tokens = g.j_per_output_token * 1e6 / JOULES_PER_KWH
        row.usd_energy_per_1m_output_tokens = energy_cost_per_1m(row.kwh_per_1m_output_tokens, usd_per_kwh)
    if g.goodput_rps is None:
        row.reason = f"no {g.basis} goodput for this SKU"
        return row
    if g.goodput_rps == 0:
        row.reason = "goodput 0: no request met the SLOs at any measured load"
        return row
    planned = g.goodput_rps * (1 - headroom)
    row.status = "ok"
    row.planned_rps_per_replica = planned
    row.replicas_at_peak = max(min_replicas, _ceil(peak / planned))
    row.gpus_at_peak = row.replicas_at_peak * g.gpus_per_replica
    row.hourly_replicas = [max(min_replicas, _ceil(rps / planned)) for rps in loads]
    row.gpu_hours_per_day = float(sum(row.hourly_replicas) * g.gpus_per_replica)
    if price is not None:
        row.usd_per_day = row.gpu_hours_per_day * price
        if tokens_per_request:
            replica_tokens_per_hour = planned * tokens_per_request * 3600
            row.usd_per_1m_output_tokens = price * g.gpus_per_replica / replica_tokens_per_hour * 1e6
            day_tokens = sum(loads) * 3600 * tokens_per_request
            if day_tokens > 0:
                row.usd_per_1m_output_tokens_day = row.usd_per_day / day_tokens * 1e6
    return row


def plan_capacity(
    goodput: Mapping[str, SkuGoodput | Mapping[str, Any]],
    peak_rps: float | None,
    headroom: float = DEFAULT_HEADROOM,
    profile: Sequence[float] | Sequence[tuple[int, float]] | Mapping[int, float] | None = None,
    prices: Mapping[str, float] | None = None,
    output_tokens_per_request: float | None = None,
    min_replicas: int = 1,
    price_source: str | None = None,
    usd_per_kwh: float | None = None,
) -> CapacityReport:
    """Replicas, GPUs, GPU-hours/day, energy and costs per SKU, in the order the SKUs are given."""
    headroom = _finite_number(headroom, "headroom")
    if not 0 <= headroom < 1:
        raise ConfigError(f"headroom must be a fraction in [0, 1), got {headroom:g}")
    if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 0:
        raise ConfigError(f"min_replicas must be a whole number >= 0, got {min_replicas!r}")
    if output_tokens_per_request is not None:
        output_tokens_per_request = _finite_number(output_tokens_per_request, "output tokens per request")
        if output_tokens_per_request <= 0:
            raise ConfigError(f"output tokens per request must be > 0, got {output_tokens_per_request:g}")
    if usd_per_kwh is not None and not _finite_number(usd_per_kwh, "energy price") > 0:
        raise ConfigError(f"the energy price must be > 0 USD per kWh, got {usd_per_kwh:g}")
    if not goodput:
        raise ConfigError("no SKU to plan capacity for")
    peak, kind, loads = hourly_load(peak_rps, profile)
    rows = []
    for sku, entry in goodput.items():
        try:
            g = entry if isinstance(entry, SkuGoodput) else SkuGoodput.model_validate(entry)
        except ValidationError as exc:
            raise ConfigError(f"goodput of {sku}: {validation_message(exc)}") from None
        price = (prices or {}).get(sku)
        rows.append(_sku_row(sku, g, headroom, min_replicas, peak, loads, price, output_tokens_per_request, usd_per_kwh))
    return CapacityReport(policy=policy_text(headroom, min_replicas), headroom=headroom,
                          min_replicas=min_replicas, peak_rps=peak, profile=kind, hourly_rps=loads,
                          output_tokens_per_request=output_tokens_per_request,
                          price_source=price_source, skus=rows, usd_per_kwh=usd_per_kwh,
                          energy_source=POWER_SOURCE if any(r.kwh_per_1m_output_tokens is not None for r in rows)
                          else None)


def read_prices(path: str | Path) -> dict[str, float]:
    """`{sku_name: {usd_per_gpu_hour: X}}` from a YAML file, every price a positive number."""
    raw = read_yaml_file(Path(path), "price table", ConfigError)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"price table {path}: expected a mapping of SKU name to {{usd_per_gpu_hour: X}}")
    prices = {}
    for sku, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) != {"usd_per_gpu_hour"}:
            raise ConfigError(f"price table {path}: {sku}: expected exactly {{usd_per_gpu_hour: X}}, got {entry!r}")
        value = entry["usd_per_gpu_hour"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"price table {path}: {sku}: usd_per_gpu_hour must be a positive number, got {value!r}")
        prices[str(sku)] = float(value)
    return prices


def _fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _money(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


CAPACITY_HEADER = ["SKU", "basis", "goodput (req/s)", "planned req/s per replica", "GPUs per replica",
                   "replicas at peak", "GPUs at peak", "GPU-hours/day", "$/GPU-hour", "$/day",
                   "$/1M output tokens (planned)", "$/1M output tokens (day)", "kWh/1M output tokens",
                   "energy $/1M output tokens"]


def capacity_lines(report: CapacityReport) -> list[str]:
    """The plan's policy and inputs, one sentence each (Markdown and the HTML report)."""
    profile = {"flat": "the peak every hour (no diurnal profile given)",
               "fractions": "24 hourly fractions of the peak",
               "hourly_rps": "24 hourly request rates"}[report.profile]
    lines = [report.policy, f"Peak load: {_fmt(report.peak_rps)} requests/s; daily profile: {profile}."]
    if report.output_tokens_per_request is not None:
        lines.append(f"Output tokens per request: {_fmt(report.output_tokens_per_request, 1)}.")
    lines.append(f"Prices: {report.price_source or 'none given'}"
                 + (" (user-supplied; servesweep ships no prices)." if report.price_source else "."))
    lines.append("`measured` rows come from this sweep; `projected` rows are roofline projections from it, "
                 "not measurements.")
    if report.energy_source:
        price = f" at {report.usd_per_kwh:g} USD/kWh (user-supplied)" if report.usd_per_kwh is not None else \
            " (give --energy-price USD_PER_KWH for its cost)"
        lines.append(f"Energy: measured SKUs only, at the recommended point's load{price}; {report.energy_source}. "
                     "Projected SKUs: no power is projected.")
    else:
        lines.append("Energy: no GPU power was measured (NVML not available): no energy figures.")
    return lines


def capacity_rows(report: CapacityReport) -> list[list[str]]:
    rows = []
    for r in report.skus:
        if r.status != "ok":
            rows.append([r.sku, r.basis, _fmt(r.goodput_rps), f"cannot serve: {r.reason}", str(r.gpus_per_replica),
                         "-", "-", "-", _money(r.usd_per_gpu_hour), "-", "-", "-", "-", "-"])
            continue
        rows.append([r.sku, r.basis, _fmt(r.goodput_rps), _fmt(r.planned_rps_per_replica), str(r.gpus_per_replica),
                     str(r.replicas_at_peak), str(r.gpus_at_peak), _fmt(r.gpu_hours_per_day, 1),
                     _money(r.usd_per_gpu_hour) if r.usd_per_gpu_hour is not None else "no price",
                     _money(r.usd_per_day), _money(r.usd_per_1m_output_tokens, 3),
                     _money(r.usd_per_1m_output_tokens_day, 3), _money(r.kwh_per_1m_output_tokens, 4),
                     _money(r.usd_energy_per_1m_output_tokens, 4)])
    return rows


def render_markdown(report: CapacityReport) -> str:
    head, *bullets = capacity_lines(report)
    lines = ["# Capacity plan", "", head, "", *[f"- {b}" for b in bullets], "",
             "| " + " | ".join(CAPACITY_HEADER) + " |", "|" + "---|" * len(CAPACITY_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in capacity_rows(report)]
    notes = [f"- {r.sku}: {r.note}" for r in report.skus if r.note]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def write_capacity(report: CapacityReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write capacity.json and capacity.md into `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / CAPACITY_JSON, out_dir / CAPACITY_MD
    write_json(json_path, report.model_dump(mode="json"))
    try:
        md_path.write_text(render_markdown(report), encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {md_path}: {exc.strerror or exc}") from exc
    return json_path, md_path


def goodput_by_sku(result: Recommendation, gpus_per_replica: int = 1) -> dict[str, SkuGoodput]:
    """Single-replica goodput per SKU from a sweep's analysis (analysis/recommend.py `analyse`).

    Measured SKU: the verified recommendation's goodput. Other SKUs: the best goodput the sweep
    measured at that SKU's preferred precision (within the SLOs and the VRAM budget), times the
    decode-roofline gain of analysis/skus.py at that point's batch, labelled `projected`; a SKU whose preferred
    precision was not measured gets no number ("cannot serve", with the reason).
    """
    from servesweep.analysis.skus import RULES_FILE_CITED, SKUS, decode_roofline_terms, sku_from_gpu_name

    rec = result.production_recommendation
    table = result.sku_to_preferred_precision
    # This sweep's SKU is the GPU its points ran on, not the recommendation's `sku` (a CPU sweep
    # takes that from the scenario) nor any measured entry of the table: other measured SKUs come
    # from other sweeps (`report --measured`), whose goodput under this scenario's SLOs is in their
    # own capacity report, and this sweep's goodput must not be labelled as theirs.
    measured_skus = [name for name, e in table.items() if e.get("basis") == "measured"]
    here = sku_from_gpu_name(rec.measured_on if rec is not None else None)
    measured = here if here in measured_skus else None
    points = [p for p in result.combined_sweep.points
              if p.get("meets_slo") and p.get("fits_budget", True) and p.get("goodput") is not None]
    best: dict[str, float] = {}
    best_batch: dict[str, float | None] = {}
    for p in points:
        if p["goodput"] > best.get(p["precision"], -1.0):
            best[p["precision"]] = p["goodput"]
            best_batch[p["precision"]] = p.get("batch")
    out: dict[str, SkuGoodput] = {}
    energy = ((rec.energy or {}).get("j_per_output_token") if rec is not None else None)
    if measured is None and rec is not None:
        # No known GPU was measured (a CPU sweep): the machine itself is the one measured row.
        measured_here = str(rec.measured_on or "this machine")
        out[measured_here] = SkuGoodput(goodput_rps=rec.expected.get("goodput"), basis="measured",
                                        gpus_per_replica=gpus_per_replica, j_per_output_token=energy,
                                        note=f"{rec.precision} at concurrency {rec.concurrency} on "
                                             "the machine the sweep ran on (no GPU SKU to project from)")
    if measured is not None and rec is not None:
        out[measured] = SkuGoodput(goodput_rps=rec.expected.get("goodput"), basis="measured",
                                   gpus_per_replica=gpus_per_replica, j_per_output_token=energy,
                                   note=f"{rec.precision} at concurrency {rec.concurrency}"
                                        + ("" if rec.verified else "; recommendation not verified"))
    base = SKUS.get(measured) if measured else None
    for name, entry in table.items():
        if name == measured:
            continue
        if name in measured_skus:
            out[name] = SkuGoodput(goodput_rps=None, basis="measured", gpus_per_replica=gpus_per_replica,
                                   note="measured in another sweep: run `servesweep capacity` on that sweep")
            continue
        sku, precision = SKUS.get(name), entry.get("precision")
        if base is None or sku is None or precision not in best:
            why = ("no GPU was measured: nothing to project from" if base is None else
                   f"{precision} was not measured within the SLOs" if sku else "no datasheet figures")
            out[name] = SkuGoodput(goodput_rps=None, basis="projected", gpus_per_replica=gpus_per_replica, note=why)
            continue
        batch = best_batch.get(precision)
        gain, m_m, bw, compute = decode_roofline_terms(base, sku, precision, batch)
        at = "" if batch is None else f" at batch {batch:g}"
        out[name] = SkuGoodput(goodput_rps=best[precision] * gain, basis="projected", gpus_per_replica=gpus_per_replica,
                               note=f"{precision}: {base.name} measured goodput{at} x {gain:.3f} (the decode-roofline "
                                    f"rule of {RULES_FILE_CITED}: memory share {m_m:.3f}, bandwidth x{bw:.3f}, compute "
                                    f"x{compute:.3f}; applied to goodput: assumes goodput scales as decode throughput does)")
    return out
