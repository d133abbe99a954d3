"""Process trees on Linux: who descends from whom, and ending all of them.

The supervisor makes itself a child subreaper, so a process whose parent exits (a
run worker whose code server stopped) is re-parented to the supervisor instead of
init, and still counts as "left running" until it is ended. The tree, command lines
and start times come from psutil (one library for what ``/proc`` spells differently
on each kernel); the prctl calls are Linux's own.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import psutil

from crystal_pipeline.files import process_alive

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process (Linux >= 3.4); False elsewhere."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(sig: int):
    """A ``preexec_fn`` that makes the child receive ``sig`` when the supervisor dies,
    even by SIGKILL, so a crashed supervisor does not leave a server behind."""

    def preexec() -> None:
        _prctl(_PR_SET_PDEATHSIG, int(sig))

    return preexec


def descendants(pid: int, *, include_zombies: bool = False) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), parents first (psutil's
    recursive children, a breadth-first walk); empty when ``pid`` is gone."""
    try:
        found = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for child in found:
        try:
            if include_zombies or child.status() != psutil.STATUS_ZOMBIE:
                out.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    return process_alive(pid)


def command_line(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline()).strip()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def running_for_s(pid: int) -> float | None:
    """Seconds since ``pid`` started, None when it is gone or hidden."""
    try:
        return max(0.0, time.time() - psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def reap_orphans(keep: set[int]) -> None:
    """Collect the exit status of re-parented children that ended (they would stay
    zombies otherwise); children in ``keep`` belong to a ``Popen`` that reaps its own."""
    for pid in descendants(os.getpid(), include_zombies=True):
        if pid in keep:
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_gone(pids: list[int], timeout_s: float, *, keep: set[int] = frozenset()) -> list[int]:
    """Wait until none of ``pids`` is alive (reaping as we go); return those still alive."""
    deadline = time.monotonic() + timeout_s
    while True:
        reap_orphans(set(keep))
        alive = [p for p in pids if is_alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def end_processes(pids: list[int], *, grace_s: float, first: int = signal.SIGTERM,
                  keep: set[int] = frozenset()) -> list[int]:
    """Send ``first``, wait ``grace_s``, then SIGKILL the rest; returns the pids that needed SIGKILL."""
    signal_all(pids, first)
    stubborn = wait_gone(pids, grace_s, keep=keep)
    if stubborn:
        signal_all(stubborn, signal.SIGKILL)
        wait_gone(stubborn, 10, keep=keep)
    return stubborn
