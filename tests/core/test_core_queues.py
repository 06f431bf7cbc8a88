import threading

import pytest

from edge.queues import Closed, LeakyQueue


def test_put_never_blocks_and_drops_oldest():
    q = LeakyQueue(2)
    for i in range(5):
        q.put(i)
    assert q.dropped == 3 and q.put_count == 5
    assert [q.get(0), q.get(0)] == [3, 4]
    with pytest.raises(TimeoutError):
        q.get(timeout=0.01)


def test_close_wakes_consumer_after_drain():
    q = LeakyQueue(4)
    got = []

    def consume():
        try:
            while True:
                got.append(q.get(timeout=2))
        except Closed:
            got.append("closed")

    th = threading.Thread(target=consume)
    th.start()
    q.put(1)
    q.put(2)
    q.close()
    th.join(2)
    assert got == [1, 2, "closed"]
