"""Process measurements: peak RSS of a process tree (sampled), CPU seconds from /proc."""

from __future__ import annotations

import os
import resource
import threading

import psutil

CLK_TCK = os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process's waited-for descendants so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def tree_cpu(pid: int) -> float:
    """utime+stime of pid and its live descendants, plus what their dead children used (cutime)."""
    total = 0.0
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # fields[11..14] = utime stime cutime cstime (stat fields 14-17)
            total += sum(int(x) for x in fields[11:15]) / CLK_TCK
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


class TreeSampler:
    """Samples the summed RSS of a process and its descendants every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "TreeSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                rss = root.memory_info().rss
                for c in root.children(recursive=True):
                    try:
                        rss += c.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
                self.peak_rss_mb = max(self.peak_rss_mb, rss / 2**20)
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self.interval)
