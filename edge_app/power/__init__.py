"""Power sensors and per-request energy (the paper's method): sample the best available sensor
at 10 Hz, subtract the idle baseline, integrate over each request window."""

from .sampler import PowerSampler
from .sensors import BACKENDS, NO_SENSOR, PowerSensor, Reading, SensorError, detect

__all__ = ["BACKENDS", "NO_SENSOR", "PowerSampler", "PowerSensor", "Reading", "SensorError",
           "detect"]
