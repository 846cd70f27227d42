"""`servesweep locust`: servesweep's workloads in Locust (web UI, headless, master and workers).

Everything is checked here first (workload or scenario, target, tokenizer, output directory);
then Locust runs in a child process with the packaged locustfile (servesweep.locust.LOCUSTFILE)
and one option carrying the validated configuration. When it exits, the summary it wrote is
printed as `servesweep run` prints its own, with the same exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


from servesweep import auth, controlplane
from servesweep.cli.common import (
    add_auth_options,
    add_slo_options,
    add_wide_option,
    add_workload_options,
    console,
    default_out_dir,
    finish_run,
    from_options,
    slo_from_args,
    workload_from_args,
)
from servesweep.backends.process import die_with_parent
from servesweep.errors import EXIT_INTERRUPTED, EXIT_OK, ConfigError, TargetError
from servesweep.loadgen.fit import check_lengths, context_limit
from servesweep.loadgen.stats import SLO
from servesweep.loadgen.target import check_loopback, probe_target
from servesweep.loadgen.tokenizer import tokenizer_source
from servesweep.loadgen.workload import Workload
from servesweep.locust import LOCUSTFILE
from servesweep.locust.config import CONFIG_OPTION, LocustRunConfig, parse_duration
from servesweep.results import SUMMARY_FILE, ensure_writable_dir, read_summary

# locust.stats.bucket_response_time (the histogram buckets servesweep narrows to whole ms) and
# the extended web-UI tabs are what this needs; 2.47 is the release it was written and tested on.
MIN_LOCUST = (2, 47)
WORKLOAD_OPTIONS = ("endpoint", "no_stream", "input_len", "output_len", "dataset", "shared_prefix_len",
                    "no_ignore_eos", "no_chunk_usage", "timeout", "stall_timeout", "seed")
SLO_OPTIONS = ("slo_ttft_ms", "slo_tpot_ms", "slo_e2e_ms")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "locust", help="run a workload in Locust: web UI, headless, or distributed over workers",
        description="Closed loop only (each user sends its next request when the last one ends); "
                    "open-loop Poisson/gamma arrivals stay in `servesweep run`.")
    t = p.add_argument_group("target")
    t.add_argument("--url", default=None, help="OpenAI-compatible server (not needed with --worker)")
    t.add_argument("--model", default=None, help="served model name (default: the first in /v1/models)")
    add_auth_options(t)  # with --worker too: a worker on another machine sends its own credentials
    t.add_argument("--scenario", type=Path, default=None,
                   help="take the workload, SLOs and (one closed-loop level) user count from a scenario file")
    add_workload_options(p)
    add_slo_options(p)
    w = p.add_argument_group("prompts and output")
    w.add_argument("--prompt-pool", type=int, default=1024,
                   help="prompts built per Locust process and cycled (default 1024)")
    w.add_argument("--out", type=Path, default=None, help="results directory (default: results/<time>-locust)")
    w.add_argument("--keep-text", action="store_true", help="store generated text in the records")
    add_wide_option(w)
    w.add_argument("--allow-remote", action="store_true", help="allow a target that is not a loopback address")
    lo = p.add_argument_group("Locust")
    lo.add_argument("--web-host", default="127.0.0.1", help="web UI address (default 127.0.0.1: this machine only)")
    lo.add_argument("--web-port", type=int, default=8089)
    lo.add_argument("--headless", action="store_true", help="no web UI: start at once, stop after --run-time")
    lo.add_argument("--users", type=int, default=None, help="concurrent users (closed loop)")
    lo.add_argument("--spawn-rate", type=float, default=None, help="users started per second")
    lo.add_argument("--run-time", default=None, help="stop after e.g. 60s, 5m, 1h30m")
    lo.add_argument("--master", action="store_true", help="distribute: this process coordinates workers")
    lo.add_argument("--expect-workers", type=int, default=None, help="headless master: wait for N workers")
    lo.add_argument("--master-bind-host", default="127.0.0.1",
                    help="address the master listens on for workers (default 127.0.0.1; 0.0.0.0 for other machines)")
    lo.add_argument("--master-port", type=int, default=5557, help="master's port for workers (default 5557)")
    lo.add_argument("--worker", action="store_true", help="a worker: connects to --master-host")
    lo.add_argument("--master-host", default="127.0.0.1", help="with --worker: the master's address")
    lo.add_argument("--processes", type=int, default=None,
                    help="fork N worker processes on this machine (a master with N local workers, or N workers)")
    lo.add_argument("--locust-arg", action="append", default=[], metavar="ARG",
                    help="extra argument passed verbatim to Locust (repeatable), e.g. --locust-arg=--loglevel=DEBUG")
    p.set_defaults(handler=cmd_locust)


def _explicit(args: argparse.Namespace, names: tuple[str, ...], parser_defaults: dict[str, Any]) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) != parser_defaults.get(n)]


def workload_and_users(args: argparse.Namespace) -> tuple[Workload, SLO | None, int | None, str | None]:
    """The workload, SLOs and default user count, from a scenario or the command line."""
    if args.scenario is None:
        return workload_from_args(args), slo_from_args(args), args.users, None
    from servesweep.scenarios.schema import load_scenario

    probe = argparse.ArgumentParser()
    add_workload_options(probe)
    add_slo_options(probe)
    defaults = vars(probe.parse_args([]))
    clash = _explicit(args, WORKLOAD_OPTIONS + SLO_OPTIONS, defaults)
    if clash:
        raise ConfigError(f"--scenario gives the workload and SLOs; drop {', '.join(clash)} or the scenario")
    scenario = load_scenario(args.scenario)
    auth.use(auth.with_scenario_key(auth.current(), scenario.api_key_env))
    users = args.users
    load = scenario.load
    if users is None:
        if load.concurrency is None:
            raise ConfigError(f"scenario {args.scenario}: its load is open loop (request_rate); Locust runs closed "
                              "loop only: give --users N to run its workload closed loop, or use `servesweep run`")
        if len(load.concurrency) != 1:
            raise ConfigError(f"scenario {args.scenario}: {len(load.concurrency)} concurrency levels "
                              f"({load.concurrency}); a Locust run has one user count: give --users N")
        users = load.concurrency[0]
    slo = SLO(**scenario.slo.model_dump(exclude={"percentile"})) if scenario.slo else None
    return scenario.workload, slo, users, scenario.name


async def _probe(url: str, model: str | None, tokenizer_dir: Path | None) -> tuple[Any, str | None]:
    """The served model, and where prompts get their token counts: a local tokenizer.json, the
    server's /tokenize ("server"), or nowhere (None: a dataset is then needed)."""
    async with controlplane.session() as session:
        target = await probe_target(session, url, model)
        # The one rule (loadgen.tokenizer); a /tokenize that does not answer at all reads as none here:
        # Locust can still run a dataset workload.
        try:
            return target, await tokenizer_source(session, target.base_url, target.model, tokenizer_dir, target.root)
        except TargetError:
            return target, None


