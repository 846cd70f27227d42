"""bench/config_search.py's last phase: the grid's and the search's results directories compared,
written to bench/results/config_search.json and .md."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from servesweep.results.config_search_record import read_search_record
from servesweep.results import SweepPoint, read_points
from servesweep.results.ladder_search import read_ladder_search
from servesweep.sweep.config_search import measured_from_points


def _scenario(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "scenario.json").read_text())


def _foreign_load(runs: Path) -> list[tuple[dt.datetime, float]]:
    path = runs / "load.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(dt.datetime.fromisoformat(r["t"]), r["foreign_cpu_pct"]) for r in rows[1:]]


def _window(run_dir: Path, points: list[SweepPoint]) -> tuple[dt.datetime, dt.datetime] | None:
    times = []
    for p in points:
        path = run_dir / (p.dir or "-") / "summary.json"
        if path.exists():
            s = json.loads(path.read_text())
            if s.get("started_at") and s.get("ended_at"):
                times += [dt.datetime.fromisoformat(s["started_at"]), dt.datetime.fromisoformat(s["ended_at"])]
    if not times:
        return None
    return min(times), max(times)


def per_config(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each configuration's objective as the config search computes it, from a results directory."""
    scenario = _scenario(run_dir)
    slo = scenario.get("slo")
    from servesweep.loadgen.stats import SLO

    slo_obj = SLO(**{k: v for k, v in (slo or {}).items() if k != "percentile"}) if slo else None
    points = read_points(run_dir)
    out = {}
    for label in dict.fromkeys(p.config for p in points):
        mine = [p for p in points if p.config == label]
        ladder = read_ladder_search(run_dir / "configs" / label)
        m = measured_from_points(mine, slo_obj, (slo or {}).get("percentile", 99),
                                 scenario["load"]["ladder"]["kv_full_frac"], ladder)
        startup = next((p.server.startup_s for p in mine if p.server), None)
        window = _window(run_dir, mine)
        load = [v for t, v in _foreign_load(run_dir.parent) if window and window[0] <= t <= window[1]]
        out[label] = {**m.model_dump(), "rungs": [p.level for p in mine], "startup_s": startup,
                      "foreign_cpu_pct_mean": round(sum(load) / len(load)) if load else None}
    return out


