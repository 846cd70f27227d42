"""`servesweep report DIR`: points.csv, recommendation.json, report.md and a self-contained report.html."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson
import pandas as pd

from servesweep.loadgen.records import ERROR_TRUNCATED
from servesweep.analysis.selection import GIB, PRECISION_ORDER
from servesweep.reports.config_search_section import config_search_section
from servesweep.reports.energy import ENERGY_HEADER, energy_lines, energy_rows
from servesweep.reports.headroom import headroom_figure, headroom_lines
from servesweep.analysis.recommend import analyse, report_inputs, store_report_inputs
from servesweep.reports.repeats import REPEATS_HEADER, repeats_section
from servesweep.analysis.skus import METRICS, RULES_FILE_CITED
from servesweep.results import RECOMMENDATION_FILE, SweepPoint, read_points, write_recommendation
from servesweep.results.ladder_search import read_ladder_searches
from servesweep.results.recommendation import GateEntry, Knee, ModelSource, Recommendation


def _verdict_text(metric: str, status: str | None, passed: bool | None, value: float | None,
                  ref: float | None) -> str:
    if status in (None, "error") or value is None:
        return "not measured"
    verdict = "pass" if passed else "FAIL"
    if metric == "perplexity":
        return f"{verdict}: ppl {value:.3f} ({value / ref - 1:+.2%})" if ref else f"{verdict}: ppl {value:.3f}"
    if metric == "exact_match":
        return f"{verdict}: {value:.1%} exact ({(value - ref) * 100:+.1f} pts)" if ref is not None else verdict
    return f"{verdict}: {value:.1%} of tokens agree"


def _measured_under_load(gate: GateEntry) -> bool:
    return "status_under_load" in gate.model_fields_set


def gate_cell(gate: GateEntry | None) -> str:
    """The gate's verdict and number in a few words, for the precision table (both verdicts when
    the gate was also measured under load)."""
    if gate is None:
        return "-"
    text = _verdict_text(gate.metric or "?", gate.status, gate.passed, gate.value, gate.reference_value)
    if not _measured_under_load(gate):
        return text
    return f"{text}; under load {_under_load_cell(gate)}"


def _under_load_cell(gate: GateEntry) -> str:
    return _verdict_text(gate.metric or "?", gate.status_under_load, gate.passed_under_load, gate.value_under_load,
                         gate.reference_value_under_load)


def _load_cell(gate: GateEntry) -> str:
    """The load the gate was measured under and what it did meanwhile."""
    load = gate.load_under_load
    if not load:
        return "-"
    words = [f"{load['label']} ({load['source']})"]
    if load.get("in_flight_mean") is not None:
        words.append(f"{load['in_flight_mean']:.1f} in flight")
    if load.get("gate_start_s") is not None:
        words.append(f"{load.get('completed_during', 0)} completed"
                     + (f", {load['failed_during']} failed" if load.get("failed_during") else ""))
    if load.get("output_tok_s_during") is not None:
        words.append(f"{load['output_tok_s_during']:,.0f} output tok/s")
    if load.get("running_batch_mean") is not None:
        words.append(f"running batch {load['running_batch_mean']:.1f}")
    return ", ".join(words)


def _gate_rows(result: Recommendation) -> list[list[str]]:
    rows = []
    for g in result.accuracy_gate or []:
        row = [str(Path(g.file or g.file_under_load or "?").parent.name), g.precision or "?",
               _verdict_text(g.metric or "?", g.status, g.passed, g.value, g.reference_value)]
        if _measured_under_load(g):
            row += [_under_load_cell(g), _load_cell(g)]
        rows.append(row)
    return rows


def _gate_header(result: Recommendation) -> list[str]:
    under = any(_measured_under_load(g) for g in result.accuracy_gate or [])
    return ["config", "precision", "unloaded"] + (["under load", "load during the measurement"] if under else [])


def _gate_lines(result: Recommendation) -> list[str]:
    gates = result.accuracy_gate or []
    if not gates:
        return ["No accuracy gate in this sweep (add `accuracy_gate: SPEC.yaml` to the scenario)."]
    g = gates[0]
    m = g.method or {}
    lines = [f"Metric: {g.metric}; threshold: {g.threshold}; eval set {Path(m['eval_set']).name} "
             f"(sha256 {m['eval_set_sha256'][:12]}...), {m.get('samples') or 'all'} samples, "
             f"reference precision {m['reference_precision']}, seed {m['seed']}."]
    if any(_measured_under_load(g) for g in gates):
        lines.append("Under load: the metric measured again while the configuration's recommended load ran "
                     "against the same server, judged against the reference precision's unloaded value; "
                     "a precision that fails either verdict is excluded from the recommendation.")
    lines += [f"{g.precision or '?'} ({g.file}): {g.message}" for g in gates if g.file]
    lines += [f"{g.precision or '?'} ({g.file_under_load}): {g.message_under_load}" for g in gates if g.file_under_load]
    for precision, reason in result.combined_sweep.accuracy_gate_exclusions.items():
        lines.append(f"{precision} excluded from the recommendation: {reason}")
    return lines


def _drift_example_line(result: Recommendation) -> str | None:
    """A position where the logprob vectors nearly coincide but the greedy tokens differ, if any."""
    for p, d in result.drift.items():
        ex = d.high_cosine_divergence_example
        if ex:
            def top_two(top: dict[str, float]) -> str:
                best = sorted(top.items(), key=lambda kv: -kv[1])[:2]
                return ", ".join(f"{tok!r} p={math.exp(lp):.4f}" for tok, lp in best)

            return (f"High cosine, different token: {p} vs {d.reference}, prompt {ex['prompt_index']} position "
                    f"{ex['position']}: cosine {ex['cosine']:.6f}, yet {d.reference} chose "
                    f"{ex['reference_token']!r} ({top_two(ex['reference_top'])}) and {p} chose {ex['token']!r} "
                    f"({top_two(ex['top'])}): a near-tie that rounding tipped over.")
    return None


# --- plots ---------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plots(df: pd.DataFrame, result: Recommendation, out_dir: Path) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[(df.status == "ok") & df.batch.notna()]
    precisions = [p for p in PRECISION_ORDER if p in set(ok.precision)]
    plots = {"throughput_vs_batch": _fig_png(_throughput_figure(plt, df, result, precisions))}
    rec = result.production_recommendation
    if rec is not None and rec.headroom is not None and rec.headroom.steps:
        plots["headroom"] = _fig_png(headroom_figure(rec.headroom, plt))
    plots["latency_vs_load"] = _fig_png(_latency_figure(plt, ok, precisions))
    plots["kv_usage_over_time"] = _fig_png(_kv_usage_figure(plt, df, out_dir))
    plots["memory_vs_batch"] = _fig_png(_memory_figure(plt, ok, precisions))
    plots["goodput"] = _fig_png(_goodput_figure(plt, ok))
    return plots


def _throughput_figure(plt: Any, df: pd.DataFrame, result: Recommendation, precisions: list[str]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4))
    for p in precisions:
        knee = result.batch_sweep.by_precision.get(p, Knee())
        pts = pd.DataFrame(knee.points)
        if pts.empty:
            continue
        line, = ax.plot(pts.batch, pts.output_token_throughput, marker="o", label=p)
        k = knee.knee_batch_size
        if k is not None:
            y = pts[pts.batch == k].output_token_throughput
            if len(y):
                ax.scatter([k], [y.iloc[0]], s=180, facecolors="none", edgecolors=line.get_color(), linewidths=2)
                ax.annotate(f"knee {k}", (k, y.iloc[0]), textcoords="offset points", xytext=(6, -14), fontsize=8)
    failed = df[df.status == "failed"]
    for _, row in failed.iterrows():
        if pd.notna(row.batch):
            ax.axvline(row.batch, color="red", alpha=0.3, linestyle=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (min of concurrency, max batch size)")
    ax.set_ylabel("output tokens / s")
    ax.set_title("Throughput vs batch (circle: knee; red dotted: failed points)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _latency_figure(plt: Any, ok: pd.DataFrame, precisions: list[str]) -> Any:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for p in precisions:
        rows = ok[ok.precision == p].sort_values("batch")
        for ax, metric in zip(axes, ("ttft", "tpot")):
            ax.plot(rows.batch, rows[f"{metric}_p50_ms"], marker="o", label=f"{p} p50")
            ax.plot(rows.batch, rows[f"{metric}_p99_ms"], marker="x", linestyle="--", label=f"{p} p99")
    for ax, metric in zip(axes, ("TTFT", "TPOT")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"{metric} (ms)")
        ax.set_title(f"{metric} percentiles vs load")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # nothing to label when a section has no data
            ax.legend(fontsize=7)
    return fig


def _kv_usage_figure(plt: Any, df: pd.DataFrame, out_dir: Path) -> Any:
    fig, ax = plt.subplots(figsize=(9, 4))
    for config in df.config.unique():
        times, usage, offset = [], [], 0.0
        for level_dir in sorted((out_dir / "configs" / config).glob("*/telemetry.jsonl"),
                                key=lambda p: p.stat().st_mtime):
            samples = [orjson.loads(line) for line in level_dir.read_bytes().splitlines() if line.strip()]
            samples = [s for s in samples if "kv_usage" in s]
            if not samples:
                continue
            times += [offset + s["t"] for s in samples]
            usage += [s["kv_usage"] * 100 for s in samples]
            offset = times[-1] + 1.0
        if times:
            ax.plot(times, usage, label=config, linewidth=1)
    ax.set_xlabel("seconds of load (levels back to back)")
    ax.set_ylabel("KV-cache usage (%)")
    ax.set_title("KV-cache usage over time, per configuration")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing to label when a section has no data
        ax.legend(fontsize=7)
    return fig


def _memory_figure(plt: Any, ok: pd.DataFrame, precisions: list[str]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4))
    for p in precisions:
        rows = ok[ok.precision == p].sort_values("batch")
        ax.plot(rows.batch, rows.kv_cache_peak_bytes / GIB, marker="o", label=f"{p} KV peak")
        if rows.device_mem_peak_bytes.notna().any():
            ax.plot(rows.batch, rows.device_mem_peak_bytes / GIB, marker="s", linestyle="--", label=f"{p} device peak")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("GiB")
    ax.set_title("KV-cache peak and device memory vs batch")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing to label when a section has no data
        ax.legend(fontsize=7)
    return fig


def _goodput_figure(plt: Any, ok: pd.DataFrame) -> Any:
    fig, ax = plt.subplots(figsize=(9, 4))
    labels = [f"{r.config}\n{r.level}" for r in ok.itertuples()]
    colors = ["tab:green" if m else "tab:gray" for m in ok.meets_slo]
    ax.bar(range(len(ok)), ok.goodput, color=colors)
    ax.set_xticks(range(len(ok)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("goodput (req/s meeting SLOs)")
    ax.set_title("Goodput per configuration and load (green: meets SLOs)")
    ax.grid(alpha=0.3, axis="y")
    return fig


# --- documents ----------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _truncation_lines(points: list[SweepPoint]) -> list[str]:
    """The points whose server cut answers short (servesweep.loadgen.exchange: error 'truncated'):
    those answers are failures, out of throughput and goodput, and the point's numbers are not
    what the server does with the work asked."""
    lines = []
    for p in points:
        summary = p.figures
        n = (summary.errors or {}).get(ERROR_TRUNCATED, 0)
        if n:
            finished = summary.completed + summary.failed
            lines.append(f"{p.config} {p.level}: {n} of {finished} responses TRUNCATED by the server "
                         f"(fewer tokens than asked while EOS was ignored, or an unexpected finish reason): "
                         f"{(summary.error_examples or {}).get(ERROR_TRUNCATED, '')}")
    return lines


def _table_frame(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["config", "level", "status", "precision", "batch", "running_batch_mean", "output_token_throughput",
            "request_throughput", "goodput", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms",
            "kv_cache_peak_frac", "oom_margin_pct", "preemptions", "j_per_output_token", "meets_slo", "cause"]
    return df[[c for c in cols if c in df.columns]]


def _summary_lines(result: Recommendation) -> list[str]:
    lines = [f"Measured on: **{result.measured_on}**."]
    b = result.batch_sweep
    knee = b.by_precision.get(b.knee_precision) if b.knee_precision is not None else None
    reached = knee.knee_reached if knee is not None else None
    note = "" if reached else "; not reached: throughput still grows at the largest batch sampled, sweep larger batches"
    lines.append(f"Knee of throughput vs batch ({b.knee_precision}): **batch {b.knee_batch_size}** "
                 f"({b.definition}{note}).")
    comb = result.combined_sweep
    if comb.best_config:
        best = comb.best_config
        lines.append(f"Best config within SLOs and budget: **{best['config']} at {best['level']}**, goodput "
                     f"{_fmt(best['goodput'], 2)} req/s, {_fmt(best['output_token_throughput'], 0)} output tok/s.")
    for precision, reason in comb.accuracy_gate_exclusions.items():
        lines.append(f"Excluded by the accuracy gate: **{precision}**, {reason}.")
    if comb.speedup_vs_baseline:
        sp = comb.speedup_vs_baseline
        lines.append(f"Speed-up over the fp32 batch-1 baseline: **{_fmt(sp['goodput'], 2)}x goodput**, "
                     f"{_fmt(sp['output_token_throughput'], 2)}x output throughput.")
    rec = result.production_recommendation
    if rec is None:
        why = result.no_recommendation
        lines.append(f"**NO RECOMMENDATION: {why.reason if why else 'no point met the SLOs within the budget'}.** "
                     + " ".join(f"{d}." for d in (why.detail if why else [])))
    else:
        lines.append(f"Recommendation: {rec.precision}, {rec.knob_names()['max_batch_size']} {rec.max_batch_size}, "
                     f"concurrency {rec.concurrency}; OOM margin {_fmt(rec.oom_margin_pct)} % ({rec.direction}: "
                     f"{rec.advice}).")
        if (rec.uncertainty or {}).get("note"):
            lines.append(f"Uncertainty: {rec.uncertainty['note']}.")
        if rec.energy:
            lines.append(f"Energy at the recommended point: {rec.energy['j_per_output_token']:.3f} J per output token "
                         f"({rec.energy['kwh_per_1m_output_tokens']:.3f} kWh per 1M) at "
                         f"{rec.energy['gpu_power_w']:,.0f} W mean GPU power (NVML).")
    return lines


def _precision_rows(result: Recommendation) -> list[list[str]]:
    rows = []
    for p, info in result.precision_sweep.items():
        gate = next((g for g in result.accuracy_gate or [] if g.precision == p), None)
        rows.append([p, _fmt(info.batch), _fmt(info.throughput, 0), _fmt(info.speedup_vs_fp32, 2),
                     _fmt(info.token_agreement, 3), _fmt(info.logprob_cosine, 4),
                     gate_cell(gate)])
    return rows


def _model_lines(result: Recommendation) -> list[str]:
    tput, quality = result.models.get("throughput"), result.models.get("quality") or ModelSource()
    if tput is None:
        return []
    lines = [f"Throughput columns: {tput.model}, {tput.weights}."]
    same = quality.results == tput.results
    lines.append(f"Drift and accuracy-gate columns: {'the same sweep' if same else quality.results}, "
                 f"{quality.model}, {quality.weights}"
                 + (": they measure numerics of random weights, not the quality of a real model." if quality.dummy
                    else "."))
    return lines


PRECISION_HEADER = ["precision", "batch", "output tok/s", "vs fp32", "token agreement", "logprob cosine", "accuracy gate"]


def _figure_cell(f: dict[str, Any] | None) -> str:
    """A figure of the SKU table: its value and, when projected, the rule that gave it."""
    if not f or f.get("value") is None:
        return "-"
    digits = 0 if f["unit"] in ("tok/s", "tokens") else 1
    return _fmt(float(f["value"]), digits) + (f" ({f['rule_id']})" if f["basis"] == "projected" else " (measured)")


def _gate_table_md(result: Recommendation) -> list[str]:
    rows = _gate_rows(result)
    return [_md_table(_gate_header(result), rows), ""] if rows else []


def _sku_difference_lines(result: Recommendation) -> list[str]:
    return [f"Not the same scenario: {where} differs in {', '.join(keys)}; its measured figures are not "
            "directly comparable with this sweep's." for where, keys in
            (result.sku_table_scenario_differences or {}).items()]


def _sku_rows(result: Recommendation) -> list[list[str]]:
    rows = []
    for name, e in result.sku_to_preferred_precision.items():
        figs = (e.get("figures") or {}).get(e.get("precision")) or {}
        rows.append([name, e.get("precision") or "-", e["basis"], *[_figure_cell(figs.get(m)) for m in METRICS],
                     e["reason"]])
    return rows


SKU_HEADER = ["SKU", "preferred", "basis", *[METRICS[m][1] for m in METRICS], "reason"]
SKU_NOTE = ("`measured`: from a sweep on that GPU (this one's, or one given with --measured). `projected`: the "
            "measured SKU's figure times a datasheet ratio; the rule id in brackets is defined in "
            f"recommendation.json (`figures.*.rule`) and {RULES_FILE_CITED}. Without a measured GPU: datasheet FP8 "
            "support alone, no figures.")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(out)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _search_rows(out_dir: Path) -> list[list[str]]:
    """One row per configuration whose load levels the adaptive search chose."""
    rows = []
    for config, search in read_ladder_searches(out_dir):
        rungs = ", ".join(f"{_fmt(r.level(search.kind), 4)} ({r.reason})" for r in search.rungs)
        rows.append([config, str(search.stop_reason), _fmt(search.recommended, 4), rungs])
    return rows


SEARCH_HEADER = ["config", "stop reason", "recommended", "rungs (why each ran)"]


def _engine_rows(df: pd.DataFrame) -> list[list[str]]:
    """Output tok/s per engine at each precision and batch, when the sweep ran more than one."""
    ok = df[df.status == "ok"]
    if "kind" not in ok or ok.kind.nunique() < 2:
        return []
    kinds = sorted(ok.kind.unique())
    rows = []
    for (precision, batch), group in ok.groupby(["precision", "batch"], sort=True):
        best = group.groupby("kind").output_token_throughput.max()
        rows.append([precision, _fmt(batch, 0)] + [_fmt(best.get(k), 0) for k in kinds])
    return [["precision", "batch"] + [f"{k} output tok/s" for k in kinds]] + rows


def _verification_lines(result: Recommendation) -> list[str]:
    rec = result.production_recommendation
    v = rec.verification if rec is not None else None
    if v is None or not v.attempts:
        skipped = (v.skipped if v is not None else None) or "no verification run"
        return [f"Not verified: {skipped}. The recommendation says verified: false."]
    lines = [f"Verified: **{'passed' if v.passed else 'FAILED'}** after {len(v.attempts)} attempt(s)."]
    for i, a in enumerate(v.attempts, 1):
        sz, t, st = a.sizing, a.traffic, a.stress
        lines.append(f"Attempt {i}: KV budget {sz.kv_cache_memory_bytes / 2**20:.1f} MiB, max batch "
                     f"{sz.max_num_seqs} ({sz.change}); traffic margin {_fmt(t.oom_margin_pct)} %, "
                     f"stress margin {_fmt(st.oom_margin_pct)} %, preemptions {t.preemptions}/"
                     f"{st.preemptions}, failed {t.failed}/{st.failed}: "
                     + ("passed" if a.passed else "; ".join(a.reasons)))
        slo = next((c.detail for c in a.checks if c.run == "traffic" and c.check == "slo"), None)
        if slo:
            lines.append(f"Attempt {i} traffic run SLO (judged): {slo}.")
        lines.append(f"Attempt {i} stress run latency (information, not judged: every request at p99 lengths in "
                     f"bursts): TTFT p{st.percentile} {_fmt(st.ttft_ms)} ms, TPOT "
                     f"p{st.percentile} {_fmt(st.tpot_ms)} ms.")
    if v.command:
        lines.append("Server command: `" + " ".join(map(str, v.command)) + "`")
    return lines


def _energy_section(df: pd.DataFrame, result: Recommendation) -> tuple[list[str], str]:
    """Joules per output token per configuration and precision (reports/energy.py)."""
    rec = result.production_recommendation
    rows = energy_rows(df, (rec.based_on.config, rec.based_on.level) if rec else None)
    lines = energy_lines(rows, result.measured_on)
    md = ["## Energy per output token", "", *([_md_table(ENERGY_HEADER, rows), ""] if rows else []),
          *[f"- {line}" for line in lines], ""]
    page = (f"<h2>Energy per output token</h2>{_html_table(ENERGY_HEADER, rows) if rows else ''}"
            + "".join(f"<p>{html.escape(line)}</p>" for line in lines))
    return md, page


def _capacity_section(out_dir: Path) -> tuple[list[str], str, bytes | None]:
    """The capacity plan (written by `servesweep capacity`) as Markdown, HTML and one plot."""
    path = out_dir / "capacity.json"
    if not path.exists():
        return [], "", None
    from servesweep.reports.capacity import CAPACITY_HEADER, CapacityReport, capacity_lines, capacity_rows, render_markdown

    plan = CapacityReport.model_validate_json(path.read_text())
    md = render_markdown(plan)
    rows = [r for r in plan.skus if r.status == "ok"]
    png = None
    if rows:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(8, 3.5))
        names = [f"{r.sku}\n({r.basis})" for r in rows]
        ax.bar(names, [r.gpus_at_peak for r in rows], color=["#2a7" if r.basis == "measured" else "#aaa" for r in rows])
        ax.set_ylabel(f"GPUs at {plan.peak_rps:g} req/s")
        cost = [r.usd_per_1m_output_tokens for r in rows]
        if any(c is not None for c in cost):
            ax2 = ax.twinx()
            ax2.plot(names, [c if c is not None else float("nan") for c in cost], "o", color="#c33")
            ax2.set_ylabel("$ per 1M output tokens (user prices)")
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title("replicas per SKU (grey: projected)")
        png = _fig_png(fig)
    notes = [f"{r.sku}: {r.note}" for r in plan.skus if r.note]
    page = ("<h2>Capacity</h2>" + "".join(f"<p>{html.escape(line.replace('`', ''))}</p>" for line in capacity_lines(plan))
            + _html_table(CAPACITY_HEADER, capacity_rows(plan))
            + (f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else "")
            + ("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>" if notes else ""))
    return ["## Capacity", "", md, "", "![](plots/capacity.png)" if png else "", ""], page, png


def write_report(out_dir: Path, quality_dir: Path | None = None, measured_elsewhere: Sequence[Path] = (),
                 analysis: tuple[pd.DataFrame, Recommendation] | None = None) -> dict[str, Path]:
    """The report of `out_dir`; `analysis`: the command's own (analysis.recommend.analyse), else
    it is analysed here."""
    if quality_dir is not None or measured_elsewhere:
        quality_dir, measured_elsewhere = report_inputs(out_dir, quality_dir, measured_elsewhere)
    df, result = analysis or analyse(out_dir, quality_dir, measured_elsewhere)
    if quality_dir is not None or measured_elsewhere:
        store_report_inputs(out_dir, quality_dir, measured_elsewhere)
    paths = {"csv": out_dir / "points.csv", "json": out_dir / RECOMMENDATION_FILE,
             "md": out_dir / "report.md", "html": out_dir / "report.html"}
    df.to_csv(paths["csv"], index=False)
    write_recommendation(paths["json"], result)
    plots = _plots(df, result, out_dir)
    capacity_md, capacity_html, capacity_png = _capacity_section(out_dir)
    if capacity_png:
        plots["capacity"] = capacity_png
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    for name, png in plots.items():
        (plot_dir / f"{name}.png").write_bytes(png)

    extra_md, extra_html = _sections(out_dir, df, result, plots)
    paths["md"].write_text(_markdown(df, result, extra_md + capacity_md))
    paths["html"].write_text(boxed_tables(_html_page(df, result, plots, extra_html, capacity_html)))
    return paths


def _sections(out_dir: Path, df: pd.DataFrame, result: Recommendation,
              plots: dict[str, bytes]) -> tuple[list[str], str]:
    """The report's sections between the plots and the recommendation, as Markdown lines and HTML."""
    search = _search_rows(out_dir)
    engines = _engine_rows(df)
    verification = _verification_lines(result)
    headroom = headroom_lines(result.production_recommendation)
    extra_md, extra_html = config_search_section(out_dir)
    if search:
        extra_md += ["## Load search", "", _md_table(SEARCH_HEADER, search), ""]
        extra_html += f"<h2>Load search</h2>{_html_table(SEARCH_HEADER, search)}"
    repeats_md, repeats, uncertainty = repeats_section(out_dir, read_points(out_dir))
    if repeats:
        extra_md += [*repeats_md, _md_table(REPEATS_HEADER, repeats), "", *[f"- {line}" for line in uncertainty], ""]
        extra_html += (f"<h2>Repeats and 95 % intervals</h2>{_html_table(REPEATS_HEADER, repeats)}"
                       + "".join(f"<p>{html.escape(line)}</p>" for line in uncertainty))
    extra_md_energy, extra_html_energy = _energy_section(df, result)
    extra_md += extra_md_energy
    extra_html += extra_html_energy
    if engines:
        extra_md += ["## Engines", "", _md_table(engines[0], engines[1:]), ""]
        extra_html += f"<h2>Engines</h2>{_html_table(engines[0], engines[1:])}"
    truncated = _truncation_lines(read_points(out_dir))
    if truncated:
        extra_md += ["## Truncated responses", "", *[f"- {line}" for line in truncated], ""]
        extra_html += "<h2>Truncated responses</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>"
                                                                   for line in truncated) + "</ul>"
    extra_md += ["## Verification", "", *[f"- {line}" for line in verification], ""]
    extra_md += ["## Headroom", "", *[f"- {line}" for line in headroom], "",
                 *(["![](plots/headroom.png)", ""] if "headroom" in plots else [])]
    extra_html += ("<h2>Verification</h2><ul>" + "".join(f"<li>{html.escape(line).replace('**', '')}</li>"
                                                         for line in verification) + "</ul>")
    extra_html += ("<h2>Headroom</h2><ul>" + "".join(f"<li>{html.escape(line).replace('`', '')}</li>"
                                                     for line in headroom) + "</ul>"
                   + (f'<img src="data:image/png;base64,{base64.b64encode(plots["headroom"]).decode()}">'
                      if "headroom" in plots else ""))
    return extra_md, extra_html


