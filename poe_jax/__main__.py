"""``python -m poe_jax ...`` is the ``poe-jax`` command."""

import sys

from poe_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
