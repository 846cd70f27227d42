import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from servesweep.loadgen.arrivals import LoadLevel, arrival_gaps, arrival_offsets


def test_poisson_mean_rate_and_exponential_gaps():
    level = LoadLevel(request_rate=20.0, num_requests=5000)
    gaps = arrival_gaps(level, 5000, np.random.default_rng(42))[1:]
    assert level.arrival == "poisson"
    assert gaps.mean() == pytest.approx(1 / 20.0, rel=0.05)
    # Kolmogorov-Smirnov against Exp(rate): at a fixed seed the fit must not be rejected.
    assert stats.kstest(gaps, "expon", args=(0, 1 / 20.0)).pvalue > 0.01
    # ...while a constant process at the same rate clearly is.
    const = arrival_gaps(LoadLevel(request_rate=20.0, arrival="constant", num_requests=10), 500,
                         np.random.default_rng(0))[1:]
    assert stats.kstest(const, "expon", args=(0, 1 / 20.0)).pvalue < 1e-6


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_keeps_the_mean_and_sets_the_spread(burstiness):
    level = LoadLevel(request_rate=10.0, burstiness=burstiness, arrival="gamma", num_requests=20000)
    gaps = arrival_gaps(level, 20000, np.random.default_rng(7))[1:]
    assert gaps.mean() == pytest.approx(0.1, rel=0.05)
    # Gamma(k, theta) has coefficient of variation 1/sqrt(k).
    assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(burstiness), rel=0.08)


def test_burstiness_other_than_one_implies_gamma():
    assert LoadLevel(request_rate=5, burstiness=0.5, num_requests=1).arrival == "gamma"


def test_constant_offsets():
    level = LoadLevel(request_rate=4.0, arrival="constant", num_requests=5)
    assert arrival_offsets(level, 5, np.random.default_rng(0)).tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("kwargs", [
    dict(num_requests=5),  # neither concurrency nor rate
    dict(concurrency=2, request_rate=1.0, num_requests=5),
    dict(concurrency=0, num_requests=5),
    dict(request_rate=-1, num_requests=5),
    dict(concurrency=2),  # no bound
    dict(concurrency=2, num_requests=5, duration_s=3),
    dict(request_rate=1, burstiness=0, num_requests=5),
])
def test_invalid_levels_are_rejected(kwargs):
    with pytest.raises(ValidationError):
        LoadLevel(**kwargs)


def test_labels():
    assert LoadLevel(concurrency=8, num_requests=1).label == "c8"
    assert LoadLevel(request_rate=2.5, num_requests=1).label == "r2.5"