def locust_argv(args: argparse.Namespace, config: LocustRunConfig | None, users: int | None) -> list[str]:
    """Locust's own command line for this run."""
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    if args.worker:
        argv += ["--worker", "--master-host", args.master_host, "--master-port", str(args.master_port)]
    else:
        assert config is not None
        out = config.out_dir
        argv += ["--host", config.base_url, CONFIG_OPTION, config.to_option(),
                 "--csv", str(out / "locust"), "--html", str(out / "locust-report.html")]
        if args.headless:
            argv.append("--headless")
        else:
            argv += ["--web-host", args.web_host, "--web-port", str(args.web_port)]
        if users is not None:
            argv += ["--users", str(users)]
        if args.spawn_rate is not None:
            argv += ["--spawn-rate", f"{args.spawn_rate:g}"]
        if args.run_time and not args.headless:
            argv += ["--run-time", args.run_time]  # the UI's default; headless runs end through the plugin
        if args.master or args.processes:
            argv += ["--master-bind-host", args.master_bind_host, "--master-bind-port", str(args.master_port)]
        if args.master:
            argv.append("--master")
        if args.expect_workers is not None:
            argv += ["--expect-workers", str(args.expect_workers)]
    if args.processes:
        argv += ["--processes", str(args.processes)]
    return argv + list(args.locust_arg)


