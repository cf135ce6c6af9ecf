"""Processes the tests start (gateways, redis-servers) die with the test run, however it ends.

Fixtures stop what they started when a test ends, and on Ctrl-C pytest runs their teardown;
a run killed harder (SIGTERM from CI, SIGKILL, a crash) runs none, and would leave
redis-servers and gateways holding ports on the box. On Linux each child asks the kernel for
SIGTERM when the thread that started it goes (prctl PR_SET_PDEATHSIG): the test process's
main thread, which lives as long as the run. Started from another thread (which may end
first) a child is left to its fixture alone.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading
from typing import Any

_PR_SET_PDEATHSIG = 1
# Looked up now, in the parent: the forked child only calls it (no loading between fork
# and exec).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen, the child ended with the test run."""
    if _prctl is not None and threading.current_thread() is threading.main_thread():
        kwargs.setdefault("preexec_fn", _die_with_parent)
    return subprocess.Popen(argv, **kwargs)
