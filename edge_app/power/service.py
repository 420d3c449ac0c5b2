"""The server's power service: one sampler per process, its metrics, energy per request.

With no sensor the service says so (`available` is False, responses carry `energy_j: null`
and the reason), never a fake zero.
"""

from __future__ import annotations

import logging

from ..config import Config
from ..metrics import Metrics
from .sampler import PowerSampler
from .sensors import NO_SENSOR, SensorError, detect

log = logging.getLogger(__name__)


class PowerService:
    def __init__(self, config: Config, metrics: Metrics):
        self.metrics, self.sampler, self.reason = metrics, None, NO_SENSOR
        sensor = detect(config.power_root, config.power_sensor)  # SensorError: bad config
        if sensor is None:
            log.info("power: %s", NO_SENSOR)
            return
        self.sampler = PowerSampler(sensor, hz=config.power_hz)
        self.sampler.on_sample = self._export
        self.sampler.start()
        if config.power_baseline_s > 0:
            try:
                baseline = self.sampler.measure_baseline(config.power_baseline_s)
                log.info("power: %s, idle baseline %.3f W", sensor.name, baseline)
            except SensorError as exc:
                log.warning("power: no baseline (%s); energy is reported without subtraction",
                            exc)

    @property
    def available(self) -> bool:
        return self.sampler is not None

    def _export(self, watts: float, joules: float, rails: dict[str, float]) -> None:
        name = self.sampler.sensor.name
        self.metrics.power.labels(name, "total").set(watts)
        for rail, rail_watts in rails.items():
            self.metrics.power.labels(name, rail).set(rail_watts)
        self.metrics.energy.labels(name).inc(joules)

    def request_energy(self, t0: float, t1: float, model: str, endpoint: str) -> dict:
        """Timings fields for a request window (monotonic seconds)."""
        if self.sampler is None:
            return {"energy_j": None, "energy_note": self.reason}
        joules = self.sampler.energy(t0, t1)
        if joules is None:
            return {"energy_j": None, "energy_note": "no power samples in the request window"}
        self.metrics.request_energy.labels(model, endpoint).observe(max(joules, 0.0))
        return {"energy_j": round(joules, 6), "power_sensor": self.sampler.sensor.name}

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
