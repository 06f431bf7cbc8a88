"""Bounded, leaky queues between live stages: latency never builds up, drops are counted."""
from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """The producer closed the queue and it is empty."""


class LeakyQueue(Generic[T]):
    """`put` never blocks: when full, the oldest item is dropped and counted."""

    def __init__(self, maxsize: int = 2, name: str = "queue"):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.name = name
        self._items: collections.deque[T] = collections.deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.put_count = 0

    def put(self, item: T) -> T | None:
        """Add an item; returns the dropped oldest item, if any."""
        with self._cond:
            dropped = None
            if len(self._items) >= self._maxsize:
                dropped = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T:
        """Next item; raises `Closed` once closed and drained, `TimeoutError` after `timeout`."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                raise TimeoutError(self.name)
            if self._items:
                return self._items.popleft()
            raise Closed(self.name)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