def _document_parts(df: pd.DataFrame, result: Recommendation) -> tuple[str, str, str, pd.DataFrame]:
    """(title, the recommendation as JSON, the drift example line, the every-point table): both documents'."""
    title = f"servesweep report: {result.scenario}"
    recommended = json.dumps(result.to_file().get("production_recommendation"), indent=2, default=str)
    drift_example = _drift_example_line(result) or ""
    table = _table_frame(df)
    return title, recommended, drift_example, table


def _markdown(df: pd.DataFrame, result: Recommendation, extra_md: list[str]) -> str:
    title, recommended, drift_example, table = _document_parts(df, result)
    md = [f"# {title}", "", *[f"- {line}" for line in _summary_lines(result)], "",
          "## Throughput vs batch", "", "![](plots/throughput_vs_batch.png)", "",
          "## Precision comparison", "", _md_table(PRECISION_HEADER, _precision_rows(result)), "",
          *[f"- {line}" for line in _model_lines(result)], "",
          "Token agreement and logprob cosine are drift sanity checks against the highest precision run, "
          f"not a quality gate. {drift_example}".rstrip(), "",
          "## Accuracy gate", "", *_gate_table_md(result), *[f"- {line}" for line in _gate_lines(result)], "",
          "## Latency vs load", "", "![](plots/latency_vs_load.png)", "",
          "## KV cache and memory", "", "![](plots/kv_usage_over_time.png)", "", "![](plots/memory_vs_batch.png)", "",
          "## Goodput", "", "![](plots/goodput.png)", "",
          *extra_md,
          "## Production recommendation", "", "```json",
          recommended, "```", "",
          "## Preferred precision per SKU", "", _md_table(SKU_HEADER, _sku_rows(result)), "",
          SKU_NOTE, "", *[f"- {line}" for line in _sku_difference_lines(result)], "",
          "## Every point", "", table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False), ""]
    return "\n".join(md)


