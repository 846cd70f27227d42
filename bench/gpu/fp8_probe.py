"""Proof that FP8 kernels ran when a model is served at fp8 (`--quantization fp8`), or that they did not.

    PYTHONPATH=/tmp/site:$PWD python3 bench/gpu/fp8_probe.py --model /tmp/trained-llama \
        --log SWEEP/configs/fp8-gmu0.5/server-fp8-gmu0.5.log --log SWEEP/configs/fp32-gmu0.5/server-fp32-gmu0.5.log \
        --out DIR

A near-zero perplexity change at fp8 on a 5 M-parameter model is only evidence if the linear layers
really were quantized and their matrix products really ran in FP8. Three kinds of evidence, each
written to DIR/fp8_proof.json (and a short DIR/fp8_proof.md):

1. The server logs (--log, any number): the lines about quantization, FP8 kernels and weight
   memory ("Model loading took X GiB"), and that memory per log, so fp8 can be set beside fp32.
2. The layers: an in-process vLLM engine at fp8 (enforce-eager, a small memory share) and, through
   `LLM.apply_model`, every module with a quantization method: its class, the method's class, the
   weight's dtype and shape. Linear layers left unquantized show up here with an unquantized method.
3. The kernels: each quantized layer's method applied once to a random bf16 input under the torch
   profiler; the CUDA kernel names that ran (an FP8 GEMM shows as cutlass/scaled_mm/fp8 kernels).

Any part that fails is recorded with its error; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

LOG_PATTERN = re.compile(r"quantiz|fp8|float8|scaled_mm|cutlass|marlin|Model loading took|Loading weights took|"
                         r"weights? (memory|took)|LinearKernel|LinearMethod", re.IGNORECASE)
LOADING = re.compile(r"Model loading took ([0-9.]+) ?GiB")


def log_evidence(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"log": str(path), "error": "no such file"}
    lines = path.read_text(errors="replace").splitlines()
    hits = [line.strip()[-300:] for line in lines if LOG_PATTERN.search(line)]
    gib = [float(m.group(1)) for line in lines if (m := LOADING.search(line))]
    return {"log": str(path), "matching_lines": hits[:40], "matching_lines_total": len(hits),
            "model_loading_gib": gib[-1] if gib else None}


def inspect_layers(model: Any) -> dict[str, Any]:
    """Runs inside the vLLM worker (LLM.apply_model): the quantization state of every layer, and
    the kernels one quantized layer's matrix product launches."""
    import torch

    layers = []
    by_dtype: dict[str, int] = {}
    for name, p in model.named_parameters():
        by_dtype[str(p.dtype)] = by_dtype.get(str(p.dtype), 0) + p.numel() * p.element_size()
    probe_target = None
    for name, module in model.named_modules():
        method = getattr(module, "quant_method", None)
        if method is None:
            continue
        weight = getattr(module, "weight", None)
        simple = {k: v for k, v in getattr(method, "__dict__", {}).items() if isinstance(v, (bool, int, float, str)) and len(k) < 40}
        kernel = {k: type(v).__name__ for k, v in getattr(method, "__dict__", {}).items()
                  if "kernel" in k.lower() or "linear" in k.lower()}
        layers.append({
            "name": name, "module": type(module).__name__, "method": type(method).__name__,
            "weight_dtype": str(weight.dtype) if isinstance(weight, torch.Tensor) else None,
            "weight_shape": list(weight.shape) if isinstance(weight, torch.Tensor) else None,
            "method_flags": simple, "method_kernels": kernel,
        })
        if (probe_target is None and isinstance(weight, torch.Tensor) and weight.dtype == torch.float8_e4m3fn
                and hasattr(method, "apply")):
            probe_target = (name, module, method)
    kernels: dict[str, Any] = {}
    if probe_target is None:
        kernels["error"] = "no layer holds FP8 weights: nothing to run"
    else:
        name, module, method = probe_target
        in_features = getattr(module, "input_size_per_partition", None) or getattr(module, "input_size", None)
        try:
            x = torch.randn(16, int(in_features), device="cuda", dtype=torch.bfloat16)
            with torch.no_grad():
                method.apply(module, x)  # warm-up outside the profile
                torch.cuda.synchronize()
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                    y = method.apply(module, x)
                    torch.cuda.synchronize()
            names = sorted({e.key for e in prof.key_averages()})
            kernels = {"layer": name, "input": [16, int(in_features)], "output_dtype": str(y.dtype),
                       "cuda_kernels": names[:30],
                       "fp8_kernel_seen": any(re.search(r"fp8|e4m3|scaled_mm|cutlass|sm90", n, re.IGNORECASE)
                                              for n in names)}
        except Exception as exc:  # the kernel probe is extra evidence; the layer table stands without it
            kernels = {"layer": name, "error": f"{type(exc).__name__}: {exc}"}
    quantized = [l for l in layers if l["weight_dtype"] == "torch.float8_e4m3fn"]
    return {"layers": layers, "quantized_layers": len(quantized), "layers_with_method": len(layers),
            "parameter_bytes_by_dtype": by_dtype, "kernel_probe": kernels}


