"""Adapter processes: one-shot roles (submit, bulk, latency, ...) and worker process groups,
with CPU seconds and resident memory read from /proc for each worker's whole process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib.stores import BENCH, SCRATCH

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class AdapterError(RuntimeError):
    """An adapter role failed; the message carries the end of its stderr."""


def run_role(python: str, module: str, env: dict[str, str], role: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run ``python -m adapters MODULE ROLE ARGS`` and return the JSON it printed last."""
    cmd = [python, "-m", "adapters", module, role, *args]
    try:
        proc = subprocess.run(cmd, cwd=BENCH, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AdapterError(f"{module} {role}: no answer within {timeout:.0f}s") from exc
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        raise AdapterError(f"{module} {role} exited {proc.returncode}:\n  " + "\n  ".join(tail))
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in the group (threads included)."""
    total = 0
    for pid in _group_members(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of `root` and all its live descendants (a server we started)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    total, seen, todo = 0, set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in ticks:
            continue
        seen.add(pid)
        total += ticks[pid]
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total / CLK_TCK


def group_rss_bytes(pgid: int) -> int:
    total = 0
    for pid in _group_members(pgid):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


class WorkerGroup:
    """K worker processes of one system, each in its own session (so we can stop exactly
    the processes we started, children included)."""

    profile_dir: Path | None = None
    """When set (run.py --profile), every worker is sampled by py-spy into <dir>/<tag>-<k>.txt."""
    syscalls_dir: Path | None = None
    """When set (run.py --syscalls), strace counts every worker's system calls and the wall time
    spent in them (`strace -c -w -f`) into <dir>/<tag>-<k>.strace."""

    def __init__(self, python: str, module: str, env: dict[str, str], count: int, concurrency: int, tag: str) -> None:
        logs = SCRATCH / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.profilers: list[subprocess.Popen[bytes]] = []
        for k in range(count):
            log = open(logs / f"{tag}-{k}.log", "wb")  # noqa: SIM115 - closed with the process
            cmd = [python, "-m", "adapters", module, "worker", "--concurrency", str(concurrency)]
            self.procs.append(
                subprocess.Popen(cmd, cwd=BENCH, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
            log.close()
        self.tag = tag

    def start_profilers(self) -> None:
        """Attach py-spy and/or strace to every worker (call once they run: the launcher execs
        the worker)."""
        for k, p in enumerate(self.procs):
            if self.profile_dir is not None:
                self.profile_dir.mkdir(parents=True, exist_ok=True)
                cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(p.pid),
                       "--subprocesses", "--nonblocking", "-r", "200", "-f", "raw",
                       "-o", str(self.profile_dir / f"{self.tag}-{k}.txt")]  # fmt: skip
                self.profilers.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if self.syscalls_dir is not None:
                self.syscalls_dir.mkdir(parents=True, exist_ok=True)
                out = self.syscalls_dir / f"{self.tag}-{k}.strace"
                cmd = ["strace", "-c", "-w", "-f", "-p", str(p.pid), "-o", str(out)]
                self.profilers.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def cpu_seconds(self) -> float:
        return sum(group_cpu_seconds(p.pid) for p in self.procs)

    def rss_bytes(self) -> int:
        return sum(group_rss_bytes(p.pid) for p in self.procs)

    def stop(self, grace: float = 10.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            # the group may outlive its leader (forked children): kill what is left of it
            if p.poll() is None or _group_members(p.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        for spy in self.profilers:  # py-spy writes its file when the sampled process ends
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(10)
