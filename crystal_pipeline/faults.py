"""Named crash points, so tests can kill a real process at an exact step of a multi-step write.

A guard against lost models, labels or predictions is only believable if the process is
killed (SIGKILL: no ``finally``, no ``atexit``, no flush) between two steps and a plain
re-run then completes. Code that performs such a sequence calls :func:`crash_point` with a
stable name between its steps; in normal runs it costs one dictionary lookup. Tests set
``CRYSTAL_CRASH_AT=<name>`` in a child process's environment and expect it to die there
(``tests/crash_harness.py``). The names are listed in docs/reliability.md.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "CRYSTAL_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process when ``CRYSTAL_CRASH_AT`` names this point (tests only); else nothing.

    ``CRYSTAL_CRASH_AT`` may hold several names separated by commas; the first one reached kills.
    """
    wanted = os.environ.get(ENV_VAR)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
