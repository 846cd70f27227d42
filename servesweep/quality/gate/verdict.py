"""Compare a measurement with the reference's under the spec's threshold."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from servesweep.confidence import binomial_interval
from servesweep.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_SERVER, EXIT_USAGE, validation_message
from servesweep.quality.gate.measure import Measurement
from servesweep.quality.gate.spec import GateSpec, GateSpecError

# Exit codes of `servesweep gate` (servesweep.errors: 0 ok, 1 check failed, 2 usage).
EXIT_PASSED, EXIT_FAILED, EXIT_NOT_MEASURED = EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE
# Accuracies are ratios of counts: 49/100 - 50/100 is -1.0000000000000009 points in floating point,
# and a limit of exactly 1 point must hold there.
ROUNDING = 1e-9


# gate.json and gate-under-load.json. Version 1: files written before the field existed are the same shape.
GATE_SCHEMA_VERSION = 1


class GateResult(BaseModel):
    """What `gate.json` holds."""

    schema_version: int = GATE_SCHEMA_VERSION
    status: Literal["passed", "failed", "error"]
    passed: bool
    message: str
    metric: str
    threshold: dict[str, float]
    method: dict[str, Any]
    precision: str | None = None
    reference_precision: str | None = None
    reference_source: str | None = None
    reference_value: float | None = None
    value: float | None = None
    measurement: Measurement | None = None  # this run's samples: the file can serve as a later --reference
    checked_at: str = ""
    server_failed: bool = False  # not measured because a launched server did not start or died

    @property
    def exit_code(self) -> int:
        if self.status == "error" and self.server_failed:
            return EXIT_SERVER
        return {"passed": EXIT_PASSED, "failed": EXIT_FAILED, "error": EXIT_NOT_MEASURED}[self.status]


def _spec_fields(spec: GateSpec) -> dict[str, Any]:
    method = spec.method.model_dump(mode="json")
    # The file's name, not where it sits on this machine: its sha256 (beside it) pins the content.
    method["eval_set"] = spec.method.eval_set.name
    return {"metric": spec.metric, "threshold": {k: v for k, v in spec.threshold.model_dump().items() if v is not None},
            "method": method}


def error_result(spec: GateSpec, message: str, precision: str | None = None) -> GateResult:
    return GateResult(status="error", passed=False, message=f"not measured: {message}", precision=precision,
                      checked_at=_now(), **_spec_fields(spec))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def greedy_agreement(reference: Measurement, candidate: Measurement) -> float:
    """Share of output positions whose token equals the reference's (a shorter output counts as disagreeing)."""
    agree = total = 0
    for ref, out in zip(reference.samples, candidate.samples):
        a, b = ref["tokens"], out["tokens"]
        agree += sum(x == y for x, y in zip(a, b))
        total += max(len(a), len(b))
    return agree / total if total else 0.0


def correct_count(m: Measurement) -> int:
    """How many of an exact-match measurement's tasks were answered correctly."""
    return sum(bool(s.get("correct")) for s in m.samples)


def _interval(m: Measurement) -> str:
    """The accuracy's 95 % binomial interval: how far another task set of the same size could put it."""
    low, high = binomial_interval(correct_count(m), len(m.samples))
    return f"(95 % CI {low:.1%}-{high:.1%})"


def paired_flips(reference: Measurement, candidate: Measurement) -> tuple[int, int]:
    """(lost, gained): tasks the reference answered and the candidate did not, and the other way."""
    ref = {s["id"]: bool(s.get("correct")) for s in reference.samples}
    out = {s["id"]: bool(s.get("correct")) for s in candidate.samples}
    if ref.keys() != out.keys():
        raise GateSpecError("the reference and this run answered different tasks; a paired comparison needs the same")
    lost = sum(1 for task, ok in ref.items() if ok and not out[task])
    gained = sum(1 for task, ok in ref.items() if not ok and out[task])
    return lost, gained


def paired_p_value(lost: int, gained: int) -> float:
    """One-sided exact McNemar: the chance of losing at least `lost` of the flips if each went either way."""
    from scipy.stats import binomtest  # imported here: scipy takes a moment to load and most runs never need it

    flips = lost + gained
    return float(binomtest(lost, flips, 0.5, alternative="greater").pvalue) if flips else 1.0


