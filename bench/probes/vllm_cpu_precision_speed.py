"""Decode speed of the textless tiny model (128,256 ids) on the CPU vLLM at one precision: start time,
then c1 x 8 and c16 x 64 requests (256 in, 48 out) through `servesweep run --url` (issue 33: which
precision the shared test server runs). Run: python bench/probes/vllm_cpu_precision_speed.py fp32|bf16
[vLLM args...]. Output: bench/results/cpu-test-server-options.md."""
import sys, time, tempfile, subprocess, json
from pathlib import Path
from servesweep.models.tiny import build_tiny_model, TinyModelShape
from servesweep.backends.vllm import VllmConfig, launch_vllm
prec = sys.argv[1]
d = Path(tempfile.mkdtemp())
m = build_tiny_model(d / "textless", TinyModelShape(vocab_size=128256), fill_vocabulary=False)
t = time.monotonic()
s = launch_vllm(VllmConfig(model=str(m), served_model_name="tiny", precision=prec, load_format="dummy", max_model_len=1024,
                           extra_args=sys.argv[2:]), d / "log")
print(prec, sys.argv[2:], "start", round(time.monotonic() - t, 1), flush=True)
try:
    for c, n in ((1, 8), (16, 64)):
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "servesweep", "run", "--url", s.base_url, "--concurrency", str(c), "--num-requests", str(n),
                        "--input-len", "256", "--output-len", "48", "--out", str(d / f"c{c}"), "--no-progress"], check=True, capture_output=True)
        sm = json.loads((d / f"c{c}" / "summary.json").read_text())
        print(f"c{c} n{n}: wall {time.monotonic()-t:.1f} s, tpot p50 {sm['tpot_ms']['p50']:.2f} ms, out tok/s {sm['levels'][0].get('output_throughput', sm.get('output_throughput'))}", flush=True)
finally:
    s.stop()
