"""Power sensor backends. Each reads one device family's interface, in base units (watts).

Every backend takes `root` (default "/"), so tests run it against recorded sysfs trees, and
says what it measures (`scope`): a module's input rail is not wall power, and a sum of PMIC
rails is not either. Paths and units (kernel ABI docs, jetson_stats, energymon):
- Jetson, JetPack 4 (L4T `ina3221x` IIO): rail_name_N, in_power{N}_input mW, N from 0.
- Jetson, JetPack 5/6 (mainline `ina3221` hwmon): in{N}_label, in{N}_input mV, curr{N}_input mA,
  N from 1, no power file; in7 is a shunt-voltage sum, skipped. Total: POM_5V_IN or VDD_IN when
  present (the module input), else the sum of rails.
- Generic hwmon: power*_input µW, or in*_input mV x curr*_input mA per channel.
- Intel/AMD RAPL: energy_uj, a µJ counter wrapping at max_energy_range_uj (package zones only).
- Android power_supply battery: current_now µA (negative while discharging per the ABI; some
  vendors report mA or flip the sign), voltage_now µV; only meaningful while discharging.
- Raspberry Pi 5: `vcgencmd pmic_read_adc` lines `<RAIL>_A current(i)=xA` / `<RAIL>_V volt(i)=yV`.
- NVIDIA discrete GPUs: NVML (nvidia-ml-py) nvmlDeviceGetPowerUsage, milliwatts per GPU board.
"""

from __future__ import annotations

import re
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


NO_SENSOR = "no power sensor on this device"  # said wherever a figure needs a sensor


class SensorError(Exception):
    """A sensor that exists but cannot be read (permissions, a vanished device, bad output)."""


@dataclass(frozen=True)
class Reading:
    watts: float | None = None  # instantaneous power, for power sensors
    joules: float | None = None  # cumulative energy, for counter sensors (RAPL)
    rails: dict[str, float] = field(default_factory=dict)  # per-rail watts where known


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SensorError(f"cannot read {path}: {exc.strerror or exc}") from None


def _number(path: Path) -> float:
    text = _read(path)
    try:
        return float(text)
    except ValueError:
        raise SensorError(f"{path} holds {text!r}, not a number") from None


class PowerSensor(ABC):
    name = "base"
    scope = ""
    counter = False  # True: read() gives cumulative joules, the sampler differentiates

    def __init__(self, root: str | Path = "/"):
        self.root = Path(root)

    @classmethod
    @abstractmethod
    def present(cls, root: Path) -> bool:
        """Whether this backend's interface exists under `root`."""

    @abstractmethod
    def read(self) -> Reading:
        """One reading: watts (power sensors) or cumulative joules (counters)."""

    def describe(self) -> dict:
        return {"sensor": self.name, "scope": self.scope}


# --------------------------------------------------------------------------- Jetson INA3221

_TOTAL_RAILS = ("POM_5V_IN", "VDD_IN")  # module input: never add other rails to it


def _jetson_total(rails: dict[str, float]) -> float:
    for name in _TOTAL_RAILS:
        if name in rails:
            return rails[name]
    return sum(rails.values())


class _JetsonSensor(PowerSensor):
    """INA3221 devices found by glob (the hwmonN / iio:deviceN numbers vary by board)."""

    pattern = ""

    @classmethod
    def present(cls, root: Path) -> bool:
        return any(root.glob(cls.pattern))

    @staticmethod
    @abstractmethod
    def rails(device: Path) -> dict[str, float]:
        """Watts per named rail of one device directory."""

    def read(self) -> Reading:
        rails = {}
        for device in sorted(self.root.glob(self.pattern)):
            rails.update(self.rails(device))
        return Reading(watts=_jetson_total(rails), rails=rails)


class JetsonIIOSensor(_JetsonSensor):
    """JetPack 4: L4T ina3221x IIO devices, channels from 0, power files in mW."""

    name = "jetson-ina3221-iio"
    scope = "module input rail (POM_5V_IN) or the sum of INA3221 rails; carrier board excluded"
    pattern = "sys/bus/i2c/drivers/ina3221x/*/iio:device*"

    @staticmethod
    def rails(device: Path) -> dict[str, float]:
        rails = {}
        for name_file in sorted(device.glob("rail_name_*")):
            n = name_file.name.rsplit("_", 1)[1]
            power = device / f"in_power{n}_input"
            if power.exists():
                rails[_read(name_file)] = _number(power) / 1e3  # mW
            else:
                rails[_read(name_file)] = (_number(device / f"in_voltage{n}_input") / 1e3
                                           * _number(device / f"in_current{n}_input") / 1e3)
        return rails


