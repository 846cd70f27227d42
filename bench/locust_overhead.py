"""What servesweep's Locust user costs: requests/s and streamed chunks/s it sustains, next to `servesweep run`.

    python bench/locust_overhead.py                      # one client core, this machine (>= 2 cores)
    python bench/locust_overhead.py --scale 1,2,4,8      # N client processes (16-core machine)

One core (default): the stand-in server (bench/fast_server.py) on core 0 with zero injected delay,
so it writes as fast as the client reads; the client on core 1 (taskset), one tool at a time:
  - `servesweep run --concurrency C` (one asyncio process),
  - `servesweep locust --headless --users C`: one Locust process (the local runner: users, Locust's
    statistics and servesweep's records in the same process; the idle `servesweep locust` parent
    shares the core).
Requests/s and chunks/s are counted at the server over the steady part of each run (start-up,
ramp-up and drain cut off); the client's CPU share over the same window is printed beside them.

Scale-out (`--scale 1,2,4,8`): for each N, N stand-in processes share one port (SO_REUSEPORT,
`--reuse-port`) on cores 0..N-1, and the client gets cores N..2N-1:
  - `servesweep run --workers N --concurrency C*N`,
  - `servesweep locust --headless --processes N --users C*N` (a master and N worker processes).
Each stand-in process is read on its own admin port and the counts are summed.

Writes a Markdown table to bench/results/locust_overhead.md (and the raw numbers beside it).
Not a test: the figures depend on the machine, and a run takes minutes at full length.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from client_overhead import _tree_cpu  # bench/ is on sys.path when this script runs
from servesweep.files import display_path

BENCH = Path(__file__).resolve().parent
PORT = 8110
ADMIN_BASE = 8210
MODEL = "stand-in"


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class StandIns:
    """N stand-in processes on one port, each pinned to its own core and readable on its admin port;
    started afresh for every tool run (a server that just served another tool carries its state)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, cores: list[int]) -> list[psutil.Process]:
        self.stop()
        for port in [PORT, *(ADMIN_BASE + i for i in range(len(cores)))]:
            if _port_open(port):
                raise RuntimeError(f"port {port} is in use (a stand-in left from an interrupted run?); stop it first")
        for i, core in enumerate(cores):
            log = open(self.log_dir / f"server-{i}.log", "w")
            self.procs.append(subprocess.Popen(
                ["taskset", "-c", str(core), sys.executable, str(BENCH / "fast_server.py"), "--port", str(PORT),
                 "--reuse-port", "--admin-port", str(ADMIN_BASE + i), "--model", MODEL],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        for i in range(len(cores)):
            for _ in range(100):
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"stand-in {i} exited at start; see {self.log_dir}")
                try:
                    _get(ADMIN_BASE + i, "/stats")
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"stand-in {i} did not start; see {self.log_dir}")
        return [psutil.Process(p.pid) for p in self.procs]

    def counters(self) -> tuple[int, int]:
        requests = chunks = 0
        for i in range(len(self.procs)):
            stats = _get(ADMIN_BASE + i, "/stats")
            requests += stats["requests"]
            chunks += stats["chunks"]
        return requests, chunks

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
        self.procs = []


@dataclass
class Sample:
    t: float
    requests: int
    chunks: int
    client_cpu: float


@dataclass
class Result:
    tool: str
    processes: int
    users: int
    ok: bool = False
    reason: str = ""
    samples: list[Sample] = field(default_factory=list)

    def steady(self) -> dict:
        """Rates between the second and the second-to-last intervals in which chunks moved."""
        s = self.samples
        moving = [i for i in range(1, len(s)) if s[i].chunks > s[i - 1].chunks]
        if len(moving) < 4:
            return {"requests_per_s": None, "chunks_per_s": None, "note": "run too short for a steady window"}
        a, b = s[moving[1] - 1], s[moving[-2]]
        span = b.t - a.t
        return {"requests_per_s": (b.requests - a.requests) / span, "chunks_per_s": (b.chunks - a.chunks) / span,
                "client_cpu_cores": (b.client_cpu - a.client_cpu) / span, "window_s": span}


def run_tool(name: str, command: list[str], cores: list[int], servers: StandIns, n: int, users: int,
             seconds: float, work: Path) -> Result:
    result = Result(name, n, users)
    log = open(work / f"{name.replace(' ', '_')}-{n}.log", "w")
    proc = subprocess.Popen(["taskset", "-c", ",".join(map(str, cores)), *command], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=work)
    client = psutil.Process(proc.pid)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                requests, chunks = servers.counters()
                result.samples.append(Sample(time.monotonic(), requests, chunks, _tree_cpu(client)))
            except (OSError, psutil.Error):
                pass
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        code = proc.wait(seconds + 120)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        stop.set()
        sampler.join()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the tool left behind (worker processes)
        except ProcessLookupError:
            pass
        proc.wait()
    if code is None:
        result.reason = f"did not finish within {seconds + 120:.0f} s"
    elif code not in (0, 1):
        tail = (work / f"{name.replace(' ', '_')}-{n}.log").read_text(errors="replace").strip().splitlines()[-3:]
        result.reason = f"exit {code}: " + " | ".join(line.strip()[:160] for line in tail)
    else:
        result.ok = True
    return result


