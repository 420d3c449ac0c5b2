"""Bounded admission: at most `max_concurrent` generations run, at most `max_queue` wait.

llama.cpp's server queues without bound, so an overloaded device answers everything late; here
a request beyond the queue, or one that waited longer than `queue_timeout_s`, gets 503 with a
`Retry-After` estimated from recent service times, and is counted in
`edgegen_requests_rejected_total{reason}`. Waiters are served in arrival order.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator

from .errors import Overloaded
from .metrics import Metrics


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int, queue_timeout_s: float,
                 metrics: Metrics | None = None):
        self.max_concurrent, self.max_queue = max_concurrent, max_queue
        self.queue_timeout_s = queue_timeout_s
        self.metrics = metrics
        self.active = 0
        self.waiting = 0
        self._cond = threading.Condition()
        self._service_s: deque[float] = deque(maxlen=64)  # recent generation times

    @property
    def saturated(self) -> bool:
        return self.active >= self.max_concurrent and self.waiting >= self.max_queue

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead times the mean service time,
        spread over the slots; at least 1, at most 60."""
        mean = sum(self._service_s) / len(self._service_s) if self._service_s else 1.0
        return max(1, min(60, math.ceil(mean * (self.waiting + 1) / self.max_concurrent)))

    def _reject(self, reason: str, message: str):
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()
        return Overloaded(message, self.retry_after())

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.waiting)

    def acquire(self) -> float:
        """Take a slot, waiting in the queue if needed; returns the seconds waited.
        Raises Overloaded when the queue is full or the wait runs out."""
        start = time.monotonic()
        with self._cond:
            if self.active < self.max_concurrent and self.waiting == 0:
                self.active += 1
                return 0.0
            if self.waiting >= self.max_queue:
                raise self._reject("queue_full", f"server busy: {self.active} generations "
                                   f"running and {self.waiting} waiting (the maximum)")
            self.waiting += 1
            self._set_depth()
            deadline = start + self.queue_timeout_s
            try:
                while self.active >= self.max_concurrent:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._reject("queue_timeout", f"server busy: waited "
                                           f"{self.queue_timeout_s:g} s in the queue")
                    self._cond.wait(remaining)
                self.active += 1
            finally:
                self.waiting -= 1
                self._set_depth()
        return time.monotonic() - start

    def release(self, service_s: float | None = None) -> None:
        with self._cond:
            self.active -= 1
            if service_s is not None:
                self._service_s.append(service_s)
            self._cond.notify()

    @contextmanager
    def slot(self) -> Iterator[float]:
        waited = self.acquire()
        started = time.monotonic()
        try:
            yield waited
        finally:
            self.release(time.monotonic() - started)

    def describe(self) -> dict:
        return {"active": self.active, "waiting": self.waiting,
                "max_concurrent": self.max_concurrent, "max_queue": self.max_queue}
