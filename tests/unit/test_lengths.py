import numpy as np
import pytest

from servesweep.loadgen.lengths import LengthSpec


def rng():
    return np.random.default_rng(3)


def test_fixed():
    assert LengthSpec.parse("128").sample(rng(), 5).tolist() == [128] * 5
    assert str(LengthSpec.parse(64)) == "64"


def test_uniform_bounds_and_spread():
    values = LengthSpec.parse("uniform:64:512").sample(rng(), 20000)
    assert values.min() >= 64 and values.max() <= 512
    assert values.mean() == pytest.approx(288, rel=0.02)
    assert values.min() == 64 and values.max() == 512


def test_normal_is_clipped_to_at_least_one():
    values = LengthSpec.parse("normal:20:30").sample(rng(), 20000)
    assert values.min() >= 1 and values.max() <= 20 + 4 * 30


def test_lognormal_median():
    values = LengthSpec.parse("lognormal:200:0.5").sample(rng(), 20000)
    assert np.median(values) == pytest.approx(200, rel=0.03)
    assert values.min() >= 1


@pytest.mark.parametrize("text", ["", "abc", "uniform:10", "uniform:50:10", "gauss:1:2", "0", "normal:-5:1", "lognormal:a:b"])
def test_bad_specs_name_the_problem(text):
    with pytest.raises(ValueError, match="length spec"):
        LengthSpec.parse(text)
