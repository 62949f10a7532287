"""The hook's adapter for waitress; standard library only.

waitress reads and writes every connection in its main thread's loop (wasyncore) and
runs the app in worker threads. With SIGTERM at its default, the hook's stop waits for
the connections the process took; done inside the signal handler, on the main thread,
that wait would stop the very loop that must finish them: the answer to a request in
flight would never be written, and the process would linger until zocket's SIGKILL. So
the wait runs in a thread of its own, started when waitress is imported (never in a
signal handler), and the handler returns at once: the loop finishes what was taken (it
takes nothing more), then the thread has the process die of the signal.
"""

import os
import queue
import threading
import time

import _zocket_adapters
import _zocket_signals


class _Waitress(_zocket_adapters.Adapter):
    order = 20  # before the generic adapters: waitress's loop is no asyncio loop

    def __init__(self):
        self._pid = os.getpid()
        self._requests = queue.SimpleQueue()
        threading.Thread(target=self._wait, name="zocket-waitress-stop", daemon=True).start()

    def finish(self, signum, deadline):
        if os.getpid() != self._pid:  # a fork child: the thread did not come along
            return False
        self._requests.put((signum, deadline))
        return True

    def _wait(self):
        signum, deadline = self._requests.get()
        while _zocket_adapters.busy() and time.monotonic() < deadline:
            time.sleep(_zocket_adapters.POLL)
        _zocket_signals.die_from_thread(signum)


_zocket_adapters.register(_Waitress())
