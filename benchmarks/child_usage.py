"""Run a child process and measure it alone: exit status, wall time, peak RSS.

``os.wait4`` gives the child's own usage; RUSAGE_CHILDREN would be the maximum over
every child this process ever waited for. Shared by the benchmark scripts here.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO


@dataclass(frozen=True)
class ChildRun:
    returncode: int | None  # None: killed at the time limit
    wall_s: float
    peak_mb: float
    stdout: str
    stderr: str  # empty when stderr was merged into stdout


def run_measured(
    cmd: list[str],
    env: dict[str, str],
    *,
    limit: float | None = None,
    merge_stderr: bool = False,
) -> ChildRun:
    """Run ``cmd``; with ``limit``, kill its process group after that many seconds (so a
    hang shows as one instead of stopping the benchmark)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        start_new_session=limit is not None,
    )
    chunks: dict[str, bytes] = {}

    def drain(name: str, stream: IO[bytes]) -> None:
        chunks[name] = stream.read()

    # Both pipes read at once: a child filling one while we wait on the other would hang.
    streams = [("out", proc.stdout)] + ([] if merge_stderr else [("err", proc.stderr)])
    readers = [threading.Thread(target=drain, args=s) for s in streams]
    for t in readers:
        t.start()
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        os.killpg(proc.pid, 9)

    timer = threading.Timer(limit, kill) if limit is not None else None
    if timer is not None:
        timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    if timer is not None:
        timer.cancel()
    wall = time.perf_counter() - t0
    for t in readers:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        None if killed.is_set() else proc.returncode,
        wall,
        usage.ru_maxrss / 1024,  # KiB on Linux
        chunks.get("out", b"").decode(errors="replace"),
        chunks.get("err", b"").decode(errors="replace"),
    )
