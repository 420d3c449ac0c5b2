"""Choosing a class's bundle by its measurements and SLO (fleet/slo.py), and how `fleet deploy`
uses the choice (fleet/deploy.py `_select`). The manifests here carry measured entries in the
shape fleet/measured.py writes; the e2e tier (test_deploy_slo.py) measures real ones."""

from __future__ import annotations

import json

import pytest

from fleet.deploy import _select
from fleet.slo import Slo, SloError, candidates_of, choose, render


def _measured(p50: float, p95: float, rss: float, energy: float | None = None) -> dict:
    work = {"latency_p50_ms": {"mean": p50, "std": 0.0, "n": 3},
            "latency_p95_ms": {"mean": p95, "std": 0.0, "n": 3},
            "images_per_s": {"mean": 1e3 / p50, "std": 0.0, "n": 3}}
    if energy is None:
        work["energy_note"] = "no power sensor on this device"
    else:
        work["energy_per_item_j"] = {"mean": energy, "std": 0.0, "n": 3}
    return {"repeats": 3, "workloads": {"batch_1": work},
            "peak_rss_mb": {"mean": rss, "std": 0.0, "n": 3}}


def _bundle(root, name, *, precision="fp32", size=4_000_000, fid=10.0, extractor="e1",
            measured=None):
    (root / name).mkdir()
    manifest = {"name": name, "precision": precision,
                "files": {"model.onnx": {"sha256": "0" * 64, "size": size}},
                "metrics": {"quality": {"fid": fid},
                            "fid_extractor": {"weights_sha256": extractor},
                            **({"measured": measured} if measured else {})}}
    (root / name / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def bundles(tmp_path):
    """A reference and two variants, measured on two `pi` devices: the int8 variant is the
    fastest on pi-a but the slowest on pi-b; the pruned one loses quality."""
    _bundle(tmp_path, "gen", fid=10.0, measured={"pi": {
        "pi-a": _measured(20, 30, 90, 0.5), "pi-b": _measured(21, 31, 91, 0.52)}})
    _bundle(tmp_path, "gen-int8", precision="int8", size=1_000_000, fid=11.0, measured={"pi": {
        "pi-a": _measured(10, 15, 60, 0.3), "pi-b": _measured(40, 60, 61, 0.9)}})
    _bundle(tmp_path, "gen-pruned", size=1_500_000, fid=25.0, measured={"pi": {
        "pi-a": _measured(12, 18, 70, 0.2), "pi-b": _measured(13, 19, 71, 0.25)}})
    return tmp_path


CANDIDATES = {"gen": ["gen", "gen-int8", "gen-pruned"]}


def test_the_worst_device_of_the_class_decides(bundles):
    # Latency: gen-int8 is fastest on pi-a, but pi-b's 40 ms counts; gen-pruned wins at 13 ms.
    sel = choose("pi", CANDIDATES, Slo.parse({"objective": "latency"}, "pi"), bundles)
    assert sel.chosen == {"gen": "gen-pruned"}
    verdicts = {r.figures.bundle: r.verdict for r in sel.rows}
    assert verdicts["gen-pruned"] == "chosen: meets the SLO, lowest p50 latency"
    assert verdicts["gen-int8"] == "meets the SLO; p50 latency 40 > 13 of gen-pruned"
    table = render(sel)
    assert "gen-pruned" in table and "fid 25 (+15)" in table and "int8" in table


def test_limits_exclude_and_the_objective_ranks_the_rest(bundles):
    sel = choose("pi", CANDIDATES, Slo.parse(
        {"max_fid_increase": 5, "objective": "memory"}, "pi"), bundles)
    assert sel.chosen == {"gen": "gen-int8"}  # 61 MB beats 91 MB; pruned misses quality
    pruned = next(r for r in sel.rows if r.figures.bundle == "gen-pruned")
    assert pruned.verdict == "misses: FID increase 15 > 5"
    sel = choose("pi", CANDIDATES, Slo.parse(
        {"p95_latency_ms": 50, "objective": "energy_per_item"}, "pi"), bundles)
    assert sel.chosen == {"gen": "gen-pruned"}  # int8 misses p95 on pi-b: 60 ms > 50 ms
    assert sel.record()["candidates"][1]["verdict"] == "misses: p95 latency 60 ms > 50 ms"


def test_no_candidate_meets_the_slo_names_the_closest(bundles):
    with pytest.raises(SloError) as err:
        choose("pi", CANDIDATES, Slo.parse({"p95_latency_ms": 17, "max_bundle_mb": 1.2},
                                           "pi"), bundles)
    assert str(err.value) == (
        "class pi: gen: no candidate meets the SLO; the closest, gen-pruned, misses p95 "
        "latency 19 ms > 17 ms; bundle size 1.5 MB > 1.2 MB (SLO: p95 latency <= 17 ms, "
        "bundle size <= 1.2 MB; objective: lowest p50 latency)")
    assert err.value.selection is not None  # the table is printed before the refusal


def test_unmeasured_classes_and_unknown_energy_are_refused(bundles):
    with pytest.raises(SloError, match=r"^class jetson: none of its candidate bundles has been "
                                       r"measured on it: `make bench DEVICE=jetson`") as err:
        choose("jetson", CANDIDATES, Slo.parse({}, "jetson"), bundles)
    assert err.value.selection is None
    _bundle(bundles, "other", measured={"pi": {"pi-a": _measured(5, 6, 50)}})
    with pytest.raises(SloError, match=r"the closest, other, misses energy per item unknown "
                                       r"\(no power sensor on this device\)"):
        choose("pi", {"other": ["other"]}, Slo.parse({"objective": "energy_per_item"}, "pi"),
               bundles)


def test_quality_only_compares_when_measured_the_same_way(bundles):
    _bundle(bundles, "gen-alien", fid=9.0, extractor="e2",
            measured={"pi": {"pi-a": _measured(5, 6, 50)}})
    with pytest.raises(SloError, match="gen-alien's fid and gen's were not measured the same"):
        choose("pi", {"gen": ["gen", "gen-alien"]}, Slo.parse({}, "pi"), bundles)
    with pytest.raises(SloError, match=r"candidate bundle 'nope' is not built"):
        choose("pi", {"gen": ["gen", "nope"]}, Slo.parse({}, "pi"), bundles)
    _bundle(bundles, "gen-odd", fid="high", measured={"pi": {"pi-a": _measured(5, 6, 50)}})
    with pytest.raises(SloError, match=r"gen-odd/manifest.json: its metrics cannot be read "
                                       r"\(ValueError"):
        choose("pi", {"gen": ["gen", "gen-odd"]}, Slo.parse({}, "pi"), bundles)


@pytest.mark.parametrize("raw, message", [
    ({"objective": "speed"}, "objective 'speed' is not one of latency, energy_per_item, memory"),
    ({"p99_latency_ms": 5}, "unknown limit 'p99_latency_ms'"),
    ({"p95_latency_ms": -1}, "p95_latency_ms must be a number >= 0, not -1"),
    ({"max_peak_rss_mb": True}, "max_peak_rss_mb must be a number >= 0, not True"),
    ({"max_bundle_mb": "big"}, "max_bundle_mb must be a number >= 0, not 'big'"),
    ([250], "must be a mapping of limits and an objective"),
])
def test_a_bad_slo_is_one_line(raw, message):
    with pytest.raises(SloError, match=message):
        Slo.parse(raw, "pi")


def test_candidates_must_be_lists_of_names():
    assert candidates_of({}, "pi") == {}
    assert candidates_of({"edgegen_candidates": {"m": ["a", "b", "a"]}}, "pi") == {"m": ["a", "b"]}
    for bad in (["a"], {"m": []}, {"m": "a"}, {"m": [1]}, {"m": ["../etc"]}):
        with pytest.raises(SloError, match="edgegen_candidates must map each model"):
            candidates_of({"edgegen_candidates": bad}, "pi")


def test_deploy_serves_the_choice_and_ships_every_candidate(bundles):
    settings = {"edgegen_bundles": ["gen", "extra"], "edgegen_candidates": CANDIDATES,
                "edgegen_slo": {"max_fid_increase": 5, "objective": "memory"}}
    lines = []
    extra, record = _select("pi", settings, bundles, False, False, lines.append)
    assert extra == {"edgegen_bundles": ["gen-int8", "extra"],
                     "edgegen_candidate_bundles": ["gen", "gen-int8", "gen-pruned"]}
    assert record["chosen"] == {"gen": "gen-int8"} and record["served"] == ["gen-int8", "extra"]
    assert lines[0].startswith("class pi: SLO FID increase <= 5; objective: lowest peak RSS")
    # Unmeasured: refused unless allowed, then the declared default is served.
    with pytest.raises(SloError, match="make bench DEVICE=jetson"):
        _select("jetson", settings, bundles, False, False, lines.append)
    extra, record = _select("jetson", settings, bundles, True, False, lines.append)
    assert "edgegen_bundles" not in extra and record == {
        "class": "jetson", "chosen": None, "unmeasured": True, "served": ["gen", "extra"]}
    # Bundles named on the command line (-e edgegen_bundles=...) win over the choice.
    extra, record = _select("pi", settings, bundles, False, True, lines.append)
    assert record is None and "edgegen_bundles" not in extra
    # A class without candidates is deployed as it always was.
    assert _select("pi", {"edgegen_bundles": ["gen"]}, bundles, False, False, print) == ({}, None)
