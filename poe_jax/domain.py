"""The values a named parameter may take: one declaration, one check, one message.

A :class:`Domain` declares a parameter's type and range (goal parameters, env options,
rule coefficients in specs, CLI numbers). :meth:`Domain.check` returns the value (as the
declared type) or raises ``ValueError`` naming the field, the value and what is allowed::

    >>> Domain(float, lo=0, lo_open=True).check("goal_params.G1_speed.v_max", -1.0)
    Traceback (most recent call last):
    ...
    ValueError: goal_params.G1_speed.v_max: must be a finite number > 0; got -1.0

Booleans are never numbers, NaN and inf are refused unless the domain allows them
(``finite=False``), and integers are not silently truncated.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

__all__ = ["Domain", "FINITE", "NONNEGATIVE", "POSITIVE"]


class Domain(NamedTuple):
    """``kind``: ``float``, ``int``, ``bool`` or ``str`` (or a tuple of them, e.g. ``(str, int)``);
    ``lo``/``hi``: the range of numbers (closed unless ``lo_open``/``hi_open``); ``finite``: refuse NaN
    and inf; ``choices``: the allowed values of a string."""

    kind: Any = float
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    finite: bool = True
    choices: tuple | None = None

    def describe(self) -> str:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if bool in kinds:
            return "true or false"
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        parts = []
        if str in kinds:
            parts.append("a string")
        if int in kinds or float in kinds:
            what = "an integer" if float not in kinds else ("a finite number" if self.finite else "a number")
            rng = []
            if self.lo > -math.inf:
                rng.append(f"{'>' if self.lo_open else '>='} {_num(self.lo)}")
            if self.hi < math.inf:
                rng.append(f"{'<' if self.hi_open else '<='} {_num(self.hi)}")
            parts.append(what + (" " + " and ".join(rng) if rng else ""))
        return " or ".join(parts)

    def check(self, field: str, value):
        """``value`` as this domain's type, or ``ValueError("FIELD: must be ...; got VALUE")``."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        bad = ValueError(f"{field}: must be {self.describe()}; got {value!r}")
        if isinstance(value, bool):
            if bool in kinds:
                return value
            raise bad
        if isinstance(value, str):
            if str not in kinds or (self.choices is not None and value not in self.choices):
                raise bad
            return value
        numeric = (int, float) if float in kinds else (int,) if int in kinds else ()
        if not numeric or not isinstance(value, numeric):
            raise bad
        if self.finite and not math.isfinite(value):
            raise bad
        lo_ok = value > self.lo if self.lo_open else value >= self.lo
        hi_ok = value < self.hi if self.hi_open else value <= self.hi
        if not (lo_ok and hi_ok):
            raise bad
        return float(value) if float in kinds and not (int in kinds and isinstance(value, int)) else int(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


FINITE = Domain(float)
NONNEGATIVE = Domain(float, lo=0.0)
POSITIVE = Domain(float, lo=0.0, lo_open=True)