def _exact_match_verdict(spec: GateSpec, candidate: Measurement, reference: Measurement,
                         ref_label: str) -> tuple[bool, str]:
    t = spec.threshold_value
    change_points = (candidate.value - reference.value) * 100
    passed = -change_points <= t + ROUNDING
    detail = (f"exact-match accuracy {candidate.value:.1%} {_interval(candidate)} vs {ref_label} "
              f"{reference.value:.1%} {_interval(reference)} over {len(candidate.samples)} tasks: "
              f"{change_points:+.1f} points (allowed drop at most {t:.1f} points)")
    alpha = spec.threshold.paired_alpha
    if alpha is not None:
        lost, gained = paired_flips(reference, candidate)
        p = paired_p_value(lost, gained)
        worse = p < alpha
        passed = passed and not worse
        detail += (f"; paired: lost {lost}, gained {gained} of the reference's tasks, one-sided exact McNemar "
                   f"p {p:.3f} ({'significantly worse' if worse else 'not significantly worse'} at {alpha:g})")
    return passed, detail


def _check_comparable(reference: Measurement, candidate: Measurement) -> None:
    if reference.fingerprint != candidate.fingerprint:
        diff = sorted(k for k in reference.fingerprint if reference.fingerprint.get(k) != candidate.fingerprint.get(k))
        raise GateSpecError(f"the reference was measured differently ({', '.join(diff)} differ), so the two "
                            "values are not comparable; re-measure the reference with this spec")
    if len(reference.samples) != len(candidate.samples):
        raise GateSpecError("the reference and this run measured different numbers of samples")
    if reference.metric == "perplexity":
        for ref, out in zip(reference.samples, candidate.samples):
            if ref["tokens"] != out["tokens"]:
                raise GateSpecError(
                    f"sample {out.get('id')}: the reference scored {ref['tokens']} tokens, this server "
                    f"{out['tokens']}: a different tokenizer or a truncated context; perplexities are not comparable")


def judge(spec: GateSpec, candidate: Measurement, reference: Measurement, reference_source: str) -> GateResult:
    """The verdict; raises GateSpecError when the two measurements cannot be compared."""
    _check_comparable(reference, candidate)
    t = spec.threshold_value
    ref_prec = reference.target.get("precision")
    ref_label = f"reference{f' ({ref_prec})' if ref_prec else ''}"
    if spec.metric == "perplexity":
        ref_value, value = reference.value, candidate.value
        change = value / ref_value - 1
        passed = change <= t + ROUNDING
        detail = (f"perplexity {value:.3f} vs {ref_label} {ref_value:.3f}: {change:+.2%} "
                  f"(allowed at most {t:+.2%})")
    elif spec.metric == "exact_match":
        ref_value, value = reference.value, candidate.value
        passed, detail = _exact_match_verdict(spec, candidate, reference, ref_label)
    else:
        ref_value, value = 1.0, greedy_agreement(reference, candidate)
        passed = value >= t - ROUNDING
        detail = f"greedy token agreement with {ref_label} {value:.1%} (required at least {t:.1%})"
    status = "passed" if passed else "failed"
    return GateResult(status=status, passed=passed, message=f"{status.upper()}: {detail}",
                      precision=candidate.target.get("precision"), reference_precision=ref_prec,
                      reference_source=reference_source, reference_value=ref_value, value=value,
                      measurement=candidate, checked_at=_now(), **_spec_fields(spec))


def read_reference(path: Path) -> Measurement:
    """A measurement from an earlier run: its gate.json (the measured side) or a reference.json."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GateSpecError(f"reference {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise GateSpecError(f"reference {path}: not valid JSON: {exc}") from None
    if isinstance(data, dict) and "measurement" in data:
        data = data["measurement"]
    if data is None:
        raise GateSpecError(f"reference {path} holds no measurement (that run was not measured)")
    try:
        return Measurement.model_validate(data)
    except ValidationError as exc:
        raise GateSpecError(f"reference {path} is not a servesweep gate measurement: {validation_message(exc)}") from None
