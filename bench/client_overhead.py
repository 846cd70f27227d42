"""Client overhead and timing fidelity of servesweep and its peers, side by side on this machine.

    python bench/client_overhead.py [--install-peers] [--tools servesweep,vllm-rs ...] [--quick]
        [--rounds 3] [--baseline-tree DIR] [--machine-workers N]

The stand-in server (bench/fast_server.py) runs pinned to core 0, started afresh for every
tool run, each tool pinned to core 1 (taskset), one at a time, against the same workload:

1. chunk rate: zero injected delay, concurrency 64 / 256 / 1024, 256 chunks per request.
   Chunks per second are counted at the server over the steady part of the run (tool start-up
   and tear-down excluded); client CPU seconds per 1,000 chunks come from the tool's process
   tree over the same window. The server writes only while the client reads, so the rate is
   the client's, unless the server's own core is saturated (its CPU share is printed).
2. timing error: TTFT 50 ms and ITL 10 ms injected, 100 and 1,000 concurrent streams,
   16 chunks per request. Error = the tool's reported TTFT (or gap) minus the injected one,
   from the tool's own per-request output. The server schedules each request from the
   kernel's receive time of its bytes; its lateness against that schedule is printed too: it
   is part of every tool's error.
3. open loop: constant arrivals at rising rates, 4-chunk requests; the highest rate whose
   arrivals at the server stay within 1 % of the target.

`--rounds N` runs every experiment N times, the tools taking turns within each round, so load
from outside the benchmark lands on all of them alike; a ratio is taken within each round and the
table gives the median. `--baseline-tree DIR` adds "servesweep (baseline)": another version's
source tree (e.g. `git archive <commit>` unpacked) run the same way, for a before/after in one
run. `--machine-workers N` adds two per-machine rows to the chunk-rate experiment:
`servesweep run --workers N` and vllm-rs, each on every core (`BENCH_MACHINE_CORES`, default all),
sharing them with the stand-in: chunks per second of the whole machine, not of one core.

Prints Markdown tables (ratios against servesweep from the same round) and writes them with the
raw numbers to bench/results/ (or --out). Not a unit test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from peers import ALL_TOOLS, Job, Servesweep, Tool, VllmRs, install_peers  # noqa: E402

# Overridable for a machine with more cores (bench/gpu/device.sh fidelity: cores away from core 0's interrupts).
SERVER_CORE = os.environ.get("BENCH_SERVER_CORE", "0")
CLIENT_CORE = os.environ.get("BENCH_CLIENT_CORE", "1")
PORT = 8100
RATE_WINDOW_S = 45.0
URL = f"http://127.0.0.1:{PORT}"
MODEL = "stand-in"


def _get(path: str) -> dict:
    with urllib.request.urlopen(URL + path, timeout=10) as resp:
        return json.loads(resp.read())


def _post(path: str) -> None:
    urllib.request.urlopen(urllib.request.Request(URL + path, data=b"", method="POST"), timeout=10).read()


class StandIn:
    """The stand-in server on its own core, started afresh for every tool run: a server that has
    just served another tool (its connections, its heap) was measurably later on its own schedule
    (p99 3.8 ms vs 0.4 ms at 1,000 streams), and that lateness would be charged to the next tool."""

    def __init__(self, log_dir: Path) -> None:
        self.proc: subprocess.Popen | None = None
        self.log_dir = log_dir

    def fresh(self, ttft_ms: float, itl_ms: float) -> psutil.Process:
        self.stop()
        import socket

        with socket.socket() as probe:
            listening = probe.connect_ex(("127.0.0.1", PORT)) == 0
        if listening:
            # Another server there would answer the health check and be measured instead.
            raise RuntimeError(f"port {PORT} is in use (a stand-in left over from an interrupted run?); "
                               "stop that process first")
        log = open(self.log_dir / f"server-{ttft_ms:g}-{itl_ms:g}.log", "w")
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, sys.executable, str(BENCH / "fast_server.py"),
                                      "--port", str(PORT), "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms),
                                      "--model", MODEL], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(100):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the stand-in server exited at start; see {self.log_dir}")
            try:
                _get("/stats")
                return psutil.Process(self.proc.pid)
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the stand-in server did not start; see " + str(self.log_dir))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None


def _tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of a process, its live descendants and the children it has reaped."""
    total = 0.0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


@dataclass
class Sample:
    t: float
    chunks: int
    requests: int
    client_cpu: float
    server_cpu: float


@dataclass
class RunResult:
    tool: str
    job: dict
    ok: bool
    reason: str = ""
    wall_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    server_stats: dict = field(default_factory=dict)
    timings: list[tuple[float, list[float]]] | None = None


