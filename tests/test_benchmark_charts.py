"""The performance page's charts: ``benchmarks/charts.py`` on the committed results.

The script runs on the committed JSON and writes valid SVG; every bar's length, spread line and
printed value are those of the JSON; the committed charts are what the script makes of the
committed JSON today (regenerate them when the run or the script changes); the page shows each
one. Plus ``benchmarks/run --scenarios`` in either case (the docs and the table say S2).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
CHARTS = ROOT / "docs" / "assets" / "charts"
PAGE = ROOT / "docs" / "explanation" / "performance.md"
SVG = "{http://www.w3.org/2000/svg}"

sys.path.insert(0, str(BENCH))
import charts  # noqa: E402
from common import scenario_keys  # noqa: E402
from report import fmt  # noqa: E402

PUBLISHED = RESULTS / "2026-11-29.json"


def run_script(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(BENCH / "charts.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    out = tmp_path_factory.mktemp("charts")
    done = run_script(str(PUBLISHED), "--out", str(out))
    written = [Path(line) for line in done.stdout.split()]
    return out, written, json.loads(PUBLISHED.read_text(encoding="utf-8"))


def test_the_script_charts_every_scenario_with_two_measured_arms(drawn):
    out, written, results = drawn
    expected = {f"{key}.svg" for key, scenario in results["scenarios"].items()
                if sum(row["median"] is not None for row in charts.bars(scenario)) >= 2}
    assert {p.name for p in written} == expected == {p.name for p in out.glob("*.svg")}
    assert "s1.svg" in expected and "s11.svg" not in expected  # 11 is one outcome, no rate


def test_every_bar_is_the_number_of_the_json(drawn):
    out, _, results = drawn
    checked = 0
    for path in sorted(out.glob("*.svg")):
        root = ET.parse(path).getroot()  # well-formed XML, or this raises
        assert root.tag == f"{SVG}svg" and root.get("viewBox", "").startswith("0 0 ")
        assert root.find(f"{SVG}title").text.startswith(root.get("aria-label")[:20])
        scenario = results["scenarios"][root.get("data-scenario")]
        axis = float(root.get("data-axis-max"))
        x0, width = float(root.get("data-plot-x")), float(root.get("data-plot-width"))
        rects = {(r.get("data-arm"), r.get("data-quantile")): r
                 for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"}
        spreads = {}
        for g in root.iter(f"{SVG}g"):
            if g.get("class") == "spread":
                spreads.setdefault(g.get("data-arm"), []).append(g)
        values = [t for t in root.iter(f"{SVG}text") if t.get("class") == "value"]
        labels = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")
                  if t.get("class") == "label"]
        medians = []
        for name, arm in scenario["arms"].items():
            for quantile in [q for q in ("p50", "p99") if q in arm] or [None]:
                numbers = arm[quantile] if quantile else arm
                if numbers.get("median") is None:
                    assert (name, quantile) not in rects  # "not applicable": no bar
                    continue
                rect = rects.pop((name, quantile))
                median = numbers["median"]
                assert float(rect.get("data-median")) == median
                assert math.isclose(float(rect.get("x")), x0)
                assert math.isclose(float(rect.get("width")), median / axis * width,
                                    abs_tol=0.01), (path.name, name)
                assert numbers["max"] <= axis  # nothing runs off the axis
                medians.append(fmt(float(median)))
                checked += 1
            if arm.get("median") is not None or "p50" in arm:
                assert any(name.split()[0] in label for label in labels)
        assert rects == {}, f"{path.name}: bars of no arm: {list(rects)}"
        for name, groups in spreads.items():
            arm = scenario["arms"][name]
            for g, numbers in zip(groups, [arm[q] for q in ("p50", "p99") if q in arm] or [arm]):
                line = g.find(f"{SVG}line")
                assert float(g.get("data-min")) == numbers["min"]
                assert math.isclose(float(line.get("x1")), x0 + numbers["min"] / axis * width,
                                    abs_tol=0.01)
                assert math.isclose(float(line.get("x2")), x0 + numbers["max"] / axis * width,
                                    abs_tol=0.01)
        assert [t.text for t in values] == medians  # the printed values, in the bars' order
    # every row of the published table with a number (p50 and p99 apart), but scenario 11
    assert checked == 48


def test_the_committed_charts_are_those_of_the_committed_json(drawn):
    out, _, _ = drawn
    made = {p.name: p.read_bytes() for p in out.glob("*.svg")}
    committed = {p.name: p.read_bytes() for p in CHARTS.glob("*.svg")}
    assert sorted(committed) == sorted(made)
    stale = [name for name in made if made[name] != committed[name]]
    assert stale == [], f"run python3 benchmarks/charts.py: {stale} are stale"


def test_the_performance_page_shows_every_chart():
    text = PAGE.read_text(encoding="utf-8")
    shown = set(re.findall(r"\]\(\.\./assets/charts/(\w+\.svg)\)", text))
    assert shown == {p.name for p in CHARTS.glob("*.svg")}


def test_without_a_file_it_takes_the_newest_full_run_but_never_latest(tmp_path):
    def run(name: str, started: str, quick: bool = False) -> None:
        (tmp_path / name).write_text(json.dumps({"meta": {"started": started, "quick": quick},
                                                 "scenarios": {}}))

    with pytest.raises(SystemExit, match="no full run"):
        charts.newest_run(tmp_path)
    run("latest.json", "2027-01-01T00:00:00Z")
    run("quick.json", "2026-12-31T00:00:00Z", quick=True)
    run("2026-11-29.json", "2026-11-29")
    run("2026-12-04.json", "2026-12-04T10:00:00Z")
    assert charts.newest_run(tmp_path).name == "2026-12-04.json"


def test_nice_axis_ends():
    assert charts.nice_max(5950) == (6000, 1000)
    assert charts.nice_max(7.26) == (8, 2)
    assert charts.nice_max(57257) == (60000, 10000)
    assert charts.nice_max(0.97) == (1.0, 0.2)


# -- benchmarks/run --scenarios ---------------------------------------------------------------------

def test_scenario_keys_in_either_case():
    assert scenario_keys("s1,S2, s6B,s1,") == (["s1", "s2", "s6b"], [])
    assert scenario_keys("S2,S99,x") == (["s2"], ["S99", "x"])


STUB = """
import sys
sys.argv = ["harness.py", *sys.argv[1:]]
sys.path.insert(0, "benchmarks")
import harness
class Accepted(Exception):
    pass
def bench(args):
    raise Accepted()
harness.Bench = bench
try:
    harness.main(sys.argv[1:])
except Accepted:
    print("accepted")
"""


@pytest.mark.parametrize("typed, accepted", [("S2", True), ("s1,S6b", True), ("S99", False)])
def test_the_harness_accepts_the_scenarios_as_the_docs_write_them(typed, accepted):
    done = subprocess.run([sys.executable, "-c", STUB, "--scenarios", typed], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    if accepted:
        assert (done.returncode, done.stdout.strip()) == (0, "accepted"), done.stderr
    else:
        assert done.returncode == 2 and "unknown scenarios ['S99']" in done.stderr
