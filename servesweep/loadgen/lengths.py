"""Token-length distributions for prompts and outputs.

Spec strings, as on the command line:
  `128`                    fixed
  `uniform:LOW:HIGH`       integers in [LOW, HIGH]
  `normal:MEAN:STD`        rounded, clipped to [1, MEAN + 4 STD]
  `lognormal:MEDIAN:SIGMA` rounded, clipped to [1, MEDIAN * exp(4 SIGMA)]; SIGMA is that of log(length)
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, model_validator

Kind = Literal["fixed", "uniform", "normal", "lognormal"]

# No model has a longer context (Llama 4 Scout: 10M tokens). A length above it cannot be served by
# anything, and building a prompt that long takes gigabytes: refused where the spec is read.
LARGEST_CONTEXT = 10_485_760


class LengthSpec(BaseModel):
    kind: Kind
    a: float
    b: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> "LengthSpec":
        if self.kind == "fixed" and self.a < 1:
            raise ValueError(f"length must be >= 1, got {self.a:g}")
        if self.kind == "uniform" and not (1 <= self.a <= self.b):
            raise ValueError(f"uniform needs 1 <= LOW <= HIGH, got {self.a:g}:{self.b:g}")
        if self.kind in ("normal", "lognormal") and (self.a < 1 or self.b < 0):
            raise ValueError(f"{self.kind} needs a centre >= 1 and a spread >= 0, got {self.a:g}:{self.b:g}")
        if not (math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError("lengths must be finite")
        if self.a > LARGEST_CONTEXT:
            raise ValueError(f"{self.a:,.0f} tokens is more than any model's context ({LARGEST_CONTEXT:,} tokens)")
        return self

    @classmethod
    def parse(cls, text: str | int) -> "LengthSpec":
        text = str(text).strip()
        parts = text.split(":")
        try:
            if len(parts) == 1:
                return cls(kind="fixed", a=int(parts[0]))
            kind, *nums = parts
            if kind not in ("uniform", "normal", "lognormal") or len(nums) != 2:
                raise ValueError
            return cls(kind=kind, a=float(nums[0]), b=float(nums[1]))
        except ValueError as exc:
            errors = getattr(exc, "errors", None)  # pydantic's ValidationError: its first message
            why = errors()[0]["msg"].removeprefix("Value error, ") if callable(errors) else str(exc)
            detail = f": {why}" if why else ""
            raise ValueError(
                f"bad length spec {text!r}{detail}; use N, uniform:LOW:HIGH, normal:MEAN:STD "
                "or lognormal:MEDIAN:SIGMA"
            ) from None

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(int(self.a))
        return f"{self.kind}:{self.a:g}:{self.b:g}"

    @property
    def max_value(self) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return int(self.b)
        if self.kind == "normal":
            return int(round(self.a + 4 * self.b))
        return int(round(self.a * math.exp(4 * self.b)))

    def sample(self, rng: np.random.Generator, n: int, ceiling: int | None = None) -> np.ndarray:
        """`n` lengths, clipped to [1, max_value] and to `ceiling` where given (the model's context:
        a distribution's far tail must not be built only to be refused)."""
        if self.kind == "fixed":
            values = np.full(n, self.a)
        elif self.kind == "uniform":
            values = rng.integers(int(self.a), int(self.b) + 1, size=n)
        elif self.kind == "normal":
            values = rng.normal(self.a, self.b, size=n)
        else:
            values = rng.lognormal(math.log(self.a), self.b, size=n)
        top = self.max_value if ceiling is None else max(min(self.max_value, ceiling), 1)
        return np.clip(np.rint(values), 1, top).astype(np.int64)
