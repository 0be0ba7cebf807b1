"""What the load benchmark's processes use, read from Linux ``/proc``: CPU seconds of process
trees, resident memory (VmRSS) and its high-water mark (VmHWM), per role (each server process,
the proxy, the worker, the clients), sampled during the window."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds) of every living process."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def descendants(pid: int, procs: dict[int, tuple[int, float]] | None = None) -> set[int]:
    """A process and its living descendants."""
    procs = processes() if procs is None else procs
    children: dict[int, list[int]] = {}
    for child, (parent, _) in procs.items():
        children.setdefault(parent, []).append(child)
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo += children.get(p, [])
    return out


def marked(marker: str) -> set[int]:
    """Processes whose environment holds ``marker`` (Chromium's renderers are re-parented away
    from the browser that started them, but they inherit its environment)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    out.add(int(entry.name))
            except OSError:
                continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its living descendants."""
    procs = processes()
    return sum(procs[p][1] for p in descendants(pid, procs) if p in procs)


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a process in KiB; None when it is gone (or a kernel thread)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            found[line[:5]] = int(line.split()[1])
    return (found["VmRSS"], found["VmHWM"]) if len(found) == 2 else None


class ProcessMeter:
    """CPU and memory per role during the window.

    ``roots`` maps a role ("server", "s1", "proxy", "worker") to the pid whose process tree it is;
    the clients are this process's tree (and processes carrying ``client_marker``) minus the roles.
    A process keeps its CPU share after it exits; one born during the window counts all of its CPU.
    """

    def __init__(self, roots: Mapping[str, int], *, me: int | None = None, client_marker: str | None = None) -> None:
        self.roots = dict(roots)
        self.me = os.getpid() if me is None else me
        self.client_marker = client_marker
        self.samples: list[dict[str, Any]] = []
        self._first_cpu: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}  # pid -> (role, CPU seconds when last seen)
        self._hwm: dict[int, tuple[str, int]] = {}  # pid -> (role, VmHWM KiB when last seen)

    def sample(self) -> dict[str, Any]:
        """One reading: time, CPU seconds per role since the first reading, resident MiB per role."""
        procs = processes()
        owned: dict[str, set[int]] = {role: descendants(pid, procs) for role, pid in self.roots.items()}
        taken = set().union(*owned.values()) if owned else set()
        clients = descendants(self.me, procs) | (marked(self.client_marker) if self.client_marker else set())
        owned["clients"] = clients - taken
        rss: dict[str, float] = {}
        for role, pids in owned.items():
            rss[role] = 0.0
            for p in pids & procs.keys():
                self._first_cpu.setdefault(p, procs[p][1] if not self.samples else 0.0)
                self._last[p] = (role, procs[p][1])
                mem = memory_kib(p) if role != "clients" else None
                if mem:
                    rss[role] += mem[0] / 1024
                    self._hwm[p] = (role, mem[1])
        cpu = dict.fromkeys(owned, 0.0)
        for p, (role, seconds) in self._last.items():
            cpu[role] = cpu.get(role, 0.0) + seconds - self._first_cpu[p]
        out = {"t": time.perf_counter(), "cpu": cpu, "rss_mib": rss}
        self.samples.append(out)
        return out

    def report(self) -> dict[str, dict[str, float | None]]:
        """Per role: cores (CPU seconds over the wall seconds between the first and last reading),
        resident MiB at the first and the last reading, and the peak: the sum of the kernel's
        high-water marks (VmHWM) of the role's processes (exact for a one-process role)."""
        if not self.samples:
            return {}
        first, last = self.samples[0], self.samples[-1]
        wall = last["t"] - first["t"]
        peak: dict[str, float] = {}
        for role, kib in self._hwm.values():
            peak[role] = peak.get(role, 0.0) + kib / 1024
        return {
            role: {
                "cores": last["cpu"][role] / wall if wall > 0 else None,
                "cpu_s": last["cpu"][role],
                "rss_start_mib": first["rss_mib"].get(role) if role != "clients" else None,
                "rss_end_mib": last["rss_mib"].get(role) if role != "clients" else None,
                "peak_rss_mib": peak.get(role) if role != "clients" else None,
            }
            for role in last["cpu"]
        }
