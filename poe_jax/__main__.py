"""``python -m poe_jax ...`` is the ``poe-jax`` command (:func:`run` is its console script)."""

import _signal  # the C module: importing `signal` takes long enough to be interrupted itself
import os
import sys


def _interrupted_at_start(signum, frame) -> None:
    """Ctrl-C before the command has started anything: one line, exit 130 (until ``entry`` takes over)."""
    sys.stderr.write("poe-jax: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def run() -> None:
    _signal.signal(_signal.SIGINT, _interrupted_at_start)
    from poe_jax.cli import entry

    entry()


if __name__ == "__main__":
    run()