def run_locust(argv: list[str]) -> tuple[int, bool]:
    """Run Locust in a child process; return its exit code and whether this process was asked to
    stop (SIGINT or SIGTERM). Locust runs in a process group of its own (its --processes workers
    with it), and each signal that reaches this process, from the terminal's Ctrl-C or sent to its
    PID alone, is passed on to that group once: Locust stops its test, marks the summary
    interrupted and writes it; it is then read here. PR_SET_PDEATHSIG stops Locust if this process
    is killed outright."""
    # Credentials go in the environment (servesweep.auth.handover), never on Locust's command line.
    proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=die_with_parent,
                            env={**os.environ, **auth.handover(auth.current())})
    heard: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        heard.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait(), bool(heard)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        _reap_group(proc.pid)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the process group; False when no process is left in it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _reap_group(pgid: int, grace_s: float = 5.0) -> None:
    """Locust has exited: end what is left of its process group (its --processes workers, a worker
    stuck in a call that never returns), so nothing servesweep started outlives it. SIGTERM, up to
    `grace_s` for them to go, then SIGKILL."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _signal_group(pgid, 0):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def check_locust_installed() -> None:
    """Locust is an optional extra: say how to get it, without importing it (importing it
    monkey-patches this process for gevent)."""
    try:
        version = importlib.metadata.version("locust")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("Locust is not installed: pip install 'servesweep[locust]'") from None
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if parts < MIN_LOCUST:
        raise ConfigError(f"Locust {version} is too old for servesweep locust: "
                          f"pip install 'locust>={MIN_LOCUST[0]}.{MIN_LOCUST[1]}'")


def cmd_locust(args: argparse.Namespace) -> int:
    check_locust_installed()
    if args.processes is not None and args.processes < 1:
        raise ConfigError(f"--processes must be >= 1, got {args.processes}")
    if args.worker:
        if args.master or args.headless or args.url:
            raise ConfigError("--worker takes its workload from the master: drop --url, --master and --headless")
        code, interrupted = run_locust(locust_argv(args, None, None))
        return EXIT_INTERRUPTED if interrupted else code
    if not args.url:
        raise ConfigError("--url is required (except with --worker)")
    if args.master and args.processes:
        raise ConfigError("--processes already starts a master with local workers: drop --master")
    if args.users is not None and args.users < 1:
        raise ConfigError(f"--users must be >= 1, got {args.users}")
    try:
        run_time_s = parse_duration(args.run_time) if args.run_time else None
    except ValueError as exc:
        raise ConfigError(f"--run-time: {exc}") from None
    workload, slo, users, scenario = workload_and_users(args)
    if not args.allow_remote:
        check_loopback(args.url)
    target, tokenizer = asyncio.run(_probe(args.url, args.model, args.tokenizer))
    # Before Locust starts and a prompt is built: lengths against the model's context (exit 2).
    limit = context_limit(target.max_model_len, f"{target.base_url}/v1/models")
    if workload.dataset is None:
        note = check_lengths(workload.input_len, workload.output_len, limit, workload.shared_prefix_len).note
        if note:
            console.print(note, style="yellow", soft_wrap=True)
    if tokenizer is None and workload.dataset is None:
        raise ConfigError("synthetic prompts need a tokenizer: give --tokenizer DIR or a server with /tokenize")
    out = ensure_writable_dir((args.out or default_out_dir("locust")).resolve())
    config = from_options(lambda: LocustRunConfig(
        base_url=target.base_url, model=target.model, max_model_len=target.max_model_len, workload=workload,
        out_dir=out, tokenizer=tokenizer,
        slo=slo, keep_text=args.keep_text, prompt_pool=args.prompt_pool, scenario=scenario,
        run_time_s=run_time_s if args.headless else None,
    ))
    from servesweep.loadtest import set_aside_previous_run

    set_aside_previous_run(out)
    started = time.time()
    code, interrupted = run_locust(locust_argv(args, config, users))
    summary_path = out / SUMMARY_FILE
    if not summary_path.exists():
        fallback = sorted(Path(tempfile.gettempdir()).glob("servesweep-summary-*.json"),
                          key=lambda p: p.stat().st_mtime)
        fallback = [p for p in fallback if p.stat().st_mtime >= started]
        if fallback:  # the disk was full: the summary went to the fallback place (results.write_summary)
            summary_path = fallback[-1]
    if not summary_path.exists():
        if interrupted:
            console.print("interrupted before any test had started: no servesweep summary")
            return EXIT_INTERRUPTED
        console.print(f"Locust exited ({code}) without a servesweep summary: no test was started" if code == 0
                      else f"Locust exited with code {code}; no servesweep summary was written",
                      style=None if code == 0 else "red")
        return code if code else EXIT_OK
    summary = read_summary(summary_path)
    lost = (summary.workers or {}).get("lost") or []
    if lost:
        console.print(f"workers {lost} sent no final report (died or cut off): their last records "
                      "may be missing from the summary (and from Locust's statistics)", style="yellow")
    console.print(f"Locust: {out}/locust_stats.csv, {out}/locust-report.html")
    return finish_run(summary.to_file(), out, wide=args.wide)
