"""What machine a benchmark ran on, named the same way in every bench's JSON lines."""

import os
import platform


def cpu_name() -> str:
    """``model name (family N)`` from /proc/cpuinfo: the family tells Zen 1 from Zen 3,
    which the bare "AMD EPYC" of a VM does not."""
    try:
        with open("/proc/cpuinfo") as handle:
            info = handle.read().splitlines()
    except OSError:
        return platform.processor() or platform.machine()

    def field(key: str) -> str:
        return next((line.split(":", 1)[1].strip() for line in info if line.startswith(key)), "?")

    return f"{field('model name')} (family {field('cpu family')})"


def describe() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"
