"""zocket's start-up hook for Python servers; standard library only.

zocket puts this directory first on PYTHONPATH for the servers it starts, so
every Python process among them imports this module at start-up (through the
`site` module). Outside zocket (no ZOCKET_HOOK_FDS) it only hands over to the
sitecustomize the environment had before, if any. This file must stay cheap:
it runs before every interpreter start in a zocket-run tree.
"""

import os
import sys


def _chain() -> None:
    """Run the sitecustomize this one shadows, as if it had been imported normally."""
    import importlib.machinery

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    import importlib.util

    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


import _zocket_protocol

if os.environ.get(_zocket_protocol.HELD_FDS):
    try:
        import _zocket_hook

        _zocket_hook.install()
    except Exception as exc:  # noqa: BLE001 (the app must start even if the hook cannot)
        sys.stderr.write(f"zocket hook: disabled: {exc}\n")
_chain()