def commands(n: int, users: int, seconds: float, tokens: int, tokenizer: Path, work: Path,
             scale: bool) -> dict[str, list[str]]:
    workload = ["--input-len", "16", "--output-len", str(tokens), "--tokenizer", str(tokenizer)]
    url = f"http://127.0.0.1:{PORT}"
    run = [sys.executable, "-m", "servesweep", "run", "--url", url, "--concurrency", str(users),
           "--duration", f"{seconds:g}", "--out", str(work / f"run-{n}"), "--no-progress", *workload]
    if n > 1:
        run += ["--workers", str(n)]
    loc = [sys.executable, "-m", "servesweep", "locust", "--url", url, "--headless", "--users", str(users),
           "--spawn-rate", str(users), "--run-time", f"{seconds:g}s", "--out", str(work / f"locust-{n}"),
           "--prompt-pool", "256", "--locust-arg=--only-summary", *workload]
    if scale:  # a master and N workers, N = 1 included, so the levels compare like with like
        loc += ["--processes", str(n)]
    return {"servesweep run": run, "locust": loc}


def _fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(rows: list[dict], scale: bool) -> str:
    head = "| tool | users | requests/s | chunks/s | x servesweep run (chunks/s) | client CPU (cores) |"
    if scale:
        head = "| client processes " + head
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        base = next((x["chunks_per_s"] for x in rows if x["tool"] == "servesweep run"
                     and x["processes"] == r["processes"] and x.get("chunks_per_s")), None)
        ratio = f"{r['chunks_per_s'] / base:.2f}x" if base and r.get("chunks_per_s") else "-"
        cells = [r["tool"], str(r["users"]), _fmt(r.get("requests_per_s")), _fmt(r.get("chunks_per_s")), ratio,
                 _fmt(r.get("client_cpu_cores"), 2)]
        if not r["ok"] or r.get("chunks_per_s") is None:
            cells[2] = "failed: " + (r.get("reason") or r.get("note") or "")[:100]
        if scale:
            cells.insert(0, str(r["processes"]))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_tables(rows: list[dict], args: argparse.Namespace, started: dt.datetime, cores: int,
                 complete: bool) -> Path:
    """The Markdown table and the raw rows; written after every run, so a run cut short (a device
    call's time limit) keeps what it measured, marked incomplete."""
    scale = args.scale is not None
    text = table(rows, scale)
    args.out.mkdir(parents=True, exist_ok=True)
    setup = (f"stand-in on cores 0..N-1 (SO_REUSEPORT), clients on cores N..2N-1; {args.users} users per "
             f"client process" if scale else "stand-in on core 0, client on core 1")
    header = (f"# Locust user overhead{' (scale-out)' if scale else ''}, measured {started.isoformat()[:16]} UTC on "
              f"{cores} cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}\n\n"
              f"Command: `python bench/locust_overhead.py{' --scale ' + args.scale if scale else ''} "
              f"--seconds {args.seconds:g} --users {args.users} --tokens {args.tokens}` ({setup}; zero injected "
              f"delay, {args.tokens} chunks per request, counted at the stand-in over each run's steady window).\n\n"
              + ("" if complete else "**Incomplete: the run was cut short; the rows below are the runs that finished.**\n\n"))
    name = "locust_overhead_scale" if scale else "locust_overhead"
    (args.out / f"{name}.md").write_text(header + text + "\n")
    (args.out / f"{name}.json").write_text(json.dumps({"started_at": started.isoformat(), "complete": complete,
                                                       "args": vars(args) | {"out": display_path(args.out)}, "rows": rows},
                                                      indent=2))
    return args.out / f"{name}.md"


def keep_logs(work: Path, dest: Path, lines: int = 400) -> None:
    """The last `lines` lines of each tool's log, beside the tables: without them a row that looks
    wrong cannot be explained afterwards (the 2026-12-07 H100 scale-out's N = 4 and 8 rows)."""
    dest.mkdir(parents=True, exist_ok=True)
    for log in sorted(work.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        (dest / log.name).write_text("\n".join(tail) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default=None, help="comma-separated client process counts, e.g. 1,2,4,8")
    parser.add_argument("--users", type=int, default=128, help="users (concurrent streams) per client process")
    parser.add_argument("--tokens", type=int, default=256, help="streamed tokens (chunks) per request")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each tool's run")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        print("needs taskset (util-linux)", file=sys.stderr)
        return 2
    levels = [int(x) for x in args.scale.split(",")] if args.scale else [1]
    cores = os.cpu_count() or 1
    if cores < 2 * max(levels):
        print(f"needs {2 * max(levels)} cores (one per stand-in process, one per client process); "
              f"this machine has {cores}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from servesweep.models.tiny import build_tiny_model

    tokenizer = build_tiny_model()
    work = Path(tempfile.mkdtemp(prefix="locust-overhead-"))
    servers = StandIns(work)
    rows: list[dict] = []
    started = dt.datetime.now(dt.timezone.utc)
    try:
        for n in levels:
            users = args.users * n
            for name, command in commands(n, users, args.seconds, args.tokens, tokenizer, work,
                                          args.scale is not None).items():
                print(f"{name}: {n} client process(es), {users} users, {args.seconds:g} s ...", flush=True)
                servers.start(list(range(n)))
                r = run_tool(name, command, list(range(n, 2 * n)), servers, n, users, args.seconds, work)
                row = {"tool": name, "processes": n, "users": users, "ok": r.ok, "reason": r.reason, **r.steady()}
                rows.append(row)
                write_tables(rows, args, started, cores, complete=False)
                print(f"  -> {_fmt(row.get('requests_per_s'))} req/s, {_fmt(row.get('chunks_per_s'))} chunks/s, "
                      f"client CPU {_fmt(row.get('client_cpu_cores'), 2)} cores"
                      + (f"  [{r.reason}]" if r.reason else ""), flush=True)
    finally:
        servers.stop()
        keep_logs(work, args.out / ("locust_overhead_scale-logs" if args.scale else "locust_overhead-logs"))
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows, args.scale is not None))
    print(f"written: {write_tables(rows, args, started, cores, complete=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
