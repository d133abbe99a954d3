"""The supervisor's process-tree helpers (psutil underneath): the tree, zombies, command lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from crystal_pipeline.service import processes


def test_descendants_list_the_tree_parents_first_and_leave_out_zombies_unless_asked():
    code = ("import subprocess, sys, time; "
            "q = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
            "print(q.pid, flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        grandchild = int(child.stdout.readline())
        deadline = time.monotonic() + 10
        while processes.is_alive(zombie.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # exited, not yet waited for: a zombie
        tree = processes.descendants(child.pid)
        assert tree == [grandchild]
        mine = processes.descendants(os.getpid())
        assert mine.index(child.pid) < mine.index(grandchild) and zombie.pid not in mine
        assert zombie.pid in processes.descendants(os.getpid(), include_zombies=True)
        assert "time.sleep(30)" in processes.command_line(grandchild)
        assert 0 <= processes.running_for_s(child.pid) < 60
        assert processes.end_processes([child.pid, grandchild], grace_s=5) == []
        assert processes.descendants(child.pid) == [] and processes.command_line(grandchild) == ""
    finally:
        for p in (child, zombie):
            p.kill()
            p.wait()
