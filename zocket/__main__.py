"""``python -m zocket`` and the ``zocket`` console script (``zocket.__main__:run``)."""

from ._startup import hold_interrupts

# First, before the imports that take most of zocket's start-up (see _startup).
hold_interrupts()

import sys


def run() -> None:
    """The console script: run the CLI and exit with its status."""
    from .control import COMMANDS

    if sys.argv[1:2] and sys.argv[1] in COMMANDS:
        # `zocket reload|status|stop|upgrade` import nothing but the control client, so
        # that they still work when the rest of an install is broken (zocket upgrade says so).
        from ._startup import release_interrupts
        from .control import client_main

        sys.exit(130 if release_interrupts() else client_main(sys.argv[1:]))
    from .cli import main

    sys.exit(main())


if __name__ == "__main__":
    run()
