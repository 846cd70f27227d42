"""The GPU validation's acceptance criteria, checked against a sweep's recommendation.json.

These are the checks a committed GPU example (examples/h100-*/) is held to; each one reads
only the recommendation file, so a reader can rerun them on any sweep:

    python -m servesweep.reports.criteria examples/h100-llama3-8b     # exit 1 if one is unmet

  batch_sweep        the headline precision's batch sweep (batch_sweep.knee_precision) has >= 4
                     distinct batch sizes, max/min output throughput >= 2x, and its knee was
                     reached among them (knee_reached: the marginal-throughput rule crossed, not
                     merely the largest batch sampled)
  precisions         fp32, fp16 and bf16 all measured
  fp16_speedup       fp16 throughput >= 1.15x fp32's (the precision sweep's batch)
  drift_cosine       logprob cosine against the fp32 reference > 0.95 for fp16 and bf16, from a
                     model with real (not dummy) weights (`models.quality`)
  combined_sweep     >= 6 combined points; the best fits its VRAM budget and has >= 3x the goodput
                     of the fp32 batch-1 baseline
  production         production_recommendation has every field a deployment needs and
                     oom_margin_pct in the 5-40 % band
  verified           the recommendation passed its verification run and its oom_margin_pct is the
                     one that run measured (oom_margin_source), not the sweep's
  sku_table          every A100 entry's precision differs from the measured Hopper's (H100 or
                     H200, whichever the sweep ran on); A100s are projected and say so (`basis`)
  accuracy_gate      at least one gate verdict, each naming its metric, threshold and method

A criterion that is unmet says what was measured; the data are not tuned until a check passes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from servesweep.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, ReportError
from servesweep.results.recommendation import RECOMMENDATION_FILE
from servesweep.thresholds import MARGIN_BAND

MIN_BATCH_SIZES = 4
MIN_BATCH_THROUGHPUT_RATIO = 2.0
MIN_FP16_SPEEDUP = 1.15
MIN_COSINE = 0.95
MIN_COMBINED_POINTS = 6
MIN_COMBINED_SPEEDUP = 3.0
PRODUCTION_FIELDS = ("sku", "precision", "max_batch_size", "concurrency", "memory_fraction", "expected",
                     "kv_cache_peak_bytes", "oom_margin_pct")


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    passed: bool
    detail: str  # what was measured, in a few words


def _batch_sweep(rec: dict[str, Any]) -> Criterion:
    sweep = rec.get("batch_sweep") or {}
    precision = sweep.get("knee_precision")
    entry = (sweep.get("by_precision") or {}).get(precision) or {}
    points = sorted(entry.get("points") or [], key=lambda p: p["batch"])
    batches = sorted({p["batch"] for p in points})
    tputs = [p["output_token_throughput"] for p in points if p.get("output_token_throughput")]
    ratio = max(tputs) / min(tputs) if tputs and min(tputs) > 0 else 0.0
    knee = entry.get("knee_batch_size")
    reached = bool(entry.get("knee_reached")) and knee in batches
    ok = len(batches) >= MIN_BATCH_SIZES and ratio >= MIN_BATCH_THROUGHPUT_RATIO and reached
    return Criterion("batch_sweep", ok, f"{precision}: batches {batches}, max/min throughput {ratio:.2f}x, "
                                        f"knee {knee} ({'reached' if reached else 'not reached'})")


def _precisions(rec: dict[str, Any]) -> Criterion:
    have = sorted(rec.get("precision_sweep") or {})
    missing = [p for p in ("fp32", "fp16", "bf16") if p not in have]
    return Criterion("precisions", not missing, f"measured {have}" + (f"; missing {missing}" if missing else ""))


def _fp16_speedup(rec: dict[str, Any]) -> Criterion:
    sweep = rec.get("precision_sweep") or {}
    fp16, fp32 = (sweep.get("fp16") or {}).get("throughput"), (sweep.get("fp32") or {}).get("throughput")
    if not fp16 or not fp32:
        return Criterion("fp16_speedup", False, "fp16 or fp32 throughput missing")
    return Criterion("fp16_speedup", fp16 / fp32 >= MIN_FP16_SPEEDUP, f"fp16/fp32 {fp16 / fp32:.2f}x")


def _drift_cosine(rec: dict[str, Any]) -> Criterion:
    sweep = rec.get("precision_sweep") or {}
    cosines = {p: (sweep.get(p) or {}).get("logprob_cosine") for p in ("fp16", "bf16")}
    quality = (rec.get("models") or {}).get("quality") or {}
    real = bool(quality) and not quality.get("dummy")
    ok = real and all(c is not None and c > MIN_COSINE for c in cosines.values())
    text = ", ".join(f"{p} {c:.3f}" if c is not None else f"{p} not measured" for p, c in cosines.items())
    source = quality.get("weights") if quality else "no models.quality: the report predates model labels"
    return Criterion("drift_cosine", ok, f"logprob cosine vs fp32: {text}; {source}")


def _combined_sweep(rec: dict[str, Any]) -> Criterion:
    comb = rec.get("combined_sweep") or {}
    points, best = comb.get("points") or [], comb.get("best_config") or {}
    baseline = comb.get("baseline") or {}
    speedup = (comb.get("speedup_vs_baseline") or {}).get("goodput") or 0.0
    base_ok = baseline.get("precision") == "fp32" and baseline.get("batch") == 1
    ok = (len(points) >= MIN_COMBINED_POINTS and best.get("fits_budget") is True and base_ok
          and speedup >= MIN_COMBINED_SPEEDUP)
    return Criterion("combined_sweep", ok, f"{len(points)} points; best {best.get('config')} {best.get('level')} "
                                           f"fits budget: {best.get('fits_budget')}; {speedup:.1f}x the "
                                           f"{baseline.get('precision')} batch-{baseline.get('batch')} baseline")


def _production(rec: dict[str, Any]) -> Criterion:
    prod = rec.get("production_recommendation") or {}
    missing = [f for f in PRODUCTION_FIELDS if prod.get(f) is None]
    margin = prod.get("oom_margin_pct")
    in_band = margin is not None and MARGIN_BAND[0] <= margin <= MARGIN_BAND[1]
    text = f"oom_margin_pct {margin:.1f} (band 5-40)" if margin is not None else "no oom_margin_pct"
    return Criterion("production", not missing and in_band, text + (f"; missing {missing}" if missing else ""))


def _verified(rec: dict[str, Any]) -> Criterion:
    prod = rec.get("production_recommendation") or {}
    ok = prod.get("verified") is True and prod.get("oom_margin_source") == "verification stress run"
    why = (prod.get("verification") or {}).get("skipped") or (prod.get("verification") or {}).get("reason")
    return Criterion("verified", ok, f"verified: {prod.get('verified')}; margin from "
                                     f"{prod.get('oom_margin_source') or 'the sweep'}" + (f" ({why})" if why else ""))


def _sku_table(rec: dict[str, Any]) -> Criterion:
    table = rec.get("sku_to_preferred_precision") or {}
    a100s = {k: e for k, e in table.items() if k.startswith("A100")}
    hopper = next(((k, e) for k, e in table.items() if k.startswith(("H100", "H200")) and e.get("basis") == "measured"),
                  None)
    if not a100s or hopper is None:
        return Criterion("sku_table", False, "no A100 entry, or no measured H100/H200 entry")
    name, measured = hopper
    ok = all(e["precision"] != measured["precision"] and e.get("basis") == "projected" for e in a100s.values())
    text = ", ".join(f"{k} {e['precision']} ({e.get('basis')})" for k, e in a100s.items())
    return Criterion("sku_table", ok, f"{text}; {name} {measured['precision']} ({measured.get('basis')})")


def _accuracy_gate(rec: dict[str, Any]) -> Criterion:
    gates = rec.get("accuracy_gate") or []
    complete = [g for g in gates if g.get("metric") and g.get("threshold") and g.get("method")]
    ok = bool(gates) and len(complete) == len(gates)
    text = (f"{len(gates)} verdict(s): " + ", ".join(f"{g.get('precision')} {g.get('status')}" for g in gates)
            if gates else "no accuracy gate in the sweep")
    return Criterion("accuracy_gate", ok, text)


CHECKS: tuple[Callable[[dict[str, Any]], Criterion], ...] = (
    _batch_sweep, _precisions, _fp16_speedup, _drift_cosine, _combined_sweep, _production, _verified, _sku_table,
    _accuracy_gate,
)


def _check(check: Callable[[dict[str, Any]], Criterion], rec: dict[str, Any]) -> Criterion:
    # A recommendation.json from another version, or edited by hand, can lack a field or hold the
    # wrong type: that criterion is unmet and says why, and the others are still checked.
    try:
        return check(rec)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        name = check.__name__.lstrip("_")  # each check is named after its criterion
        return Criterion(name, False, f"recommendation.json lacks or mistypes a field it needs ({exc!r})")


def check_recommendation(rec: dict[str, Any]) -> list[Criterion]:
    """Every criterion, in the order of the module docstring."""
    return [_check(check, rec) for check in CHECKS]


def check_results_dir(results: Path) -> list[Criterion]:
    # The one reader that takes recommendation.json raw, not through results.Recommendation: it
    # judges files from any version or edited by hand, where each field that is missing or mistyped
    # must be an unmet criterion that names it, not a rejection of the whole file at the first.
    path = Path(results) / RECOMMENDATION_FILE
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path} does not exist: run `servesweep report {results}` first") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path} cannot be read as JSON: {exc}") from None
    if not isinstance(rec, dict):
        raise ReportError(f"{path} is not a recommendation (a JSON object); run `servesweep report {results}`")
    return check_recommendation(rec)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m servesweep.reports.criteria RESULTS_DIR", file=sys.stderr)
        return EXIT_USAGE
    try:
        results = check_results_dir(Path(args[0]))
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for c in results:
        print(f"{'met  ' if c.passed else 'UNMET'}  {c.name:15} {c.detail}")
    return EXIT_OK if all(c.passed for c in results) else EXIT_CHECK_FAILED


if __name__ == "__main__":
    sys.exit(main())
