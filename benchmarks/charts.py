"""Bar charts (SVG) of a benchmark run, for docs/explanation/performance.md.

    python3 benchmarks/charts.py                      # the newest full run in benchmarks/results/
    python3 benchmarks/charts.py results.json --out DIR

Reads a run's JSON (what ``benchmarks/run`` writes) and writes one chart per scenario,
``<out>/s1.svg`` ... (default ``docs/assets/charts``): a bar per arm at its median over the
rounds, a line across it for the spread (min..max), the value in a column on the right;
instant_signals' arms in indigo, baselines and other libraries in gray. Scenarios with fewer
than two measured arms (11: an outcome, not a rate) are left to the table.

Without a file it takes the newest full run (``meta.quick`` false, by ``meta.started``) among
``benchmarks/results/*.json`` except ``latest.json``, the scratch output of every run: publishing
a run is copying ``latest.json`` to a dated name, then running this.

Hand-written SVG, standard library only: no plotting dependency in any environment, the same
bytes for the same JSON (so a test can tell the committed charts are current), text that stays
text, and nothing loaded from the network by the built site.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
OUT = ROOT / "docs" / "assets" / "charts"
sys.path.insert(0, str(HERE))

from report import TITLES, fmt  # noqa: E402  (report imports only common: stdlib)

# Geometry, in SVG user units (px at 100%).
WIDTH = 760
LABEL_X = 16  # arm names, left-aligned
PLOT_X = 330  # bars start here
PLOT_WIDTH = 310
VALUE_X = PLOT_X + PLOT_WIDTH + 14  # the median, as text
TOP = 66  # below the title and the subtitle
LINE = 14  # one line of a label
ROW = 30  # the height of a row with a one-line label
LABEL_CHARS = 50  # a label wraps past this many characters
FONT = "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
OURS_COLOR, OTHER_COLOR, SPREAD_COLOR = "#3f51b5", "#9e9e9e", "#212121"

#: An arm is instant_signals' own when its name says so (the rest: baselines, other libraries).
OURS = ("instant_signals", "@broadcast", "relay_outbox", 'DELIVERY="outbox"', "hooks",
        "events' share", "WAL + IMMEDIATE")


def newest_run(folder: Path = RESULTS) -> Path:
    runs = []
    for path in sorted(folder.glob("*.json")):
        if path.name == "latest.json":
            continue
        meta = json.loads(path.read_text(encoding="utf-8")).get("meta", {})
        if not meta.get("quick"):
            runs.append((str(meta.get("started", "")), path.name, path))
    if not runs:
        raise SystemExit(f"no full run in {folder} (latest.json is not read: copy it to a "
                         f"dated name to publish it)")
    return max(runs)[2]


def bars(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a scenario's chart: arm, quantile (p50/p99 arms give two), the numbers."""
    out = []
    for name, arm in scenario["arms"].items():
        quantiles = [(q, arm[q]) for q in ("p50", "p99") if isinstance(arm.get(q), dict)]
        for quantile, numbers in quantiles or [(None, arm)]:
            out.append({"arm": name, "quantile": quantile, "median": numbers.get("median"),
                        "min": numbers.get("min"), "max": numbers.get("max"),
                        "status": arm.get("status", "ok"), "ours": name.startswith(OURS)
                        or any(word in name for word in OURS)})
    return out


def nice_max(value: float) -> tuple[float, float]:
    """(axis end, tick step): 1, 2, 2.5 or 5 times a power of ten, 3 to 6 ticks."""
    if value <= 0:
        return 1.0, 0.25
    power = 10 ** math.floor(math.log10(value))
    for factor in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10):
        step = factor * power
        if value / step <= 6:
            return step * math.ceil(value / step - 1e-9), step
    return 10 * power, 2 * power  # not reached


def wrap(text: str, width: int = LABEL_CHARS) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return lines + [current] if current else lines


def tick(value: float, step: float) -> str:
    return f"{value:,.0f}" if step >= 1 else f"{value:g}"


