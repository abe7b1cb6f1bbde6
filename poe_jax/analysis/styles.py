"""One plot style per rule, shared by every figure of the report.

A built-in rule has its own marker, line style and colour; any other rule (a plugin's) gets one
from a fixed cycle by its name, so the same rule looks the same in every figure and every run.
:func:`register_style` gives a rule a chosen one.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

__all__ = ["STYLES", "Style", "register_style", "style"]


class Style(NamedTuple):
    marker: str
    linestyle: str
    color: str


STYLES: dict[str, Style] = {
    "frozen": Style("*", "", "#000000"),
    "prior_only": Style("x", "", "#7f7f7f"),
    "additive": Style("^", "-.", "#ff7f0e"),
    "poe": Style("o", "-", "#1f77b4"),
    "kl_reg": Style("s", "--", "#2ca02c"),
    "poe_adaptive": Style("D", ":", "#9467bd"),
    "iql_guided": Style("v", "-", "#8c564b"),
    "critic_greedy": Style("P", "", "#d62728"),
    "critic_prior": Style("h", "--", "#e377c2"),
}
_CYCLE = [Style(m, ls, c) for m, ls, c in (("p", "-", "#17becf"), ("<", "--", "#bcbd22"), (">", ":", "#393b79"),
                                           ("d", "-.", "#637939"), ("H", "-", "#8c6d31"), ("8", "--", "#843c39"))]


def register_style(rule: str, marker: str = "o", linestyle: str = "-", color: str = "#1f77b4") -> None:
    """Give ``rule`` its marker, line style (``""``: markers only) and colour in every figure."""
    STYLES[rule] = Style(marker, linestyle, color)


def style(rule: str) -> Style:
    """The rule's style: its registered one, else one of a fixed cycle chosen by its name (stable across runs)."""
    if rule in STYLES:
        return STYLES[rule]
    return _CYCLE[int.from_bytes(hashlib.blake2b(rule.encode(), digest_size=2).digest(), "little") % len(_CYCLE)]