class JetsonHwmonSensor(_JetsonSensor):
    """JetPack 5/6: mainline ina3221 hwmon devices; P = V x I per labelled channel."""

    name = "jetson-ina3221-hwmon"
    scope = "module input rail (VDD_IN) or the sum of INA3221 rails; carrier board excluded"
    pattern = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"

    @staticmethod
    def rails(device: Path) -> dict[str, float]:
        rails = {}
        for label in sorted(device.glob("in*_label")):
            n = label.name[2:-len("_label")]
            curr = device / f"curr{n}_input"
            name = _read(label)
            if not curr.exists() or name.upper() == "NC":  # in7: shunt sum; NC: unused
                continue
            rails[name] = _number(device / f"in{n}_input") / 1e3 * _number(curr) / 1e3
        return rails


# --------------------------------------------------------------------------- generic hwmon


class HwmonSensor(PowerSensor):
    """Any hwmon chip with power*_input (µW), or in*/curr* pairs (mV x mA)."""

    name = "hwmon"
    scope = "sum of the hwmon power channels found (what they cover depends on the board)"
    pattern = "sys/class/hwmon/hwmon*"

    @classmethod
    def _channels(cls, root: Path) -> dict[str, Callable[[], float]]:
        channels = {}
        for chip in sorted(root.glob(cls.pattern)):
            chip_name = _read(chip / "name") if (chip / "name").exists() else chip.name
            if chip_name == "ina3221":
                continue  # the Jetson backend reads it with its total-rail rule
            for power in sorted(chip.glob("power*_input")):
                n = power.name[5:-len("_input")]
                label = chip / f"power{n}_label"
                key = f"{chip_name}/{_read(label) if label.exists() else 'power' + n}"
                channels[key] = lambda p=power: _number(p) / 1e6
            if not any(chip.glob("power*_input")):
                for volt in sorted(chip.glob("in*_input")):
                    n = volt.name[2:-len("_input")]
                    curr = chip / f"curr{n}_input"
                    if curr.exists():
                        label = chip / f"in{n}_label"
                        key = f"{chip_name}/{_read(label) if label.exists() else 'in' + n}"
                        channels[key] = (lambda v=volt, c=curr:
                                         _number(v) / 1e3 * _number(c) / 1e3)
        return channels

    @classmethod
    def present(cls, root: Path) -> bool:
        return bool(cls._channels(root))

    def read(self) -> Reading:
        rails = {key: read() for key, read in self._channels(self.root).items()}
        return Reading(watts=sum(rails.values()), rails=rails)


# --------------------------------------------------------------------------- RAPL


class RaplSensor(PowerSensor):
    """Intel/AMD RAPL package energy counters (µJ), summed over packages; wraps handled."""

    name = "rapl"
    scope = "CPU package(s): cores, caches, uncore; not DRAM (on most parts) or the board"
    counter = True
    pattern = "sys/class/powercap/intel-rapl:*"

    def __init__(self, root: str | Path = "/"):
        super().__init__(root)
        self.zones = [z for z in sorted(self.root.glob(self.pattern))
                      if re.fullmatch(r"intel-rapl:\d+", z.name)]  # packages, not subzones
        self._last: dict[Path, float] = {}
        self._total = 0.0

    @classmethod
    def present(cls, root: Path) -> bool:
        return any(re.fullmatch(r"intel-rapl:\d+", z.name) and (z / "energy_uj").exists()
                   for z in root.glob(cls.pattern))

    def read(self) -> Reading:
        """Cumulative joules since the first read, unwrapped per zone."""
        for zone in self.zones:
            value = _number(zone / "energy_uj")
            last = self._last.get(zone)
            if last is not None:
                delta = value - last
                if delta < 0:  # the counter wrapped at max_energy_range_uj
                    delta += _number(zone / "max_energy_range_uj")
                self._total += delta / 1e6
            self._last[zone] = value
        return Reading(joules=self._total)


# --------------------------------------------------------------------------- Android


class AndroidBatterySensor(PowerSensor):
    """Battery discharge power from /sys/class/power_supply (|I| x V while discharging)."""

    name = "android-battery"
    scope = "whole phone while on battery (screen, radios and all); nothing while charging"
    pattern = "sys/class/power_supply/*"

    def _battery(self) -> Path:
        for supply in sorted(self.root.glob(self.pattern)):
            if (supply / "type").exists() and _read(supply / "type") == "Battery" \
                    and (supply / "current_now").exists():
                return supply
        raise SensorError(f"no battery with current_now under {self.root / 'sys/class/power_supply'}")

    @classmethod
    def present(cls, root: Path) -> bool:
        try:
            cls(root)._battery()
            return True
        except SensorError:
            return False

    def read(self) -> Reading:
        battery = self._battery()
        status = _read(battery / "status") if (battery / "status").exists() else "Unknown"
        if status not in ("Discharging", "Not charging"):
            return Reading(watts=None)  # on the charger the battery says nothing about load
        current = abs(_number(battery / "current_now"))
        # Kernel ABI is µA; some vendors report mA. A phone draws 0.05-5 A, so a value below
        # 20,000 can only be mA (20 mA in µA would be far below any running phone).
        amps = current / 1e3 if current < 20_000 else current / 1e6
        volts = _number(battery / "voltage_now") / 1e6
        return Reading(watts=amps * volts, rails={battery.name: amps * volts})


