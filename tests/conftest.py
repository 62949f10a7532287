"""Fixtures that test modules opt into.

``no_fd_leak``: the test (its other fixtures included) leaves no fd of the
test process open that was not open before it; opt in for a whole module with
``pytestmark = pytest.mark.usefixtures("no_fd_leak")``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import no_new_fds


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fails the test if it leaves an fd open (see `support.no_new_fds`)."""
    with no_new_fds():
        yield
