"""One latency distribution, kept in memory that does not grow with the run's length.

A `Distribution` holds its values exactly (a compact array of float64, 8 bytes a value) up to
`EXACT_LIMIT` values; past that it folds them into a log-bucketed histogram and keeps only the
counts. So a short run's statistics are exactly numpy's, and a soak of any length costs at most
`EXACT_LIMIT` x 8 bytes (1 MiB) plus the histogram's buckets per distribution.

Error bound once folded (`summary()["exact"]` is False):
  - count, max, min are exact; mean and std are exact up to float rounding (batched
    Welford/Chan merges, no sum-of-squares cancellation);
  - percentiles: every bucket spans a ratio of GROWTH = 1.001 and is read at its geometric middle,
    so each order statistic is off by at most sqrt(1.001) - 1 < 0.05 % of its value (5 us on a
    10 ms ITL); the linear interpolation between the two order statistics around the rank (numpy's
    default method) keeps that bound. Zero is its own exact bucket (the ITL zero-gap count).
Histogram size: one bucket per 0.1 % of value range that holds data, at most ~21,000 buckets
between 1 us and 1,000 s whatever the run's length.
"""

from __future__ import annotations

import math
from array import array
from typing import Iterable

import numpy as np

PERCENTILES = (50, 90, 95, 99)
EXACT_LIMIT = 1 << 17  # values kept exactly before folding: 1 MiB of float64
_FOLD_BATCH = 1 << 16  # once folded, new values are buffered and folded this many at a time
GROWTH = 1.001
_LOG_GROWTH = math.log(GROWTH)
RELATIVE_ERROR_BOUND = math.sqrt(GROWTH) - 1.0


class Distribution:
    """Values added one by one or in batches; `summary()` gives mean/std/p50/p90/p95/p99/max/count."""

    __slots__ = ("values", "folded", "n", "mean", "m2", "min", "max", "zeros", "pos", "neg")

    def __init__(self) -> None:
        self.values = array("d")  # exact values, or (once folded) the not-yet-folded batch
        self.folded = False
        # Statistics of the folded values (exact count/min/max; mean and M2 merged batch by batch).
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.zeros = 0
        self.pos: dict[int, int] = {}  # bucket index -> count, values > 0
        self.neg: dict[int, int] = {}  # bucket index of -value -> count, values < 0

    def add(self, value: float) -> None:
        values = self.values
        values.append(value)
        if len(values) >= (_FOLD_BATCH if self.folded else EXACT_LIMIT):
            self._fold()

    def extend(self, values: Iterable[float] | np.ndarray) -> None:
        if isinstance(values, np.ndarray):  # its bytes at once, not a float object per value
            self.values.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())
        else:
            self.values.extend(values)
        if len(self.values) >= (_FOLD_BATCH if self.folded else EXACT_LIMIT):
            self._fold()

    @property
    def count(self) -> int:
        return self.n + len(self.values)

    def _fold(self) -> None:
        """Move the buffered values into the histogram and the running moments."""
        self.folded = True
        if not self.values:
            return
        arr = np.frombuffer(self.values, dtype=np.float64).copy()
        self.values = array("d")
        n_b, mean_b = arr.size, float(arr.mean())
        m2_b = float(((arr - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n
        self.min = min(self.min, float(arr.min()))
        self.max = max(self.max, float(arr.max()))
        self.zeros += int((arr == 0).sum())
        for side, counts in ((arr[arr > 0], self.pos), (-arr[arr < 0], self.neg)):
            if side.size:
                keys, hits = np.unique(np.floor(np.log(side) / _LOG_GROWTH).astype(np.int64), return_counts=True)
                for k, c in zip(keys.tolist(), hits.tolist()):
                    counts[k] = counts.get(k, 0) + c

    def merge(self, other: "Distribution") -> None:
        """Add `other`'s values (another level's, another worker's): the same result as adding them here."""
        if not self.folded and not other.folded and len(self.values) + len(other.values) < EXACT_LIMIT:
            self.values.extend(other.values)
            return
        self.values.extend(other.values)
        self._fold()
        if other.n:
            n = self.n + other.n
            delta = other.mean - self.mean
            self.mean += delta * other.n / n
            self.m2 += other.m2 + delta * delta * self.n * other.n / n
            self.n = n
            self.min, self.max = min(self.min, other.min), max(self.max, other.max)
            self.zeros += other.zeros
            for mine, theirs in ((self.pos, other.pos), (self.neg, other.neg)):
                for k, c in theirs.items():
                    mine[k] = mine.get(k, 0) + c

    def zero_count(self) -> int:
        return self.zeros + sum(1 for v in self.values if v == 0.0)

    def summary(self) -> dict[str, float | None]:
        keys = ["mean", "std", *(f"p{p}" for p in PERCENTILES), "max"]
        if self.count == 0:
            return {k: None for k in keys} | {"count": 0}
        if not self.folded:
            return exact_summary(np.frombuffer(self.values, dtype=np.float64))
        self._fold()
        out: dict[str, float | None] = {"mean": self.mean, "std": math.sqrt(max(self.m2 / self.n, 0.0))}
        reps, cum = self._cumulative()
        for p in PERCENTILES:
            out[f"p{p}"] = self._percentile(p, reps, cum)
        out["max"] = self.max
        out["count"] = self.n
        out["exact"] = False
        return out

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """Bucket representatives in ascending value order, and cumulative counts."""
        neg = sorted(self.neg.items(), reverse=True)  # larger magnitude first: ascending values
        pos = sorted(self.pos.items())
        reps = [-GROWTH ** (k + 0.5) for k, _ in neg] + ([0.0] if self.zeros else []) + [GROWTH ** (k + 0.5) for k, _ in pos]
        counts = [c for _, c in neg] + ([self.zeros] if self.zeros else []) + [c for _, c in pos]
        return np.array(reps), np.cumsum(counts)

    def _percentile(self, p: float, reps: np.ndarray, cum: np.ndarray) -> float:
        rank = p / 100.0 * (self.n - 1)  # numpy's 'linear' method
        lo, hi = math.floor(rank), math.ceil(rank)

        def order_stat(i: int) -> float:
            value = float(reps[int(np.searchsorted(cum, i, side="right"))])
            return min(max(value, self.min), self.max)  # the extreme buckets: min and max are exact

        a = order_stat(lo)
        return a if hi == lo else a + (order_stat(hi) - a) * (rank - lo)


def exact_summary(arr: np.ndarray) -> dict[str, float | None]:
    pct = np.percentile(arr, PERCENTILES)
    out: dict[str, float | None] = {"mean": float(arr.mean()), "std": float(arr.std())}
    out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, pct)})
    out["max"] = float(arr.max())
    out["count"] = int(arr.size)
    return out
