"""Background sampling at a fixed rate, idle baseline, and energy over a time window.

The paper's method: sample the sensor at 10 Hz, measure the idle baseline first, and report a
request's energy as the integral of (power - baseline) over its window (trapezoid rule, with
the window's ends interpolated between samples). Counter sensors (RAPL) are turned into power
by differencing consecutive readings.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import deque
from typing import Callable

from .sensors import PowerSensor, SensorError

log = logging.getLogger(__name__)


class PowerSampler:
    def __init__(self, sensor: PowerSensor, hz: float = 10.0, window_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic):
        if hz <= 0:
            raise ValueError(f"sampling rate must be > 0 Hz, got {hz}")
        self.sensor, self.period, self.clock = sensor, 1.0 / hz, clock
        self.samples: deque[tuple[float, float]] = deque(maxlen=int(window_s * hz) + 1)
        self.baseline_w = 0.0
        self.errors = 0
        self._last_counter: tuple[float, float] | None = None  # (t, joules) for counters
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # called after each recorded sample with (watts, joules since the previous, rails)
        self.on_sample: Callable[[float, float, dict], None] | None = None

    # ------------------------------------------------------------------ sampling

    def sample(self) -> float | None:
        """Take one reading now and record it; returns watts (None when not measurable)."""
        t = self.clock()
        try:
            reading = self.sensor.read()
        except SensorError as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning("power sensor %s: %s (%d errors)", self.sensor.name, exc, self.errors)
            return None
        watts, rails = reading.watts, reading.rails
        if self.sensor.counter:
            last, self._last_counter = self._last_counter, (t, reading.joules)
            if last is None or t <= last[0]:
                return None
            watts = (reading.joules - last[1]) / (t - last[0])
        if watts is not None:
            with self._lock:
                previous = self.samples[-1] if self.samples else None
                self.samples.append((t, watts))
            if self.on_sample is not None:
                joules = (t - previous[0]) * (watts + previous[1]) / 2 if previous else 0.0
                self.on_sample(watts, joules, rails)
        return watts

    def start(self) -> "PowerSampler":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="edgegen-power", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        next_at = self.clock()
        while not self._stop.is_set():
            self.sample()
            next_at += self.period
            delay = next_at - self.clock()
            if delay < 0:  # fell behind (a slow sensor): skip ahead, do not burst
                next_at, delay = self.clock(), 0
            self._stop.wait(delay)

    # ------------------------------------------------------------------ analysis

    def measure_baseline(self, seconds: float) -> float:
        """Idle power: the mean of the samples taken over the next `seconds` (sampler running)."""
        start = self.clock()
        self._stop.wait(seconds) if self._thread else self._sample_for(seconds)
        window = self.window(start, self.clock())
        if not window:
            raise SensorError(f"no power samples from {self.sensor.name} in {seconds} s")
        self.baseline_w = sum(w for _, w in window) / len(window)
        return self.baseline_w

    def _sample_for(self, seconds: float) -> None:
        end = self.clock() + seconds
        while self.clock() < end:
            self.sample()
            time.sleep(self.period)

    def _snapshot(self) -> tuple[list[tuple[float, float]], list[float]]:
        """The samples and their times, copied once under the lock."""
        with self._lock:
            samples = list(self.samples)
        return samples, [t for t, _ in samples]

    def window(self, t0: float, t1: float) -> list[tuple[float, float]]:
        samples, times = self._snapshot()
        return samples[bisect.bisect_left(times, t0):bisect.bisect_right(times, t1)]

    @staticmethod
    def _power_at(samples: list[tuple[float, float]], times: list[float], t: float) -> float:
        """Power at time t, linearly interpolated (held constant beyond the samples)."""
        i = bisect.bisect_left(times, t)
        if i == 0:
            return samples[0][1]
        if i == len(samples):
            return samples[-1][1]
        (ta, wa), (tb, wb) = samples[i - 1], samples[i]
        return wa + (wb - wa) * (t - ta) / (tb - ta) if tb > ta else wb

    def energy(self, t0: float, t1: float, above_baseline: bool = True) -> float | None:
        """Joules between t0 and t1 (minus baseline x duration by default).

        Power inside the window comes from the samples in it, and at its ends from
        interpolation between neighbours. A window shorter than the sampling period (a 2 ms
        image request at 10 Hz) therefore gets the power of the samples around it: that is
        the resolution of the method. If the newest sample is older than five periods before
        the window (sampling stalled), or sampling began after the window, the energy is
        unknown and None is returned, never a made-up zero.
        """
        if t1 <= t0:
            return 0.0
        samples, times = self._snapshot()
        if not samples or times[-1] < t0 - 5 * self.period or times[0] > t1:
            return None
        inner = samples[bisect.bisect_right(times, t0):bisect.bisect_left(times, t1)]  # t0<t<t1
        points = [(t0, self._power_at(samples, times, t0)), *inner,
                  (t1, self._power_at(samples, times, t1))]
        joules = sum((tb - ta) * (wa + wb) / 2 for (ta, wa), (tb, wb) in zip(points, points[1:]))
        return joules - self.baseline_w * (t1 - t0) if above_baseline else joules

    def describe(self) -> dict:
        return {**self.sensor.describe(), "hz": 1 / self.period, "baseline_w": self.baseline_w,
                "method": "trapezoid integral of (power - idle baseline) over the request window"}