def replay_on_grid(search_dir: Path, grid: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The search's choices had it been fed the grid's measurements instead of its own: no starts,
    the same code; where it differs from the live run, the difference is the run-to-run noise."""
    from servesweep.results.config_search_record import Measured
    from servesweep.scenarios.schema import load_scenario
    from servesweep.sweep.config_search_run import build_search

    scenario = load_scenario(search_dir / "scenario.yaml")
    configs = scenario.server_configs(json.loads((search_dir / "model.json").read_text())["path"])
    configs = [c.model_copy(update={"max_model_len": c.max_model_len or scenario.max_model_len}) for c in configs]
    search = build_search(scenario, configs)
    fields = set(Measured.model_fields)
    while (pick := search.next_config()) is not None and pick[0] in grid:
        search.record(pick[0], Measured(**{k: v for k, v in grid[pick[0]].items() if k in fields}))
    rec = search.record_model(0.0, scenario.vram_budget_gib)
    return {"starts": rec.starts, "best": rec.best.config if rec.best else None,
            "order": [st.config for st in rec.steps], "stop_reason": rec.stop_reason}


def assumption_checks(skipped: list[dict[str, Any]], grid: dict[str, dict[str, Any]], best: str | None,
                      floor: float) -> list[dict[str, Any]]:
    """Each configuration the search did not start, against what the grid measured for it: did the
    rule that ruled it out hold (its grid goodput not above the configuration the rule names, or
    the search's best, by more than the noise floor)?"""
    out = []
    for s in skipped:
        m = re.match(r"dominated by (\S+)", s["why"]) or re.match(r"(\S+) \(max_num_seqs", s["why"])
        by = m.group(1) if m and s["rule"] in ("dominated", "same_ladder") else best
        mine, theirs = grid.get(s["config"], {}).get("goodput"), grid.get(by, {}).get("goodput")
        holds = None if mine is None or theirs is None else mine <= theirs * (1 + floor)
        out.append({"config": s["config"], "rule": s["rule"], "against": by, "grid_goodput": mine,
                    "grid_goodput_against": theirs, "holds": holds})
    return out


def _foreign(configs: dict[str, dict[str, Any]]) -> float | None:
    vals = [c["foreign_cpu_pct_mean"] for c in configs.values() if c.get("foreign_cpu_pct_mean") is not None]
    return round(sum(vals) / len(vals)) if vals else None


def _relative(path: Path) -> str:
    """The runs' directory inside the repository, or its name alone: no machine path in a result file."""
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return path.name


def _phase(runs: Path, name: str) -> dict[str, Any]:
    path = runs / f"phase-{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def compare_round(runs: Path) -> dict[str, Any]:
    """One round: the grid and the search run one after the other, compared."""
    grid_dir, search_dir = runs / "grid", runs / "search"
    grid = per_config(grid_dir)
    record = read_search_record(search_dir)
    if record is None:
        raise SystemExit(f"{search_dir}/search.json missing: run the search phase first")
    search_measured = per_config(search_dir)
    ranked = sorted((c for c in grid if grid[c]["goodput"] is not None), key=lambda c: -grid[c]["goodput"])
    grid_best = ranked[0] if ranked else None
    floor = record.noise_floor
    search_best = record.best.config if record.best else None
    gb = grid[grid_best]["goodput"] if grid_best else None
    # The gap on the grid's own measurements (one source for both), against the noise floor.
    sb_in_grid = grid.get(search_best, {}).get("goodput") if search_best else None
    gap = (gb - sb_in_grid) if gb is not None and sb_in_grid is not None else None
    within = gap is not None and gap <= floor * gb
    spread = {c: (search_measured[c]["goodput"] - grid[c]["goodput"]) / grid[c]["goodput"]
              for c in search_measured if c in grid and grid[c]["goodput"] and search_measured[c]["goodput"]}
    scenario = _scenario(grid_dir)
    return {
        "runs": _relative(runs),
        "scenario": {"file": "bench/config_search.yaml", "sweep": scenario["sweep"], "load": scenario["load"],
                     "slo": scenario["slo"], "workload": scenario["workload"],
                     "max_model_len": scenario["max_model_len"]},
        "objective": record.objective,
        "noise_floor": floor,
        "grid": {"starts": len(grid), "best": grid_best, "best_goodput": gb,
                 "wall_s": _phase(runs, "grid").get("wall_s"),
                 "ranking": [[c, grid[c]["goodput"]] for c in ranked], "configs": grid},
        "search": {"starts": record.starts, "best": search_best,
                   "best_goodput": record.best.goodput if record.best else None,
                   "wall_s": _phase(runs, "search").get("wall_s"), "stop_reason": record.stop_reason,
                   "stop_detail": record.stop_detail, "no_best": record.no_best,
                   "steps": [s.model_dump() for s in record.steps],
                   "skipped": [s.model_dump() for s in record.skipped], "configs": search_measured},
        "search_replayed_on_grid_measurements": replay_on_grid(search_dir, grid),
        "assumption_checks": assumption_checks([s.model_dump() for s in record.skipped], grid, search_best, floor),
        "other_cpu_pct_mean": {"grid": _foreign(grid), "search": _foreign(search_measured),
                               "what": "mean CPU % used by processes outside the benchmark while levels ran "
                                       "(100 = one of the two cores), over the configurations sampled"},
        "same_best": search_best == grid_best,
        "gap": {"grid_goodput_of_grid_best": gb, "grid_goodput_of_search_best": sb_in_grid,
                "gap_req_s": gap, "gap_frac": gap / gb if gap is not None and gb else None,
                "noise_floor": floor, "within_noise": within},
        "starts_ratio": record.starts / len(grid) if grid else None,
        "run_to_run_spread": {"what": "(search's goodput - grid's) / grid's, for the configurations both ran",
                              "values": spread},
        "deterministic": "the search has no randomness: its choices replay from its measurements",
    }


def write_results(rounds: list[Path], results: Path, machine: dict[str, Any],
                  notes: list[str] | None = None) -> dict[str, Any]:
    """Round 1's figures at the top level; later rounds (the same benchmark run again) beside
    them, and each configuration's goodput in every grid run (how stable the grid's best is)."""
    first = compare_round(rounds[0])
    more = [compare_round(r) for r in rounds[1:]]
    keys = ("grid", "search", "same_best", "gap", "starts_ratio", "search_replayed_on_grid_measurements",
            "run_to_run_spread", "assumption_checks", "other_cpu_pct_mean")
    data = {"generated_at": dt.datetime.now(dt.timezone.utc).isoformat(), "machine": machine, **first,
            "repeat_rounds": [{k: r[k] for k in keys} for r in more], "notes": list(notes or [])}
    rounds_ = [first, *more]
    data["over_rounds"] = {
        "rounds": len(rounds_), "search_starts": [r["search"]["starts"] for r in rounds_],
        "grid_starts": [r["grid"]["starts"] for r in rounds_],
        "same_best": sum(r["same_best"] for r in rounds_),
        "within_noise": sum(not r["same_best"] and r["gap"]["within_noise"] for r in rounds_),
        "missed": sum(not r["same_best"] and not r["gap"]["within_noise"] for r in rounds_),
        "grid_wall_s": [r["grid"]["wall_s"] for r in rounds_], "search_wall_s": [r["search"]["wall_s"] for r in rounds_]}
    if more:
        data["grid_goodput_per_round"] = {c: [r["grid"]["configs"].get(c, {}).get("goodput") for r in [first, *more]]
                                          for c in first["grid"]["configs"]}
    results.mkdir(parents=True, exist_ok=True)
    (results / "config_search.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (results / "config_search.md").write_text(render_md(data))
    print((results / "config_search.md").read_text())
    return data


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _verdict(r: dict[str, Any], floor: float) -> str:
    gap = r["gap"]
    if r["same_best"]:
        return "the search found the grid's best configuration"
    frac = f"{100 * (gap['gap_frac'] or 0):.1f} %"
    if gap["within_noise"]:
        return (f"the search's best is within the noise of the grid's best (gap {_g(gap['gap_req_s'])} req/s, "
                f"{frac} <= the {100 * floor:.0f} % floor)")
    return f"the search MISSED the grid's best beyond the noise (gap {_g(gap['gap_req_s'])} req/s, {frac})"


def _within(r: dict[str, Any]) -> str:
    return "" if r["same_best"] else " (within noise)" if r["gap"]["within_noise"] else " (missed)"


def _round_lines(r: dict[str, Any], floor: float) -> list[str]:
    g, s, gap = r["grid"], r["search"], r["gap"]
    spread = r["run_to_run_spread"]["values"]
    replay = r["search_replayed_on_grid_measurements"]
    live_order = [x["config"] for x in s["steps"]]
    third = s["starts"] * 3 <= g["starts"]
    checks = r["assumption_checks"]
    return [
        f"- same_best: **{r['same_best']}**; {_verdict(r, floor)}. On the grid's own measurements the search's "
        f"best reads {_g(gap['grid_goodput_of_search_best'])} req/s against the grid best's "
        f"{_g(gap['grid_goodput_of_grid_best'])}.",
        f"- Starts: {s['starts']} of {g['starts']} ({100 * r['starts_ratio']:.0f} %): "
        + ("within the goal of a third." if third else "MORE than the goal of a third."),
        f"- Search stopped: {s['stop_reason']} ({s['stop_detail']})."
        + (f" NO BEST: {s['no_best']}" if s.get("no_best") else ""),
        "- Run-to-run spread of the objective (the configurations both runs measured, search vs grid): "
        + (", ".join(f"{c}: {100 * v:+.1f} %" for c, v in spread.items()) or "none")
        + f"; the noise floor used was {100 * floor:.0f} %"
        + (", narrower than a spread measured here." if spread and max(abs(v) for v in spread.values()) > floor
           else "."),
        f"- Other work on the machine (CPU % outside the benchmark, 100 = one core): mean "
        f"{_g(r['other_cpu_pct_mean']['grid'])} % while the grid's levels ran, {_g(r['other_cpu_pct_mean']['search'])} % "
        "while the search's did ('-': not sampled).",
        "- The rules that kept configurations from starting, checked against the grid's measurement of them "
        f"(held = not above the configuration the rule names by more than {100 * floor:.0f} %): "
        f"{sum(c['holds'] is True for c in checks)} held, {sum(c['holds'] is False for c in checks)} did not"
        + (" (" + "; ".join(f"{c['config']} {_g(c['grid_goodput'])} vs {c['against']} {_g(c['grid_goodput_against'])}"
                            for c in checks if c["holds"] is False) + ")" if any(c["holds"] is False for c in checks)
           else "") + ".",
        f"- Fed the grid's measurements instead of its own (no starts), the same code starts {replay['starts']} "
        f"({', '.join(replay['order'])}) and picks {replay['best']}"
        + (": the same choices as the live run." if replay["order"] == live_order else
           ": the live run chose differently on its own measurements (run-to-run noise)."),
    ]


def _describe_scenario(sc: dict[str, Any], size: int) -> str:
    """The grid's axes and the load, from the scenario as the sweep stored it."""
    axes = {k: v for k, v in sc["sweep"].items() if isinstance(v, list) and len(v) > 1}
    fixed = {k: v[0] for k, v in sc["sweep"].items() if isinstance(v, list) and len(v) == 1 and v[0] is not None}
    ladder, slo = sc["load"]["ladder"], sc["slo"]
    return (" x ".join(f"{k} {{{', '.join(map(str, v))}}}" for k, v in axes.items()) + f" = {size} configurations"
            + "".join(f", {k} {v}" for k, v in fixed.items())
            + f"; a concurrency ladder per configuration, ceiling {ladder['max_concurrency']}, "
            f"{ladder['bisect_steps']} bisection step(s), {sc['load']['num_requests']} requests a rung, one window each; "
            f"SLO TTFT p{slo['percentile']} {slo['ttft_ms']:g} ms, TPOT p{slo['percentile']} {slo['tpot_ms']:g} ms")


def render_md(d: dict[str, Any]) -> str:
    g, s = d["grid"], d["search"]
    floor = d["noise_floor"]
    rounds = [d, *d.get("repeat_rounds", [])]
    skipped = {x["config"]: x["rule"] for x in s["skipped"]}
    started = {x["config"]: x["n"] for x in s["steps"]}
    lines = [
        "# Config search vs the full grid (CPU vLLM)",
        "",
        f"Generated {d['generated_at'][:16]} UTC by `bench/config_search.py` (run under "
        "`flock /tmp/servesweep-heavy.lock`). "
        f"Machine: {d['machine']['cpu_cores']}-core CPU, no GPU, shared with other work; server "
        f"{d['machine']['server']}; model: {d['machine']['model']}. Scenario: `{d['scenario']['file']}` "
        f"({_describe_scenario(d['scenario'], g['starts'])}; noise floor {100 * floor:.0f} %). Rules fixed before the "
        "runs: `bench/config_search_preregistration.md`. Each round: the whole grid, then the search "
        "live (its own server starts). " + d["deterministic"].capitalize()
        + ("; it was run in more than one round because its inputs are noisy." if len(rounds) > 1 else "."),
        "",
        "| round | grid starts | grid best (goodput req/s) | grid wall | search starts | search best (goodput req/s, "
        "its own run) | search wall | same_best |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, r in enumerate(rounds, 1):
        rg, rs = r["grid"], r["search"]
        lines.append(f"| {n} | {rg['starts']} | {rg['best']} ({_g(rg['best_goodput'])}) | {_g(rg['wall_s'])} s | "
                     f"{rs['starts']} | {rs['best']} ({_g(rs['best_goodput'])}) | {_g(rs['wall_s'])} s | "
                     f"{r['same_best']}{_within(r)} |")
    same = sum(r["same_best"] for r in rounds)
    near = sum(not r["same_best"] and r["gap"]["within_noise"] for r in rounds)
    starts = sorted({r["search"]["starts"] for r in rounds})
    grid_bests = sorted({r["grid"]["best"] for r in rounds})
    lines += ["", f"Over {len(rounds)} round(s): the search started {' or '.join(map(str, starts))} of "
              f"{g['starts']} configurations; it picked the grid's best in {same}, one within the noise of it in "
              f"{near}, and missed it beyond the noise in {len(rounds) - same - near}. The grid's own best: "
              f"{', '.join(grid_bests)}."]
    for n, r in enumerate(rounds, 1):
        lines += ["", f"Round {n}:", "", *_round_lines(r, floor)]
    if d.get("notes"):
        lines += ["", "Notes:", "", *[f"- {n}" for n in d["notes"]]]
    if d.get("grid_goodput_per_round"):
        lines += ["", f"## The grid measured {len(rounds)} times (how stable the objective is)", "",
                  "| config | " + " | ".join(f"round {n} goodput" for n in range(1, len(rounds) + 1)) + " | spread |",
                  "|---|" + "---|" * len(rounds) + "---|"]
        for c, vals in d["grid_goodput_per_round"].items():
            ok = [v for v in vals if v]
            spread = f"{100 * (max(ok) - min(ok)) / max(ok):.0f} %" if len(ok) > 1 else "-"
            lines.append(f"| {c} | " + " | ".join(_g(v) for v in vals) + f" | {spread} |")
    lines += [
        "",
        "## Every configuration (round 1)",
        "",
        "Other CPU % = the mean CPU that processes outside the benchmark (other work on this shared machine) used "
        "while the configuration's levels ran (100 % = one of the two cores); '-' = not sampled.",
        "",
        "| config | grid goodput (req/s) at | ladder stop | output tok/s | server start s | other CPU % | search |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, m in g["configs"].items():
        where = f"started #{started[c]}" if c in started else f"not started ({skipped.get(c, '?')})"
        tok = "-" if m["output_tok_s"] is None else f"{m['output_tok_s']:,.0f}"
        lines.append(f"| {c} | {_g(m['goodput'])} at {m['level']} | {m['ladder_stop']} | {tok} | "
                     f"{_g(m['startup_s'])} | {_g(m.get('foreign_cpu_pct_mean'))} | {where} |")
    lines += ["", "## The search's steps (round 1)", ""]
    for x in s["steps"]:
        m = x["measured"] or {}
        lines.append(f"{x['n']}. **{x['config']}**: {x['why']} -> {_g(m.get('goodput'))} req/s at {m.get('level')}; "
                     f"{x['verdict']}")
    lines += ["", "## Not started, and why (round 1)", ""]
    lines += [f"- {x['config']} ({x['rule']}): {x['why']}" for x in s["skipped"]]
    lines.append("")
    return "\n".join(lines)