# --------------------------------------------------------------------------- Raspberry Pi 5

_PMIC_LINE = re.compile(r"^\s*(?P<rail>\S+)_(?P<kind>[AV])\s+\w+\(\d+\)=(?P<value>[-\d.eE+]+)[AV]\s*$")


def parse_pmic(text: str) -> dict[str, float]:
    """`vcgencmd pmic_read_adc` output -> watts per rail that has both current and voltage."""
    amps, volts = {}, {}
    for line in text.splitlines():
        match = _PMIC_LINE.match(line)
        if match:
            (amps if match["kind"] == "A" else volts)[match["rail"]] = float(match["value"])
    return {rail: amps[rail] * volts[rail] for rail in sorted(amps) if rail in volts}


class Pi5PmicSensor(PowerSensor):
    """Raspberry Pi 5 PMIC ADC via `vcgencmd pmic_read_adc` (needs the video group)."""

    name = "rpi5-pmic"
    scope = "sum of Pi 5 PMIC rails (V x I); not wall power: EXT5V has no current reading"

    def __init__(self, root: str | Path = "/", runner: Callable[[], str] | None = None):
        super().__init__(root)
        self.runner = runner or self._vcgencmd

    @staticmethod
    def _vcgencmd() -> str:
        try:
            out = subprocess.run(["vcgencmd", "pmic_read_adc"], capture_output=True, text=True,
                                 timeout=2)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SensorError(f"vcgencmd pmic_read_adc failed: {exc}") from None
        if out.returncode != 0:
            raise SensorError(f"vcgencmd pmic_read_adc failed: {out.stderr.strip()}")
        return out.stdout

    @classmethod
    def present(cls, root: Path) -> bool:
        model = root / "proc/device-tree/model"
        return model.exists() and "Raspberry Pi 5" in model.read_text(errors="replace")

    def read(self) -> Reading:
        rails = parse_pmic(self.runner())
        if not rails:
            raise SensorError("vcgencmd pmic_read_adc printed no rail with current and voltage")
        return Reading(watts=sum(rails.values()), rails=rails)


# --------------------------------------------------------------------------- NVML


class NvmlSensor(PowerSensor):
    """NVIDIA GPU board power through NVML (the library nvidia-smi uses), summed over GPUs.

    A library, not a sysfs tree: present only on the real root, with the NVIDIA driver loaded
    (/proc/driver/nvidia/version) and nvidia-ml-py importable. `nvml` lets tests pass a replay
    of the calls used here.
    """

    name = "nvml"
    scope = "GPU board power (NVML), summed over GPUs; not the host CPU or wall power"

    def __init__(self, root: str | Path = "/", nvml=None):
        super().__init__(root)
        if nvml is None:
            import pynvml as nvml  # nvidia-ml-py
        self.nvml = nvml
        try:
            nvml.nvmlInit()
            self.handles = [(i, nvml.nvmlDeviceGetHandleByIndex(i))
                            for i in range(nvml.nvmlDeviceGetCount())]
        except nvml.NVMLError as exc:
            raise SensorError(f"NVML: {exc}") from None
        if not self.handles:
            raise SensorError("NVML found no GPU")

    @classmethod
    def present(cls, root: Path) -> bool:
        if Path(root).resolve() != Path("/") or not Path("/proc/driver/nvidia/version").exists():
            return False
        try:
            import pynvml  # noqa: F401
        except ImportError:
            return False
        return True

    def read(self) -> Reading:
        rails = {}
        try:
            for index, handle in self.handles:
                rails[f"gpu{index}"] = self.nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # mW
        except self.nvml.NVMLError as exc:
            raise SensorError(f"NVML power reading failed: {exc}") from None
        return Reading(watts=sum(rails.values()), rails=rails)


# --------------------------------------------------------------------------- detection

BACKENDS: dict[str, type[PowerSensor]] = {
    b.name: b for b in (JetsonHwmonSensor, JetsonIIOSensor, Pi5PmicSensor, NvmlSensor,
                        RaplSensor, HwmonSensor, AndroidBatterySensor)
}


def detect(root: str | Path = "/", preferred: str = "auto") -> PowerSensor | None:
    """The named backend, or with "auto" the first present in BACKENDS order; None if none."""
    root = Path(root)
    if preferred == "none":
        return None
    if preferred != "auto":
        if preferred not in BACKENDS:
            raise SensorError(f"unknown power sensor {preferred!r}; known: "
                              f"{sorted(BACKENDS)} (or auto, none)")
        backend = BACKENDS[preferred]
        if not backend.present(root):
            raise SensorError(f"power sensor {preferred!r} is not present under {root}")
        return backend(root)
    for backend in BACKENDS.values():
        try:
            if backend.present(root):
                return backend(root)
        except (OSError, SensorError):
            continue
    return None
