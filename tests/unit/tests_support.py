"""Synthetic sweep points with known answers, shared by the report and analysis tests."""

GIB = 1024**3


def point(precision, conc, tput, ttft_p99=100.0, status="ok", seqs=None, kv_frac=0.5, preemptions=0.0,
          dev_peak=None, cause=None):
    summary = None if status != "ok" else {
        "completed": 100, "failed": 0, "request_throughput": tput / 100, "output_token_throughput": tput,
        "total_token_throughput": tput * 2,
        "ttft_ms": {"p50": ttft_p99 / 2, "p90": ttft_p99, "p99": ttft_p99},
        "tpot_ms": {"p50": 10.0, "p90": 12.0, "p99": 15.0}, "itl_ms": {"p50": 10.0, "p99": 15.0},
        "e2e_ms": {"p50": 500.0, "p90": 600.0, "p99": 700.0},
    }
    telemetry = None if status != "ok" else {
        "running_batch_mean": conc * 0.9, "running_batch_peak": conc, "kv_cache_peak_frac": kv_frac,
        "kv_cache_peak_bytes": kv_frac * 10 * GIB, "kv_pool_bytes": 10 * GIB, "preemptions": preemptions,
        "oom_margin_pct": 0.0 if preemptions else (1 - kv_frac) * 100, "device_mem_peak_bytes": dev_peak,
        "device_mem_total_bytes": 80 * GIB if dev_peak else None,
    }
    label = precision + (f"-seqs{seqs}" if seqs else "")
    return {"config": label, "config_spec": {"model": "/nonexistent", "precision": precision, "max_num_seqs": seqs,
                                             "kv_cache_dtype": "auto", "gpu_memory_utilization": 0.9},
            "level": f"c{conc}", "level_spec": {"concurrency": conc}, "status": status, "cause": cause,
            "summary": summary, "telemetry": telemetry}


def typed(*points):
    """Synthetic points as the readers take them (results.points.SweepPoint, as read_points gives)."""
    from servesweep.results.points import SweepPoint

    return [SweepPoint.model_validate(p) for p in points]