def run_tool(tool: Tool, job: Job, server: psutil.Process, timeout_s: float) -> RunResult:
    _post("/stats/reset")
    job.out_dir.mkdir(parents=True, exist_ok=True)
    log = open(job.out_dir / "tool.log", "w")
    started = time.monotonic()
    proc = subprocess.Popen(["taskset", "-c", tool.cores or CLIENT_CORE, *tool.command(job)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=job.out_dir)
    client = psutil.Process(proc.pid)
    result = RunResult(tool.name, {k: str(v) for k, v in job.__dict__.items()}, ok=False)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                stats = _get("/stats")
                result.samples.append(Sample(time.monotonic(), stats["chunks"], stats["requests"],
                                             _tree_cpu(client), sum(server.cpu_times()[:2])))
            except (OSError, psutil.Error):
                pass
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        code = None
    finally:  # also on Ctrl-C / SIGTERM of the benchmark: the tool must not outlive it
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stop.set()
    sampler.join()
    result.wall_s = time.monotonic() - started
    result.server_stats = _get("/stats")
    # Reap whatever the tool left behind in its session (worker processes).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if code is None:
        result.reason = f"did not finish within {timeout_s:.0f} s"
    elif code != 0:
        tail = (job.out_dir / "tool.log").read_text(errors="replace").strip().splitlines()[-3:]
        result.reason = f"exit {code}: " + " | ".join(line.strip()[:160] for line in tail)
    else:
        result.ok = True
        try:
            result.timings = tool.timings(job)
        except (OSError, KeyError, ValueError, StopIteration) as exc:
            result.reason = f"no per-request timings readable: {type(exc).__name__}: {exc}"
    return result


def steady_window(samples: list[Sample]) -> tuple[Sample, Sample] | None:
    """First and last samples of the part of the run where chunks flowed (start and drain cut off)."""
    moving = [i for i in range(1, len(samples)) if samples[i].chunks > samples[i - 1].chunks]
    if len(moving) < 4:
        return None
    first, last = moving[1], moving[-2]  # drop the ramp-up and drain intervals
    return samples[first - 1], samples[last]


def chunk_rate(result: RunResult) -> dict:
    window = steady_window(result.samples)
    if window is None:
        return {"chunks_per_s": None, "note": "run too short for a steady window"}
    a, b = window
    chunks = b.chunks - a.chunks
    dt_s = b.t - a.t
    return {"chunks_per_s": chunks / dt_s, "client_cpu_s_per_1k_chunks": (b.client_cpu - a.client_cpu) / chunks * 1000,
            "client_cpu_share": (b.client_cpu - a.client_cpu) / dt_s, "server_cpu_share": (b.server_cpu - a.server_cpu) / dt_s,
            "window_s": dt_s, "total_chunks": result.server_stats.get("chunks")}


def timing_error(result: RunResult, ttft_ms: float, itl_ms: float) -> dict:
    if not result.timings:
        return {}
    ttft_err = np.array([t * 1000 - ttft_ms for t, _ in result.timings])
    itl_err = np.array([g * 1000 - itl_ms for _, gaps in result.timings for g in gaps])

    def stats(x: np.ndarray) -> dict:
        if not len(x):
            return {}
        return {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)), "max": float(x.max()),
                "abs_p99": float(np.percentile(np.abs(x), 99)), "n": int(len(x))}

    return {"ttft_error_ms": stats(ttft_err), "itl_error_ms": stats(itl_err),
            "server_lateness_ms": {"first_chunk": result.server_stats.get("first_chunk_lateness_ms"),
                                   "chunk": result.server_stats.get("chunk_lateness_ms"),
                                   "intake": result.server_stats.get("intake_ms")}}


def achieved_rate(result: RunResult) -> float | None:
    s = result.server_stats
    if not s.get("first_request_s") or s["requests"] < 2 or s["last_request_s"] <= s["first_request_s"]:
        return None
    return (s["requests"] - 1) / (s["last_request_s"] - s["first_request_s"])


# --- the three experiments ---------------------------------------------------------------------
def _slug(tool: Tool) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in tool.name)


