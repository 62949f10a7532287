"""``python -m zocket``: the same as the ``zocket`` command."""

import sys

from .cli import main

sys.exit(main())
