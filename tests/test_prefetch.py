"""The background batch producer: same order, errors raised in the consumer, early exits stop the producer."""
import threading
import time

import pytest

from segcal.pipeline.prefetch import prefetched


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_items_arrive_in_order(depth):
    assert list(prefetched(iter(range(50)), depth)) == list(range(50))
    assert list(prefetched([], depth)) == []


def test_the_producer_runs_ahead_in_another_thread():
    seen = []

    def produce():
        for i in range(4):
            seen.append((i, threading.current_thread().name))
            yield i

    items = prefetched(produce(), depth=2)
    assert next(items) == 0
    deadline = time.time() + 5
    while len(seen) < 3 and time.time() < deadline:  # 0 taken, 1 and 2 queued while we wait
        time.sleep(0.01)
    assert [i for i, _ in seen] == [0, 1, 2] and {name for _, name in seen} == {"segcal-prefetch"}
    assert list(items) == [1, 2, 3]


def test_a_producer_error_is_raised_in_the_consumer_after_the_items_before_it():
    def produce():
        yield 1
        raise OSError("cannot read image 2.png")

    got = []
    with pytest.raises(OSError, match="image 2.png"):
        for item in prefetched(produce(), depth=2):
            got.append(item)
    assert got == [1]


def test_leaving_early_stops_the_producer():
    produced = []

    def produce():
        for i in range(1000):
            produced.append(i)
            yield i

    for item in prefetched(produce(), depth=2):
        if item == 3:
            break
    assert all(t.name != "segcal-prefetch" for t in threading.enumerate())
    assert len(produced) <= 3 + 1 + 2 + 1  # the items consumed, the queue and at most one in flight
