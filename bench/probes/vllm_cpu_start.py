"""How long the CPU vLLM takes to start the tiny model, compiled or eager (issue 33: the suite's
server options). Run: python bench/probes/vllm_cpu_start.py compiled|eager [vLLM args...];
set VLLM_CACHE_ROOT to an empty folder for a fresh machine's first compile. Output: bench/results/cpu-test-server-options.md."""
import sys, time, tempfile, os
from pathlib import Path
from servesweep.models.tiny import build_tiny_model
from servesweep.backends.vllm import VllmConfig, launch_vllm
eager = sys.argv[1] == "eager"
d = Path(tempfile.mkdtemp())
m = build_tiny_model(d / "tiny")
t = time.monotonic()
cfg = VllmConfig(model=str(m), served_model_name="tiny", precision="fp32", load_format="dummy", max_model_len=1024,
                 extra_args=(["--enforce-eager"] if eager else []) + sys.argv[2:])
s = launch_vllm(cfg, d / "log")
print("start", "eager" if eager else "compiled", round(time.monotonic() - t, 1), flush=True)
s.stop()