def _n(value: float) -> str:
    """A coordinate: at most two decimals, no trailing zeros (the same bytes every time)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def chart(key: str, scenario: dict[str, Any]) -> str | None:
    """The SVG of one scenario, or None when it has fewer than two measured rows."""
    rows = bars(scenario)
    measured = [r for r in rows if r["median"] is not None]
    if len(measured) < 2:
        return None
    unit = scenario.get("unit") or ""
    title = TITLES[key].format(n=f"{scenario['n']:,}")
    better = "higher is better" if unit.endswith("/s") else "lower is better"
    axis_max, step = nice_max(max(max(r["max"] or r["median"], r["median"]) for r in measured))

    def x(value: float) -> float:
        return PLOT_X + value / axis_max * PLOT_WIDTH

    body: list[str] = []
    y = TOP
    for row in rows:
        label = row["arm"] + (f" · {row['quantile']}" if row["quantile"] else "")
        lines = wrap(label)
        height = max(ROW, LINE * len(lines) + 12)
        middle = y + height / 2
        first = middle - LINE * (len(lines) - 1) / 2 + 4
        tspans = "".join(f'<tspan x="{LABEL_X}" y="{_n(first + i * LINE)}">{escape(line)}'
                         f"</tspan>" for i, line in enumerate(lines))
        body.append(f'<text class="label" font-size="12">{tspans}</text>')
        if row["median"] is None:
            body.append(f'<text x="{PLOT_X}" y="{_n(middle + 4)}" font-size="12" '
                        f'font-style="italic" fill="#616161">{escape(row["status"])} '
                        f"(see the table)</text>")
        else:
            color = OURS_COLOR if row["ours"] else OTHER_COLOR
            attrs = {"data-arm": row["arm"], "data-median": repr(float(row["median"]))}
            if row["quantile"]:
                attrs["data-quantile"] = row["quantile"]
            data = "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items())
            body.append(f'<rect class="bar"{data} x="{PLOT_X}" y="{_n(middle - 8)}" '
                        f'width="{_n(x(row["median"]) - PLOT_X)}" height="16" rx="2" '
                        f'fill="{color}"/>')
            if row["min"] is not None and row["max"] is not None:
                lo, hi = x(row["min"]), x(row["max"])
                body.append(
                    f'<g class="spread" data-arm={quoteattr(row["arm"])} '
                    f'data-min="{float(row["min"])!r}" data-max="{float(row["max"])!r}" '
                    f'stroke="{SPREAD_COLOR}" stroke-width="1.5">'
                    f'<line x1="{_n(lo)}" x2="{_n(hi)}" y1="{_n(middle)}" y2="{_n(middle)}"/>'
                    f'<line x1="{_n(lo)}" x2="{_n(lo)}" y1="{_n(middle - 5)}" '
                    f'y2="{_n(middle + 5)}"/>'
                    f'<line x1="{_n(hi)}" x2="{_n(hi)}" y1="{_n(middle - 5)}" '
                    f'y2="{_n(middle + 5)}"/></g>')
            body.append(f'<text class="value" x="{VALUE_X}" y="{_n(middle + 4)}" '
                        f'font-size="12">{escape(fmt(float(row["median"])))}</text>')
        y += height
    bottom = y + 6
    grid = []
    ticks = int(round(axis_max / step))
    for i in range(ticks + 1):
        value = i * step
        grid.append(f'<line x1="{_n(x(value))}" x2="{_n(x(value))}" y1="{TOP - 4}" '
                    f'y2="{_n(bottom)}" stroke="#e0e0e0"/>')
        grid.append(f'<text x="{_n(x(value))}" y="{_n(bottom + 14)}" font-size="11" '
                    f'text-anchor="middle" fill="#616161">{tick(value, step)}</text>')
    height = bottom + 48
    legend_y = bottom + 36
    legend = (f'<rect x="{LABEL_X}" y="{_n(legend_y - 9)}" width="10" height="10" '
              f'fill="{OURS_COLOR}"/><text x="{LABEL_X + 15}" y="{_n(legend_y)}" '
              f'font-size="11">instant_signals</text>'
              f'<rect x="{LABEL_X + 120}" y="{_n(legend_y - 9)}" width="10" height="10" '
              f'fill="{OTHER_COLOR}"/><text x="{LABEL_X + 135}" y="{_n(legend_y)}" '
              f'font-size="11">baseline or another library</text>'
              f'<text x="{PLOT_X}" y="{_n(legend_y)}" font-size="11" fill="#616161">'
              f"bar: median of the rounds; line: min..max</text>")
    heading = f"{title}: {better}"
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{_n(height)}" '
        f'viewBox="0 0 {WIDTH} {_n(height)}" role="img" aria-label={quoteattr(heading)} '
        f'font-family="{FONT}" fill="#212121" data-scenario="{key}" '
        f'data-axis-max="{axis_max!r}" data-plot-x="{PLOT_X}" data-plot-width="{PLOT_WIDTH}">',
        f"<title>{escape(heading)}</title>",
        f'<rect width="{WIDTH}" height="{_n(height)}" rx="6" fill="#ffffff"/>',
        f'<text x="{LABEL_X}" y="24" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="{LABEL_X}" y="44" font-size="12" fill="#616161">{escape(unit)}, {better}'
        f"</text>",
        *grid, *body, legend, "</svg>", ""])


def write_charts(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, scenario in results["scenarios"].items():
        svg = chart(key, scenario)
        if svg is not None:
            path = out / f"{key}.svg"
            path.write_text(svg, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path,
                        help="a run's JSON (default: the newest full run in benchmarks/results)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder (default {OUT})")
    args = parser.parse_args(argv)
    source = args.results or newest_run()
    results = json.loads(source.read_text(encoding="utf-8"))
    for path in write_charts(results, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
