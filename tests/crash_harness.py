"""Run Python code in a child process that is SIGKILLed at a named crash point.

Used by the fault-injection tests (docs/reliability.md): ``killed_at(point, code)`` must see
the child die by SIGKILL (a point never reached is a failed test, not a pass), and
``run_clean(code)`` runs the same code again without the variable, as a user's re-run would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from crystal_pipeline.faults import ENV_VAR

REPO = Path(__file__).resolve().parents[1]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def killed_at(point: str, code: str, *, env: dict[str, str] | None = None, timeout: float = 240) -> None:
    """Run ``code`` with ``CRYSTAL_CRASH_AT=point`` and assert the child died of SIGKILL there."""
    proc = subprocess.run([sys.executable, "-c", code], env={**_env(env), ENV_VAR: point},
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, (
        f"expected SIGKILL at crash point {point!r}, got exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")


def run_clean(code: str, *, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    """Run ``code`` with no crash point; assert success and return its stdout."""
    proc = subprocess.run([sys.executable, "-c", code], env=_env(env), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, f"re-run failed (exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout
