"""``python -m zocket`` and the ``zocket`` console script (``zocket.__main__:run``)."""

from ._startup import hold_interrupts

# First, before the imports that take most of zocket's start-up (see _startup).
hold_interrupts()

import sys


def run() -> None:
    """The console script: run the CLI and exit with its status."""
    from .cli import main

    sys.exit(main())


if __name__ == "__main__":
    run()
