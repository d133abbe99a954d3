"""How every benchmark times and reports: best-of timings and one JSON line per figure.

The boxes are shared and their neighbours change from minute to minute, so a figure is
the best of several runs, and two paths compared in one run are timed interleaved (each
repeat runs every path once) so both see the same neighbours. Each JSON line carries the
one-minute load average it was taken under.
"""

import json
import os
import time
from typing import Callable, Mapping


def emit(**fields) -> None:
    """One figure as a JSON line on stdout, with the load average at the time."""
    fields.setdefault("load_avg_1min", round(os.getloadavg()[0], 2))
    print(json.dumps(fields), flush=True)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The shortest of ``repeats`` timed calls, in seconds."""
    return best_of_interleaved({"fn": fn}, repeats)["fn"]


def best_of_interleaved(paths: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The shortest time of each path over ``repeats`` rounds, every path once per round."""
    seconds = {name: float("inf") for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            seconds[name] = min(seconds[name], time.perf_counter() - t0)
    return seconds
