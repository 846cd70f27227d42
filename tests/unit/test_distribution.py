import math

import numpy as np
import pytest

from servesweep.loadgen import distribution as dist_mod
from servesweep.loadgen.distribution import EXACT_LIMIT, RELATIVE_ERROR_BOUND, Distribution


def test_small_distribution_is_exactly_numpys():
    values = np.random.default_rng(3).lognormal(2, 1, 5000)
    d = Distribution()
    for v in values:
        d.add(float(v))
    s = d.summary()
    assert "exact" not in s and s["count"] == 5000
    assert s["p99"] == np.percentile(values, 99) and s["mean"] == values.mean() and s["max"] == values.max()


def test_past_the_limit_percentiles_stay_within_the_stated_bound():
    rng = np.random.default_rng(4)
    # Latency-like values spanning four decades, a few exact zeros and a few negatives (lateness).
    values = np.concatenate([rng.lognormal(1.5, 1.2, 3 * EXACT_LIMIT), np.zeros(1000), -rng.uniform(0, 2, 500)])
    rng.shuffle(values)
    d = Distribution()
    for chunk in np.array_split(values, 97):
        d.extend(chunk.tolist())
    s = d.summary()
    assert s["exact"] is False and s["count"] == values.size
    assert s["max"] == values.max()
    assert s["mean"] == pytest.approx(values.mean(), rel=1e-9)
    assert s["std"] == pytest.approx(values.std(), rel=1e-9)
    for p in (50, 90, 95, 99):
        truth = np.percentile(values, p)
        assert abs(s[f"p{p}"] - truth) <= RELATIVE_ERROR_BOUND * abs(truth) + 1e-12
    assert d.zero_count() == 1000
    # The memory kept is the histogram, not the values.
    assert len(d.values) < dist_mod._FOLD_BATCH and len(d.pos) + len(d.neg) < 20000


def test_merge_gives_what_one_distribution_of_all_values_gives():
    rng = np.random.default_rng(5)
    parts = [rng.exponential(5, n) for n in (1000, EXACT_LIMIT, 70000)]
    whole, merged = Distribution(), Distribution()
    for part in parts:
        whole.extend(part.tolist())
        piece = Distribution()
        piece.extend(part.tolist())
        merged.merge(piece)
    a, b = whole.summary(), merged.summary()
    assert a["count"] == b["count"] and a["max"] == b["max"]
    for key in ("p50", "p90", "p95", "p99"):
        assert a[key] == b[key]
    assert a["mean"] == pytest.approx(b["mean"], rel=1e-12) and a["std"] == pytest.approx(b["std"], rel=1e-9)


def test_bound_is_what_the_docs_say():
    assert RELATIVE_ERROR_BOUND < 0.0005 and math.isclose(RELATIVE_ERROR_BOUND, math.sqrt(1.001) - 1)
