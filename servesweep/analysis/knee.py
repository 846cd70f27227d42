"""The knee of throughput against batch size: the first sampled batch size after which one more
batch slot adds less than KNEE_THRESHOLD (10 %) of the output throughput one slot delivers at the
smallest sampled batch. The marginal throughput per added GiB of KV cache at peak is reported for
the same segments. If the threshold is never crossed the knee is the largest sampled batch and
`knee_reached` is false. The sweep's adaptive search and the report both apply it."""

from __future__ import annotations

from typing import Any

import numpy as np

from servesweep.thresholds import KNEE_THRESHOLD

GIB = 1024**3


def find_knee(batches: list[float], throughputs: list[float], kv_bytes: list[float | None] | None = None,
              threshold: float = KNEE_THRESHOLD) -> dict[str, Any]:
    """Knee of throughput against batch size (the module docstring)."""
    order = np.argsort(batches)
    b = np.asarray(batches, dtype=float)[order]
    t = np.asarray(throughputs, dtype=float)[order]
    kv = [kv_bytes[i] for i in order] if kv_bytes is not None else [None] * len(b)
    if len(b) == 0:
        return {"knee_batch_size": None, "knee_reached": False, "segments": []}
    per_slot_at_start = t[0] / b[0] if b[0] > 0 else 0.0
    segments, knee, reached = [], None, False
    for i in range(1, len(b)):
        gain_per_slot = (t[i] - t[i - 1]) / (b[i] - b[i - 1])
        rel = gain_per_slot / per_slot_at_start if per_slot_at_start > 0 else 0.0
        kv_gain = None
        if kv[i] is not None and kv[i - 1] is not None and kv[i] > kv[i - 1]:
            kv_gain = (t[i] - t[i - 1]) / ((kv[i] - kv[i - 1]) / GIB)
        segments.append({"from_batch": float(b[i - 1]), "to_batch": float(b[i]),
                         "marginal_throughput_per_slot": float(gain_per_slot),
                         "relative_to_first_slot": float(rel),
                         "marginal_throughput_per_kv_gib": kv_gain})
        if knee is None and rel < threshold:
            knee, reached = float(b[i - 1]), True
    if knee is None:
        knee = float(b[-1])
    return {"knee_batch_size": int(knee) if knee.is_integer() else knee, "knee_reached": reached,
            "threshold": threshold, "segments": segments}
