"""Offline (IQL, TD3+BC, BC) and online (SAC) training, the goal prior, and the zoo builder."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["file_log"]


def file_log(path: str | Path, log: Callable = print) -> Callable[[str], None]:
    """A ``log`` that passes each line on to ``log`` and appends it, time-stamped, to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        log(msg)
        with open(path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {msg}\n")

    return say
