"""What the benchmarks ran on."""

from __future__ import annotations

import os
import platform
import subprocess


def describe(psql: str | None = None, server_version: str | None = None) -> list[tuple[str, str]]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    out = [
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("memory", mem),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
    ]
    if server_version:
        out.append(("PostgreSQL", server_version))
    if psql:
        try:
            out.append(("psql", subprocess.run([psql, "--version"], capture_output=True, text=True, timeout=5).stdout.strip()))
        except OSError:
            pass
    return out
