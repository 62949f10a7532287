# The compiled cffi module (built by _build_libc.py) has no annotations of its own; this stub
# lets a user's `mypy --strict` import zocket.libc without a "missing library stub" error.
# The raw layer is untyped on purpose: zocket.libc is the typed one.
from typing import Any

ffi: Any
lib: Any