def exp_chunk_rate(tools, server_ctl, work, tokenizer, levels, chunks_per_request, timeout, rounds=1) -> list[dict]:
    rows = []
    for c, round_no, tool in ((c, n, t) for c in levels for n in range(1, rounds + 1) for t in tools):
        # About 1M chunks: several seconds of steady state even for the fastest client.
        requests = max(2 * c, 1_000_000 // chunks_per_request)
        job = Job(URL, MODEL, tokenizer, work / f"rate-{_slug(tool)}-c{c}-r{round_no}", chunks_per_request,
                  requests, concurrency=c)
        print(f"  chunk rate: {tool.name} c{c} round {round_no} ({requests} requests x {chunks_per_request} "
              "chunks) ...", flush=True)
        # The rate comes from the server's counters, so a slow tool can be stopped once it has
        # shown its steady state: RATE_WINDOW_S bounds the run, not the number of requests.
        r = run_tool(tool, job, server_ctl.fresh(0, 0), min(timeout, RATE_WINDOW_S))
        row = {"tool": tool.name, "concurrency": c, "round": round_no, "cores": tool.cores or CLIENT_CORE,
               "ok": r.ok, "reason": r.reason, "wall_s": r.wall_s, "chunks_per_s": None,
               **(chunk_rate(r) if r.samples else {})}
        if row["chunks_per_s"] is not None and r.reason.startswith("did not finish"):
            row["ok"], row["reason"] = True, f"stopped after {RATE_WINDOW_S:.0f} s (steady window measured)"
        rows.append(row)
        print(f"    -> {_fmt(row.get('chunks_per_s'), 0)} chunks/s, "
              f"{_fmt(row.get('client_cpu_s_per_1k_chunks'), 3)} CPU s/1k chunks, "
              f"server CPU {_fmt(row.get('server_cpu_share'), 2)}" + (f"  [{r.reason}]" if r.reason else ""), flush=True)
    return rows


def exp_timing(tools, server_ctl, work, tokenizer, levels, timeout, ttft_ms=50.0, itl_ms=10.0,
               rounds=1) -> list[dict]:
    rows = []
    for c, round_no, tool in ((c, n, t) for c in levels for n in range(1, rounds + 1) for t in tools):
        job = Job(URL, MODEL, tokenizer, work / f"timing-{_slug(tool)}-c{c}-r{round_no}", 16, 3 * c,
                  concurrency=c)
        print(f"  timing: {tool.name} c{c} round {round_no} ...", flush=True)
        r = run_tool(tool, job, server_ctl.fresh(ttft_ms, itl_ms), timeout)
        row = {"tool": tool.name, "concurrency": c, "round": round_no, "ok": r.ok and bool(r.timings),
               "reason": r.reason, **timing_error(r, ttft_ms, itl_ms)}
        rows.append(row)
        t = row.get("ttft_error_ms") or {}
        print(f"    -> TTFT error p50 {_fmt(t.get('p50'), 2)} p99 {_fmt(t.get('p99'), 2)} max {_fmt(t.get('max'), 2)} ms"
              + (f"  [{r.reason}]" if r.reason else ""), flush=True)
    return rows


def exp_open_loop(tools, server_ctl, work, tokenizer, rates, seconds, timeout) -> list[dict]:
    rows = []
    for tool in tools:
        best = None
        for rate in rates:
            requests = max(200, int(rate * seconds))
            job = Job(URL, MODEL, tokenizer, work / f"open-{_slug(tool)}-r{rate:g}", 4, requests,
                      rate=rate)
            print(f"  open loop: {tool.name} {rate:g} req/s ({requests} requests) ...", flush=True)
            r = run_tool(tool, job, server_ctl.fresh(0, 0), timeout)
            got = achieved_rate(r) if r.ok else None
            within = got is not None and abs(got / rate - 1) <= 0.01
            rows.append({"tool": tool.name, "target_rate": rate, "achieved_rate": got, "within_1pct": within,
                         "ok": r.ok, "reason": r.reason})
            print(f"    -> achieved {_fmt(got, 1)} req/s" + (f"  [{r.reason}]" if r.reason else ""), flush=True)
            if not within:
                break
            best = rate
        rows.append({"tool": tool.name, "max_rate_within_1pct": best})
    return rows


# --- output ------------------------------------------------------------------------------------
def _fmt(v, digits=1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:,.{digits}f}"


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _rate_table(rows: list[dict]) -> list[str]:
    """Median chunks/s over the rounds, with each tool's ratio to servesweep taken within a round
    (so a round slowed by outside load slows both sides of its ratio), then every round's figure."""
    levels = sorted({r["concurrency"] for r in rows})
    rounds = sorted({r.get("round", 1) for r in rows})
    rate = {(r["tool"], r["concurrency"], r.get("round", 1)): r.get("chunks_per_s") for r in rows}
    out = [f"### 1. Streamed chunks per second, zero injected delay ({len(rounds)} round(s))", "",
           "Median over the rounds; x servesweep: the median of the ratios taken within each round.", "",
           "| tool | client cores | " + " | ".join(f"c{c} chunks/s (x servesweep)" for c in levels) +
           f" | CPU s per 1k chunks (c{levels[-1]}) |", "|---|---|" + "---|" * (len(levels) + 1)]
    tools = list(dict.fromkeys(r["tool"] for r in rows))
    for tool in tools:
        cells = []
        for c in levels:
            values = [v for n in rounds if (v := rate.get((tool, c, n))) is not None]
            ratios = [v / b for n in rounds if (v := rate.get((tool, c, n))) and (b := rate.get(("servesweep", c, n)))]
            if not values:
                failed = next((r for r in rows if r["tool"] == tool and r["concurrency"] == c), {})
                cells.append("failed: " + (failed.get("reason") or failed.get("note") or "")[:80])
                continue
            cells.append(f"{_median(values):,.0f}" + (f" ({_median(ratios):.2f}x)" if ratios else ""))
        cpu = _median([r["client_cpu_s_per_1k_chunks"] for r in rows if r["tool"] == tool
                       and r["concurrency"] == levels[-1] and r.get("client_cpu_s_per_1k_chunks") is not None])
        cores = next(r.get("cores", "") for r in rows if r["tool"] == tool)
        out.append(f"| {tool} | {cores} | " + " | ".join(cells) + f" | {_fmt(cpu, 4)} |")
    out += ["", "Every round (chunks/s; server CPU share in brackets):", "",
            "| tool | streams | " + " | ".join(f"round {n}" for n in rounds) + " |", "|---|---|" + "---|" * len(rounds)]
    server = {(r["tool"], r["concurrency"], r.get("round", 1)): r.get("server_cpu_share") for r in rows}
    for c in levels:
        for tool in tools:
            cells = [f"{_fmt(rate.get((tool, c, n)), 0)} [{_fmt(server.get((tool, c, n)), 2)}]" for n in rounds]
            out.append(f"| {tool} | {c} | " + " | ".join(cells) + " |")
    return out + [""]


def tables(results: dict) -> str:
    out = []
    rate_rows = results.get("chunk_rate") or []
    if rate_rows:
        out += _rate_table(rate_rows)
    timing_rows = results.get("timing") or []
    if timing_rows:
        out += ["### 2. Timing error (measured - injected), TTFT 50 ms, ITL 10 ms", "",
                "TTFT counted from when each tool started the request. The stand-in schedules every "
                "request from the kernel's receive time of its bytes; *server lateness* is how late its "
                "first chunks left against that schedule (part of every tool's error).", "",
                "| tool | streams | round | TTFT err p50 / p99 / max (ms) | p99 abs TTFT err (ms) | ITL err p50 / p99 / max (ms) | server lateness p99 (ms) |",
                "|---|---|---|---|---|---|---|"]
        for r in timing_rows:
            t, i = r.get("ttft_error_ms") or {}, r.get("itl_error_ms") or {}
            lat = ((r.get("server_lateness_ms") or {}).get("first_chunk") or {}).get("p99")
            if not t:
                out.append(f"| {r['tool']} | {r['concurrency']} | {r.get('round', 1)} | failed: {r.get('reason', '')[:100]} | | | |")
                continue
            out.append(f"| {r['tool']} | {r['concurrency']} | {r.get('round', 1)} | {_fmt(t['p50'], 2)} / {_fmt(t['p99'], 2)} / {_fmt(t['max'], 2)} | "
                       f"{_fmt(t['abs_p99'], 2)} | {_fmt(i.get('p50'), 2)} / {_fmt(i.get('p99'), 2)} / {_fmt(i.get('max'), 2)} | "
                       f"{_fmt(lat, 2)} |")
        out.append("")
    open_rows = results.get("open_loop") or []
    if open_rows:
        out += ["### 3. Highest constant open-loop rate kept within 1 % (arrivals counted at the server)", "",
                "| tool | max rate within 1 % (req/s) | first rate missed: achieved |", "|---|---|---|"]
        for r in [x for x in open_rows if "max_rate_within_1pct" in x]:
            miss = next((x for x in open_rows if x["tool"] == r["tool"] and x.get("within_1pct") is False), None)
            missed = "-" if miss is None else (f"{miss['target_rate']:g} -> {_fmt(miss['achieved_rate'], 1)}"
                                               + (f" ({miss['reason'][:80]})" if miss.get("reason") else ""))
            best = _fmt(r["max_rate_within_1pct"], 0)
            if miss is None and r["max_rate_within_1pct"] is not None:
                best = f">= {best} (highest rate tried)"
            out.append(f"| {r['tool']} | {best} | {missed} |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install-peers", action="store_true", help="create the peers' virtual environments first")
    parser.add_argument("--tools", default=None, help="comma-separated subset of: " + ", ".join(t.name for t in ALL_TOOLS))
    parser.add_argument("--experiments", default="chunk_rate,timing,open_loop")
    parser.add_argument("--quick", action="store_true", help="smaller levels, for a smoke run")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per tool run")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--rate-levels", default=None,
                        help="concurrencies of the chunk-rate experiment (default 64,256,1024; --quick 64,256)")
    parser.add_argument("--keep-work", action="store_true", help="keep every tool's raw output")
    parser.add_argument("--rounds", type=int, default=1, help="run every experiment this many times, tools alternating")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="also run servesweep from this source tree, as 'servesweep (baseline)'")
    parser.add_argument("--machine-workers", type=int, default=0,
                        help="chunk rate: add servesweep --workers N and vllm-rs on every core (0: off)")
    args = parser.parse_args()
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        print("needs taskset and at least 2 cores (server on one, client on the other)", file=sys.stderr)
        return 2
    # A `timeout` or Ctrl-C must still stop the stand-in server (the `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.install_peers:
        install_peers()
    wanted = set(args.tools.split(",")) if args.tools else None
    tools, skipped = [], []
    candidates = list(ALL_TOOLS)
    if args.baseline_tree is not None:
        candidates.insert(1, Servesweep("servesweep (baseline)", tree=args.baseline_tree.resolve()))
    machine_cores = os.environ.get("BENCH_MACHINE_CORES", f"0-{(os.cpu_count() or 1) - 1}")
    machine_tools = [Servesweep(f"servesweep --workers {args.machine_workers}", workers=args.machine_workers,
                                cores=machine_cores), VllmRs("vllm-rs (every core)", cores=machine_cores)]
    if args.machine_workers:
        candidates += machine_tools
    for tool in candidates:
        if wanted and tool.name not in wanted and tool.name.split()[0] not in wanted:
            continue
        reason = tool.unavailable()
        (skipped.append({"tool": tool.name, "reason": reason}) if reason else tools.append(tool))
    from servesweep.models.tiny import build_tiny_model

    tokenizer = build_tiny_model()
    work = Path(tempfile.mkdtemp(prefix="client-overhead-"))
    server_ctl = StandIn(work)
    experiments = args.experiments.split(",")
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                 "python": platform.python_version(), "server_core": SERVER_CORE,
                                 "client_core": CLIENT_CORE, "load_average_at_start": os.getloadavg()},
                     "command": " ".join(sys.argv), "rounds": args.rounds,
                     "baseline_tree": str(args.baseline_tree) if args.baseline_tree else None,
                     "started_at": dt.datetime.now(dt.timezone.utc).isoformat(), "skipped": skipped}
    try:
        if "chunk_rate" in experiments:
            print("1. chunk rate", flush=True)
            results["chunk_rate"] = exp_chunk_rate(tools, server_ctl, work, tokenizer,
                                                   [int(c) for c in args.rate_levels.split(",")] if args.rate_levels
                                                   else [64, 256] if args.quick else [64, 256, 1024],
                                                   64 if args.quick else 256, args.timeout, args.rounds)
        tools = [t for t in tools if t not in machine_tools]  # per-machine rows: the chunk rate only
        if "timing" in experiments:
            print("2. timing error", flush=True)
            results["timing"] = exp_timing(tools, server_ctl, work, tokenizer,
                                           [100] if args.quick else [100, 1000], args.timeout, rounds=args.rounds)
        if "open_loop" in experiments:
            print("3. open loop", flush=True)
            results["open_loop"] = exp_open_loop(tools, server_ctl, work, tokenizer,
                                                 [100, 400] if args.quick else [100, 200, 400, 800, 1600, 3200, 6400],
                                                 4.0, args.timeout)
    finally:
        server_ctl.stop()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"raw outputs kept in {work}")
    text = tables(results)
    if skipped:
        text += "\nNot measured:\n\n" + "\n".join(f"- {s['tool']}: {s['reason']}" for s in skipped) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = results["started_at"]
    (args.out / "client_overhead.md").write_text(
        f"# Client overhead, measured {stamp[:16]} UTC on {results['machine']['cores']} cores "
        f"({results['machine']['cpu']}), Python {results['machine']['python']}\n\n"
        f"Command: `{results['command']}` (stand-in server on core {SERVER_CORE}, tool on core "
        f"{CLIENT_CORE} unless its row says otherwise).\n\n" + text)
    (args.out / "client_overhead.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