def engine_evidence(model_dir: str, max_model_len: int, memory_fraction: float,
                    load_format: str = "auto") -> dict[str, Any]:
    # apply_model ships the function to the engine's worker; keep the engine in this process so
    # nothing needs pickling, and allow it where a worker process is used anyway.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    from vllm import LLM, SamplingParams

    # load_format dummy: the Llama-3-8B shape without weights on disk (the throughput sweep's model);
    # the layers and kernels are the same, the generations are noise.
    llm = LLM(model=model_dir, quantization="fp8", dtype="bfloat16", enforce_eager=True,
              gpu_memory_utilization=memory_fraction, max_model_len=max_model_len, load_format=load_format)
    out = llm.generate(["def main(", "import os\n"], SamplingParams(max_tokens=8, temperature=0.0))
    results = llm.apply_model(inspect_layers)
    evidence = results[0] if isinstance(results, list) else results
    evidence["sample_generations"] = [o.outputs[0].text for o in out]
    import vllm

    evidence["vllm_version"] = vllm.__version__
    return evidence


def render(proof: dict[str, Any]) -> str:
    lines = ["# FP8 proof", ""]
    for entry in proof.get("logs", []):
        lines.append(f"- `{Path(entry['log']).name}`: model loading "
                     f"{entry.get('model_loading_gib')} GiB; {entry.get('matching_lines_total', 0)} matching lines")
    eng = proof.get("engine", {})
    if "error" in eng:
        lines.append(f"- engine probe failed: {eng['error'].splitlines()[-1]}")
    else:
        lines.append(f"- layers with a quantization method: {eng.get('layers_with_method')}; holding FP8 "
                     f"weights: {eng.get('quantized_layers')}")
        lines.append(f"- parameter bytes by dtype: {eng.get('parameter_bytes_by_dtype')}")
        kp = eng.get("kernel_probe", {})
        lines.append(f"- kernel probe on {kp.get('layer')}: "
                     + (f"error {kp['error']}" if "error" in kp else
                        f"FP8 kernel seen: {kp.get('fp8_kernel_seen')}; kernels: {', '.join(kp.get('cuda_kernels', []))}"))
        lines += ["", "| layer | module | method | weight dtype | shape |", "|---|---|---|---|---|"]
        for l in eng.get("layers", []):
            lines.append(f"| {l['name']} | {l['module']} | {l['method']} | {l['weight_dtype']} | {l['weight_shape']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--log", type=Path, action="append", default=[], help="a server log to read (repeatable)")
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    p.add_argument("--no-engine", action="store_true", help="read the logs only")
    p.add_argument("--load-format", default="auto", choices=["auto", "dummy"],
                   help="dummy: a model directory without weights (e.g. /tmp/llama3-8b-dummy)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    proof: dict[str, Any] = {"model": args.model, "load_format": args.load_format, "logs": [log_evidence(path) for path in args.log]}
    if not args.no_engine:
        try:
            proof["engine"] = engine_evidence(args.model, args.max_model_len, args.gpu_memory_utilization,
                                              args.load_format)
        except Exception:
            proof["engine"] = {"error": traceback.format_exc(limit=3)}
    (args.out / "fp8_proof.json").write_text(json.dumps(proof, indent=2, default=str))
    (args.out / "fp8_proof.md").write_text(render(proof))
    print(render(proof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
