"""Run a batch producer (data loading and the model's forward pass) in a background thread.

PIL decoding and torch operators release the GIL, so while the caller accumulates the statistics of one batch
the next batches are loaded and run: calibration and evaluation then cost little more than a plain inference
pass. Order, errors and early exits are those of the plain loop. ::

    for logits, batch in prefetched(run_model(model, loader), depth=1):
        ...
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE, _FAILED = object(), object()


def prefetched(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """The items of ``items`` in order, produced by a daemon thread at most ``depth`` items ahead (``depth`` 0:
    the plain loop). An exception of the producer is raised here; leaving the loop early stops the producer."""
    if depth < 1:
        yield from items
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((None, item)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001  (re-raised in the consumer)
            put((_FAILED, exc))

    thread = threading.Thread(target=produce, name="segcal-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            tag, item = ready.get()
            if tag is _DONE:
                return
            if tag is _FAILED:
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
