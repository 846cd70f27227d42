"""Several `servesweep gate` runs against one launched CPU vLLM server (one start instead of one per gate).

    python examples/cpu-smollm2-quality/gates_on_one_server.py MODEL_DIR PRECISION OUT_DIR SPEC:REFERENCE ...

For each SPEC:REFERENCE pair: `servesweep gate --spec SPEC --url <server> --precision PRECISION
--reference REFERENCE --out OUT_DIR/<spec's name>`. Prints each gate's exit code (1: failed).
"""

import sys
from pathlib import Path

from servesweep.backends.vllm import VllmConfig, launch_vllm
from servesweep.cli import main

model, precision, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
server = launch_vllm(VllmConfig(model=model, served_model_name=Path(model).name, precision=precision,
                                max_model_len=1024), out)
try:
    for pair in sys.argv[4:]:
        spec, reference = pair.split(":", 1)
        name = Path(spec).stem.removeprefix("gate-smollm2-")
        code = main(["gate", "--spec", spec, "--url", server.base_url, "--precision", precision,
                     "--reference", reference, "--out", str(out / name)])
        print(f"{name}: exit {code}", flush=True)
finally:
    server.stop()
