"""Progress of long loops: a rich bar on a terminal, plain log lines otherwise (output redirected to a
file, a batch scheduler), so long jobs are never silent.

Log lines go to standard error, at most one per :data:`LOG_EVERY_SECONDS` and at every tenth of the work,
each with the count, the rate and the estimated time left.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
LOG_EVERY_SECONDS = 30.0
LOG_FRACTION = 0.1


def interactive() -> bool:
    """Whether standard error is a terminal (rich bars) rather than a log file (plain lines)."""
    return Console(stderr=True).is_terminal


def duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def log_line(message: str) -> None:
    """One plain progress line on standard error, flushed at once."""
    print(message, file=sys.stderr, flush=True)


class RateLog:
    """Decides when a plain progress line is due, and writes it: ``what: k/N (p%), r/s, eta t``."""

    def __init__(self, description: str, total: int | None, unit: str = "it") -> None:
        self.description, self.total, self.unit = description, total, unit
        self.start = self.last_time = time.monotonic()
        self.last_done = 0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        step = max(1, int(LOG_FRACTION * self.total)) if self.total else None
        due = force or now - self.last_time >= LOG_EVERY_SECONDS or (step is not None and done - self.last_done >= step)
        if not due:
            return
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.description}: {done}" + (f"/{self.total} ({100 * done / self.total:.0f}%)" if self.total
                                                  else ""), f"{rate:.2f} {self.unit}/s", f"elapsed {duration(elapsed)}"]
        if self.total and rate > 0 and done < self.total:
            parts.append(f"eta {duration((self.total - done) / rate)}")
        log_line(", ".join(parts))
        self.last_time, self.last_done = now, done


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` showing progress labelled ``description``: a rich bar on a terminal, log lines else."""
    if not enabled:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not interactive():
        log = RateLog(description, total)
        done = 0
        for item in items:
            yield item
            done += 1
            log.update(done, force=done == total)
        if done != total:
            log.update(done, force=True)
        return
    columns = (TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