def _html_page(df: pd.DataFrame, result: Recommendation, plots: dict[str, bytes], extra_html: str,
               capacity_html: str) -> str:
    title, recommended, drift_example, table = _document_parts(df, result)
    imgs = {k: base64.b64encode(v).decode() for k, v in plots.items()}
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
.scroll{{overflow-x:auto;max-width:100%}}.scroll table{{margin:.5em 0}}
@media (max-width:600px){{body{{margin:.5em auto;padding:0 .6em}}h1{{font-size:1.35em}}h2{{font-size:1.15em}}}}
table{{border-collapse:collapse;font-size:12px;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}
th{{background:#f0f0f0}}td:first-child{{text-align:left}}img{{max-width:100%;border:1px solid #eee;margin:.5em 0}}
pre{{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}}.summary li{{margin:.3em 0}}</style></head><body>
<h1>{html.escape(title)}</h1><ul class="summary">{''.join(f'<li>{html.escape(line).replace("**", "")}</li>' for line in _summary_lines(result))}</ul>
<h2>Throughput vs batch</h2><img src="data:image/png;base64,{imgs['throughput_vs_batch']}">
<h2>Precision comparison</h2>{_html_table(PRECISION_HEADER, _precision_rows(result))}
<ul>{''.join(f'<li>{html.escape(line)}</li>' for line in _model_lines(result))}</ul>
<p>Token agreement and logprob cosine are drift sanity checks against the highest-precision run, not a quality gate. {html.escape(drift_example)}</p>
<h2>Accuracy gate</h2>{_html_table(_gate_header(result), _gate_rows(result)) if _gate_rows(result) else ''}<ul>{''.join(f'<li>{html.escape(line)}</li>' for line in _gate_lines(result))}</ul>
<h2>Latency vs load</h2><img src="data:image/png;base64,{imgs['latency_vs_load']}">
<h2>KV cache and memory</h2><img src="data:image/png;base64,{imgs['kv_usage_over_time']}"><img src="data:image/png;base64,{imgs['memory_vs_batch']}">
<h2>Goodput</h2><img src="data:image/png;base64,{imgs['goodput']}">
{extra_html}
{capacity_html}
<h2>Production recommendation</h2><pre>{html.escape(recommended)}</pre>
<h2>Preferred precision per SKU</h2>{_html_table(SKU_HEADER, _sku_rows(result))}
<p>{html.escape(SKU_NOTE.replace('`', ''))}</p><ul>{''.join(f'<li>{html.escape(line)}</li>' for line in _sku_difference_lines(result))}</ul>
<h2>Every point</h2>{table.to_html(index=False, na_rep='-', float_format=lambda v: f'{v:,.2f}')}
</body></html>"""
    return page


def boxed_tables(page: str) -> str:
    """Every table in a box of its own that scrolls sideways, so a wide table (every point, the SKU
    table) never widens the page: on a phone the text stays at its size and the page at its width."""
    return re.sub(r"(<table\b.*?</table>)", r'<div class="scroll">\1</div>', page, flags=re.S)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
