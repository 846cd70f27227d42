"""What `servesweep compare` sets side by side: the levels of a run folder (summary.json) or the
points of a sweep folder (points.jsonl), each with its per-repeat values and the facts that must
match for a comparison to mean something (workload, load, server, hardware, SLOs).

A side is `PATH` or `PATH:SELECTOR`, the selector a level label (`c16`) or, in a sweep,
`CONFIG/LEVEL` (`bf16/c16`); two points of one sweep are `DIR:bf16/c16 DIR:fp8/c16`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servesweep.confidence import level_values
from servesweep.errors import ReportError
from servesweep.results import POINTS_FILE, read_points
from servesweep.results.points import dummy_weights
from servesweep.results.summary import SUMMARY_FILE, Interval, read_summary

# Facts that differ between any two runs without changing what was measured.
_VOLATILE_SERVER = {"port", "pid", "log", "host", "startup_s", "startup_timeout_s", "command", "kv_pool",
                    "kv_pool_tokens", "kv_pool_bytes", "cpu_split", "server_cpus"}
_VOLATILE_LOAD = {"name"}


@dataclass(frozen=True, slots=True)
class Unit:
    """One level of a run or one point of a sweep: its values per metric (one per repeat)."""

    key: str  # "c16" (run) or "bf16/c16" (sweep)
    values: dict[str, list[float]]
    context: dict[str, dict[str, Any]] = field(default_factory=dict)  # workload, load, server, hardware, slo
    suspect: bool = False


def split_side(spec: str) -> tuple[Path, str | None]:
    """`PATH` or `PATH:SELECTOR` -> (path, selector); a path that exists as given has no selector."""
    path = Path(spec)
    if path.exists():
        return path, None
    head, sep, selector = spec.rpartition(":")
    if sep and Path(head).exists() and selector:
        return Path(head), selector
    raise ReportError(f"{spec}: no such results folder (give a run or sweep folder, optionally :LEVEL or "
                      ":CONFIG/LEVEL)")


def _values(per_repeat: dict[str, Interval] | None, one_window: dict[str, Any]) -> dict[str, list[float]]:
    """Per metric the repeats' values (ci95 of the level), else the one window's value."""
    if per_repeat:
        return {k: [float(v) for v in ci.values or []] for k, ci in per_repeat.items()}
    return {k: [float(v)] for k, v in level_values(one_window).items() if v is not None}


def _server_context(server: dict[str, Any] | None, model: str | None) -> dict[str, Any]:
    server = server or {}
    config = {k: v for k, v in (server.get("config") or {}).items() if k not in _VOLATILE_SERVER | {"load_format"}}
    config["dummy_weights"] = dummy_weights(server.get("config") or {})  # older files say vLLM's load_format
    return {"model": model, "backend": server.get("backend"), "version": server.get("version"), **config}


def _hardware(host: dict[str, Any], server: dict[str, Any] | None) -> dict[str, Any]:
    return {"gpus": (server or {}).get("gpus") or [], "cpu_count": host.get("cpu_count"),
            "platform": host.get("platform")}


def _workload(workload: dict[str, Any]) -> dict[str, Any]:
    # Every sweep point and every repeat draws its own prompts: the seed is not the workload.
    return {k: v for k, v in workload.items() if k != "seed"}


def _run_units(path: Path) -> list[Unit]:
    s = read_summary(path / SUMMARY_FILE)
    ci95 = s.ci95 or {}
    server = s.server.to_file() if s.server is not None else None
    shared = {"workload": _workload(s.workload), "server": _server_context(server, s.target.get("model")),
              "hardware": _hardware(s.host, server), "slo": s.slo or {}}
    specs = {lv.get("name") or "": lv for lv in s.levels_requested}
    units, seen = [], set()
    for lv in s.levels:
        entry = lv.to_file()
        label = lv.label.split("#r")[0]
        if label in seen:
            continue
        seen.add(label)
        spec = {k: v for k, v in (specs.get(lv.label) or lv.spec).items() if k not in _VOLATILE_LOAD}
        units.append(Unit(label, _values(ci95.get(label), entry), {**shared, "load": spec},
                          bool(lv.timing_check and lv.timing_check.suspect)))
    return units


def _sweep_units(path: Path) -> list[Unit]:
    units = []
    for p in read_points(path):
        if p.status != "ok":
            continue
        s = p.figures
        ci95 = s.ci95 or {}
        server = {**(s.server.to_file() if s.server else {}), "config": p.config_spec,
                  **(p.server.to_file() if p.server else {})}
        context = {"workload": _workload(s.workload),
                   "load": {k: v for k, v in p.level_spec.items() if k not in _VOLATILE_LOAD},
                   "server": _server_context(server, p.config_spec.get("model")),
                   "hardware": _hardware(s.host, server), "slo": s.slo or {}}
        suspect = bool((p.timing_check and p.timing_check.suspect) or s.timing_suspect_levels)
        units.append(Unit(f"{p.config}/{p.level}", _values(ci95.get(p.level) or next(iter(ci95.values()), None),
                                                           s.to_file()), context, suspect))
    return units


def read_side(spec: str) -> tuple[Path, list[Unit]]:
    """The units of one side, narrowed to its selector when it has one."""
    path, selector = split_side(spec)
    if (path / POINTS_FILE).exists():
        units = _sweep_units(path)
    elif (path / SUMMARY_FILE).exists():
        units = _run_units(path)
    else:
        raise ReportError(f"{path}: neither a run ({SUMMARY_FILE}) nor a sweep ({POINTS_FILE})")
    if selector is not None:
        picked = [u for u in units if u.key == selector or u.key.endswith(f"/{selector}")]
        if len(picked) != 1:
            keys = ", ".join(u.key for u in units) or "none"
            how = "matches none" if not picked else "matches several: give CONFIG/LEVEL"
            raise ReportError(f"{spec}: {selector!r} {how} (there: {keys})")
        units = picked
    if not units:
        raise ReportError(f"{path}: no measured level to compare")
    return path, units


def match_units(a: list[Unit], b: list[Unit], a_spec: str, b_spec: str) -> list[tuple[Unit, Unit]]:
    """Pairs of the same level (or configuration/level) on both sides; one unit each pair as is."""
    if len(a) == 1 and len(b) == 1:
        return [(a[0], b[0])]
    by_key = {u.key: u for u in b}
    pairs = [(u, by_key[u.key]) for u in a if u.key in by_key]
    if not pairs:
        raise ReportError(f"no level in common: {a_spec} has {', '.join(u.key for u in a)}; {b_spec} has "
                          f"{', '.join(u.key for u in b)}; pick one on each side with PATH:LEVEL")
    return pairs
