"""How sure the recommended point's figures are (issue 25): its output tok/s and each SLO metric's
Student-t interval over the point's repeats (servesweep.confidence), and the adaptive search's own
note on its recommendation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from servesweep.confidence import fmt_ci, limit_verdict
from servesweep.results.ladder_search import read_ladder_search
from servesweep.results.points import SweepPoint


def _ladder_note(out_dir: Path, config: str) -> str | None:
    search = read_ladder_search(out_dir / "configs" / config)
    return search.note() if search is not None else None


def recommendation_uncertainty(out_dir: Path, point: SweepPoint | None, slo: Mapping[str, Any] | None,
                               config: str, level: str) -> dict[str, Any]:
    """How sure the recommended point's figures are: its output tok/s and each SLO metric's
    interval over repeats, with an SLO verdict per metric that is "uncertain" when the interval
    straddles the limit; and without repeats, that there is no interval. `note` is one line for
    the console and the report."""
    ci95 = point.figures.ci95 if point is not None else None
    ci = (ci95 or {}).get(level) or {}
    limits = dict(slo or {})
    percentile = limits.pop("percentile", 99)
    ladder = _ladder_note(out_dir, config)
    out: dict[str, Any] = {"method": None, "repeats": 0, "output_tok_s": None, "slo": {}, "ladder": ladder}
    tput = ci.get("output_tok_s")
    if tput is None or tput.low is None:
        parts = ["one measurement window, no interval: run with --repeats 3 (scenario `repeats: 3`) "
                 "to know whether a difference of a few percent is real"]
    else:
        out.update(method=tput.method, repeats=tput.n, output_tok_s=tput.to_file())
        parts = [f"output {fmt_ci(tput)} tok/s (95 % interval over {tput.n} repeats)"]
        for metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
            limit = limits.get(metric)
            m = ci.get(f"{metric}.p{percentile}")
            if limit is None or m is None or m.low is None:
                continue
            verdict = limit_verdict(m.low, m.high, limit)
            out["slo"][metric] = {"limit": limit, "percentile": percentile, "mean": m.mean, "low": m.low,
                                  "high": m.high, "verdict": verdict}
            parts.append(f"{metric[:-3].upper()} p{percentile} {m.low:,.0f}-{m.high:,.0f} ms vs {limit:g}: "
                         f"{verdict}")
        if any(v["verdict"] == "uncertain" for v in out["slo"].values()):
            parts.append("an SLO verdict whose interval straddles its limit: more repeats or a longer window decide it")
    out["note"] = "; ".join(parts + ([f"ladder: {ladder}"] if ladder else []))
    return out
