"""Power backends against recorded sysfs trees and command output; sampling and energy."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from edge_app.power import BACKENDS, PowerSampler, PowerSensor, Reading, SensorError, detect
from edge_app.power.sensors import (AndroidBatterySensor, HwmonSensor, JetsonHwmonSensor,
                                    JetsonIIOSensor, NvmlSensor, Pi5PmicSensor, RaplSensor,
                                    parse_pmic)

from ..conftest import REPO

TREES = REPO / "tests" / "data" / "power"


def test_jetson_nano_jp4_uses_the_input_rail_not_the_sum():
    reading = JetsonIIOSensor(TREES / "jetson-nano-jp4").read()
    assert reading.rails == pytest.approx({"POM_5V_IN": 3.56, "POM_5V_GPU": 0.16,
                                           "POM_5V_CPU": 1.12})
    assert reading.watts == pytest.approx(3.56)  # not 4.84: the input rail already holds all


def test_jetson_orin_jp6_multiplies_volts_and_amps_and_skips_channel_7():
    reading = JetsonHwmonSensor(TREES / "jetson-orin-nano-jp6").read()
    assert set(reading.rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert reading.rails["VDD_CPU_GPU_CV"] == pytest.approx(5.072 * 0.410)
    assert reading.watts == pytest.approx(5.080 * 1.290)  # VDD_IN, the module total


def test_jetson_agx_orin_without_total_rail_sums_rails():
    reading = JetsonHwmonSensor(TREES / "jetson-agx-orin-jp6").read()
    assert reading.watts == pytest.approx(4.992 * 1.528 + 4.992 * 0.408 + 5.008 * 0.624)


def test_generic_hwmon_power_and_volt_amp_channels():
    reading = HwmonSensor(TREES / "hwmon-generic").read()
    assert reading.rails == pytest.approx({"amdgpu/PPT": 15.25, "ina226/in1": 6.0})
    assert reading.watts == pytest.approx(21.25)
    assert not HwmonSensor.present(TREES / "jetson-orin-nano-jp6")  # ina3221 left to Jetson


def test_rapl_counts_joules_and_handles_wrap_around(tmp_path):
    tree = shutil.copytree(TREES / "rapl", tmp_path / "rapl")
    counter = tree / "sys/class/powercap/intel-rapl:0/energy_uj"
    sensor = RaplSensor(tree)
    assert [z.name for z in sensor.zones] == ["intel-rapl:0"]  # the core subzone is not added
    assert sensor.read().joules == 0.0
    counter.write_text("262105000000\n")  # +5,000,000 µJ = 5 J
    assert sensor.read().joules == pytest.approx(5.0)
    counter.write_text("1000000\n")  # wrapped at max_energy_range_uj = 262143328850
    assert sensor.read().joules == pytest.approx(5.0 + (262143328850 - 262105000000 + 1000000) / 1e6)


@pytest.mark.parametrize("current, status, watts", [
    ("-412000", "Discharging", 0.412 * 3.912),  # kernel ABI: µA, negative on discharge
    ("412000", "Discharging", 0.412 * 3.912),   # vendors that flip the sign
    ("-412", "Discharging", 0.412 * 3.912),     # vendors that report mA
    ("-412000", "Charging", None),              # on the charger: not measurable
])
def test_android_battery_quirks(tmp_path, current, status, watts):
    tree = shutil.copytree(TREES / "android-pixel", tmp_path / "pixel")
    battery = tree / "sys/class/power_supply/battery"
    (battery / "current_now").write_text(current + "\n")
    (battery / "status").write_text(status + "\n")
    reading = AndroidBatterySensor(tree).read()
    assert reading.watts == (pytest.approx(watts) if watts is not None else None)


def test_pi5_pmic_output_parses_to_rail_watts():
    text = (TREES / "pi5" / "pmic_read_adc.txt").read_text()
    rails = parse_pmic(text)
    assert len(rails) == 12 and "EXT5V" not in rails and "BATT" not in rails  # voltage only
    assert rails["VDD_CORE"] == pytest.approx(1.54489 * 0.881136)
    reading = Pi5PmicSensor(TREES / "pi5", runner=lambda: text).read()
    assert reading.watts == pytest.approx(2.3354, abs=1e-4)  # summed by hand from the 12 rails
    with pytest.raises(SensorError, match="no rail with current and voltage"):
        Pi5PmicSensor(TREES / "pi5", runner=lambda: "error: unknown command").read()


@pytest.mark.parametrize("tree, backend", [
    ("jetson-nano-jp4", "jetson-ina3221-iio"), ("jetson-orin-nano-jp6", "jetson-ina3221-hwmon"),
    ("jetson-agx-orin-jp6", "jetson-ina3221-hwmon"), ("pi5", "rpi5-pmic"), ("rapl", "rapl"),
    ("hwmon-generic", "hwmon"), ("android-pixel", "android-battery"),
])
def test_detect_picks_the_device_backend(tree, backend):
    assert detect(TREES / tree).name == backend


def test_detect_without_sensor_says_so(tmp_path):
    assert detect(tmp_path) is None and detect(TREES / "rapl", "none") is None
    with pytest.raises(SensorError, match="unknown power sensor 'ina999'"):
        detect(tmp_path, "ina999")
    with pytest.raises(SensorError, match="'rapl' is not present under"):
        detect(tmp_path, "rapl")
    assert set(BACKENDS) == {"jetson-ina3221-iio", "jetson-ina3221-hwmon", "rpi5-pmic", "nvml",
                             "rapl", "hwmon", "android-battery"}


class ConstantPower(PowerSensor):
    """A synthetic source: a fixed number of watts (changeable), read like any sensor."""

    name, scope = "constant", "synthetic"

    def __init__(self, watts: float):
        super().__init__("/")
        self.watts = watts

    @classmethod
    def present(cls, root):
        return True

    def read(self) -> Reading:
        return Reading(watts=self.watts)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_energy_integrates_steps_with_interpolated_window_ends():
    clock, source = FakeClock(), ConstantPower(2.0)
    sampler = PowerSampler(source, hz=10, clock=clock)
    for i in range(30):  # 0.0 .. 2.9 s: 2 W until 1.0 s, 8 W after
        clock.now = i / 10
        source.watts = 2.0 if clock.now < 1.0 else 8.0
        sampler.sample()
    sampler.baseline_w = 2.0
    # window 1.0-2.0 s: 8 W all the way -> 6 J above baseline
    assert sampler.energy(1.0, 2.0) == pytest.approx(6.0)
    # window 0.5-1.5 s: 2 W to 0.9 s, ramp to 8 W at 1.0 s (sampling), then 8 W
    assert sampler.energy(0.5, 1.5, above_baseline=False) == pytest.approx(
        0.4 * 2 + 0.1 * 5 + 0.5 * 8)
    assert sampler.energy(5.0, 6.0) is None  # sampling stalled long before: unknown, not zero
    assert sampler.energy(-2.0, -1.0) is None  # before sampling began
    # a 2 ms request right after the newest sample (2.9 s, 8 W): the held reading counts
    assert sampler.energy(2.95, 2.952) == pytest.approx(0.002 * 6.0)


def test_counter_sensor_becomes_power(tmp_path):
    tree = shutil.copytree(TREES / "rapl", tmp_path / "rapl")
    counter = tree / "sys/class/powercap/intel-rapl:0/energy_uj"
    clock = FakeClock()
    sampler = PowerSampler(RaplSensor(tree), clock=clock)
    assert sampler.sample() is None  # first reading: no rate yet
    clock.now = 0.5
    counter.write_text(f"{262100000000 + 7_500_000}\n")  # 7.5 J in 0.5 s
    assert sampler.sample() == pytest.approx(15.0)


def test_constant_power_energy_is_power_times_duration_in_real_time():
    source = ConstantPower(6.0)
    sampler = PowerSampler(source, hz=10).start()
    try:
        assert sampler.measure_baseline(0.5) == pytest.approx(6.0)
        sampler.baseline_w = 0.0  # measure absolute energy of the constant source
        t0 = time.monotonic()
        time.sleep(1.0)
        t1 = time.monotonic()
        time.sleep(0.15)  # let a sample land after the window's end
        joules = sampler.energy(t0, t1)
    finally:
        sampler.stop()
    assert joules == pytest.approx(6.0 * (t1 - t0), rel=0.05)
    assert len(sampler.window(t0, t1)) >= 8  # about 10 Hz


class _NvmlReplay:
    """The NVML calls NvmlSensor makes, answering from a list of (GPU name, milliwatts) in
    NVML's units. Not a device recording (no NVIDIA GPU here): it pins the unit conversion,
    the per-GPU rails and the error path; test_nvml_on_this_machine reads the real library."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus, fail_reading=False):
        self.gpus, self.fail_reading = gpus, fail_reading

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetPowerUsage(self, handle):
        if self.fail_reading:
            raise self.NVMLError("GPU is lost")
        return self.gpus[handle][1]


def test_nvml_sums_gpu_board_power_in_watts():
    reading = NvmlSensor(nvml=_NvmlReplay([("NVIDIA H200", 74_512), ("NVIDIA H200", 81_250)])).read()
    assert reading.rails == {"gpu0": 74.512, "gpu1": 81.25}
    assert reading.watts == pytest.approx(155.762)
    with pytest.raises(SensorError, match="NVML found no GPU"):
        NvmlSensor(nvml=_NvmlReplay([]))
    with pytest.raises(SensorError, match="NVML power reading failed: GPU is lost"):
        NvmlSensor(nvml=_NvmlReplay([("NVIDIA H200", 1)], fail_reading=True)).read()
    assert not NvmlSensor.present(TREES / "rapl")  # a recorded tree never has NVML


@pytest.mark.skipif(not NvmlSensor.present(Path("/")),
                    reason="no NVIDIA driver (/proc/driver/nvidia/version) on this machine")
def test_nvml_on_this_machine():
    reading = NvmlSensor().read()
    assert reading.watts > 0 and all(r.startswith("gpu") for r in reading.rails)
