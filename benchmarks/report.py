"""Turns measured points into results.json, results.md and results.png.

Owns: medians over repetitions, ratios to Gunicorn sync, the Markdown tables
(also printed to the terminal) and the chart. The chart needs matplotlib,
which lives in the peers venv; run.py calls ``python report.py chart IN OUT``
with that venv's interpreter when the current one lacks it.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

# (key, column title, format, lower is better?) for every reported figure.
# Format "sig" = 3 significant digits, without switching to 1e+03 notation.
METRICS: list[tuple[str, str, str, bool]] = [
    ("rps", "req/s", "{:,.0f}", False),
    ("p50_ms", "p50 ms", "sig", True),
    ("p99_ms", "p99 ms", "sig", True),
    ("p999_ms", "p99.9 ms", "sig", True),
    ("errors", "errors", "{:,.0f}", True),
    ("cpu_us_per_req", "server CPU µs/req", "sig", True),
    ("busiest_worker_pct", "busiest worker %", "{:.0f}", True),
    ("rss_mib", "RSS MiB", "{:.1f}", True),
    ("pss_mib", "PSS MiB", "{:.1f}", True),
    ("wrk_cpu_pct", "wrk CPU %", "{:.0f}", True),
]


def fmt_value(value: float, fmt: str) -> str:
    if fmt != "sig":
        return fmt.format(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


# The project's targets for forkserve, each a ratio to another server in the
# same run (or, with no other server, forkserve's own figure):
# (app, mode, concurrencies (None: every one measured), metric, other server,
#  True if the figure must be at least the bound / False if at most, bound).
TARGETS: list[tuple[str, str, tuple[int, ...] | None, str, str | None, bool, float]] = [
    ("hello", "close", (16, 64), "rps", "floor", True, 0.8),
    ("hello", "close", None, "rps", "granian", True, 1.1),
    ("hello", "close", None, "cpu_us_per_req", "floor", False, 1.4),
    ("hello", "keep-alive", (16,), "cpu_us_per_req", None, False, 15.0),
    ("hello", "keep-alive", (16, 64, 256), "rps", "granian", True, 1.2),
    ("django", "close", (1,), "rps", "gunicorn-sync", True, 1.5),
]
SUBJECT = "forkserve"


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every metric, and of each rank of requests per worker."""
    med: dict[str, Any] = {key: statistics.median(r[key] for r in runs) for key, *_ in METRICS}
    per_worker = [r["worker_requests"] for r in runs if r.get("worker_requests")]
    ranks = min(map(len, per_worker), default=0)
    med["worker_requests"] = [round(statistics.median(w[i] for w in per_worker)) for i in range(ranks)]
    return med


def ratio(value: float, base: float | None) -> float | None:
    if base is None or base == 0:
        return None
    return value / base


def add_ratios(points: list[dict[str, Any]], baseline: str) -> None:
    """Adds ``ratio`` (each median divided by the baseline's) to every point."""
    base = {(p["app"], p["mode"], p["concurrency"]): p["median"] for p in points if p["server"] == baseline}
    for p in points:
        b = base.get((p["app"], p["mode"], p["concurrency"]))
        p["ratio"] = {key: ratio(p["median"][key], b[key] if b else None) for key, *_ in METRICS}


def targets(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every TARGETS check that this run has the figures for."""
    by_key = {(p["app"], p["server"], p["mode"], p["concurrency"]): p["median"] for p in points}
    rows = []
    for app, mode, concs, metric, other, at_least, bound in TARGETS:
        measured = sorted({p["concurrency"] for p in points if (p["app"], p["mode"]) == (app, mode)})
        for conc in measured if concs is None else concs:
            ours = by_key.get((app, SUBJECT, mode, conc))
            theirs = by_key.get((app, other, mode, conc)) if other else {metric: 1.0}
            if ours is None or theirs is None or not theirs[metric]:
                continue
            value = ours[metric] / theirs[metric]
            rows.append(
                {
                    "app": app, "mode": mode, "concurrency": conc, "metric": metric,
                    "other": other, "value": value, "at_least": at_least, "bound": bound,
                    "met": value >= bound if at_least else value <= bound,
                }
            )  # fmt: skip
    return rows


def targets_markdown(rows: list[dict[str, Any]]) -> list[str]:
    titles = {key: title for key, title, *_ in METRICS}
    out = [
        f"## Targets ({SUBJECT} against the others in this run)",
        "",
        "| app | mode | c | figure | against | measured | target | met |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | --- |",
    ]
    for r in rows:
        unit = "×" if r["other"] else ""
        sign = "≥" if r["at_least"] else "≤"
        out.append(
            f"| {r['app']} | {r['mode']} | {r['concurrency']} | {titles[r['metric']]} | "
            f"{r['other'] or '(absolute)'} | {unit}{r['value']:.3g} | {sign} {unit}{r['bound']:g} | "
            f"{'yes' if r['met'] else '**no**'} |"
        )
    return [*out, ""]


def _cell(value: float, rel: float | None, fmt: str) -> str:
    text = fmt_value(value, fmt)
    if rel is None:
        return text if value == 0 else f"{text} (–)"
    return f"{text} (×{rel:.2f})"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [
        "# forkserve benchmark results",
        "",
        f"Run {meta['started']} on {meta['machine']}; {meta['workers']} worker "
        f"processes per server; {meta['duration_s']:g} s per point, median of "
        f"{meta['repeat']}. Every figure is followed by its ratio to "
        f"**{meta['baseline_label']}** in the same run (×1.00 = equal; for req/s "
        "higher is better, for everything else lower is better). `(–)` means "
        "the baseline's figure was 0.",
        "",
        "## Servers",
        "",
        "| server | version | how it runs | command line (hello app, else the first one run) |",
        "| --- | --- | --- | --- |",
    ]
    for s in results["servers"]:
        out.append(f"| {s['label']} | {s['version']} | {s['model']} | `{s['command']}` |")
    out.append("")
    for app in results["apps"]:
        for mode in ("keep-alive", "close"):
            pts = [p for p in results["points"] if p["app"] == app and p["mode"] == mode]
            if not pts:
                continue
            title = "HTTP/1.1 keep-alive" if mode == "keep-alive" else "Connection: close"
            out += [f"## {app} — {title}", ""]
            out.append("| server | c | " + " | ".join(m[1] for m in METRICS) + " | requests per worker |")
            out.append("| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " | ---: |")
            pts.sort(key=lambda p: (p["concurrency"], p["order"]))
            for p in pts:
                cells = [_cell(p["median"][k], p["ratio"][k], fmt) for k, _, fmt, _ in METRICS]
                cells.append(" / ".join(f"{n:,}" for n in p["median"].get("worker_requests", [])) or "–")
                out.append(f"| {p['label']} | {p['concurrency']} | " + " | ".join(cells) + " |")
            out.append("")
    if results.get("targets"):
        out += targets_markdown(results["targets"])
    if results.get("spread"):
        out += [
            "## Spread of requests over workers (whoami app)",
            "",
            "Answers per worker pid from 16 concurrent clients × 50 requests. "
            "max/min = busiest worker's count over the idlest one's (1.00 = even).",
            "",
            "| server | keep-alive: per worker | max/min | close: per worker | max/min |",
            "| --- | --- | ---: | --- | ---: |",
        ]
        for s in results["spread"]:
            row = [s["label"]]
            for mode in ("keep-alive", "close"):
                counts = s[mode]
                row.append(" / ".join(str(c) for c in sorted(counts.values(), reverse=True)))
                row.append(f"{s[mode + '_max_min']:.2f}" if s[mode + "_max_min"] else "–")
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    if results.get("failures"):
        out += ["## Failures", ""]
        for f in results["failures"]:
            lines = [x.strip() for x in f["error"].strip().splitlines() if x.strip()] or ["?"]
            cause = f" ... `{lines[-1]}`" if len(lines) > 1 else ""
            out.append(f"- {f['server']} / {f['app']}: {lines[0]}{cause}")
        out.append("")
    if results.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(out)


def write_chart(results: dict[str, Any], png: Path) -> None:
    """Grouped bars of req/s ratio to the baseline, one panel per app × mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    meta = results["meta"]
    baseline = meta["baseline"]
    panels = [
        (app, mode)
        for app in results["apps"]
        for mode in ("keep-alive", "close")
        if any(p["app"] == app and p["mode"] == mode for p in results["points"])
    ]
    labels = {s["name"]: s["label"] for s in results["servers"]}
    servers = [s["name"] for s in results["servers"] if s["name"] != baseline]
    colors = dict(zip(servers, plt.get_cmap("tab10").colors, strict=False))
    ncols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + ncols - 1) // ncols
    panel_h = 3.2  # inches per row of panels
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, panel_h * nrows + 1.2), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    ticks = [k * 10.0**e for e in range(-2, 3) for k in (1, 2, 5)]  # 1-2-5 steps
    for ax, (app, mode) in zip(axes.flat, panels, strict=False):
        pts = [p for p in results["points"] if p["app"] == app and p["mode"] == mode]
        concs = sorted({p["concurrency"] for p in pts})
        present = [s for s in servers if any(p["server"] == s for p in pts)]
        # Narrow bars even when few servers are present, so one bar is no slab.
        width = 0.8 / max(4, len(present))
        lo, hi = 0.8, 1.25
        for i, name in enumerate(present):
            xs, ys = [], []
            for j, c in enumerate(concs):
                p = next((q for q in pts if q["server"] == name and q["concurrency"] == c), None)
                if p and p["ratio"]["rps"] is not None:
                    xs.append(j + width * (i - (len(present) - 1) / 2))
                    ys.append(p["ratio"]["rps"])
            # Bars grow from the baseline (1): up when faster, down when slower.
            bars = ax.bar(
                xs,
                [y - 1 for y in ys],
                width,
                bottom=1,
                label=labels[name],
                color=colors[name],
                edgecolor="black" if name == "forkserve" else "none",
            )
            ax.bar_label(bars, labels=[f"{y:.2g}" for y in ys], fontsize=7, padding=1)
            lo, hi = min([lo, *ys]), max([hi, *ys])
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.4, hi * 1.5)
        ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"×{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(concs)), [f"{c} connection{'s' * (c != 1)}" for c in concs])
        ax.set_xlim(-0.5, len(concs) - 0.5)
        ax.set_title(f"{app} — {mode}", fontsize=11)
        ax.set_ylabel(f"req/s vs {labels.get(baseline, baseline)}")
        ax.grid(axis="y", alpha=0.3)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=False):
            handles.setdefault(lab, h)
    ncol = min(len(handles), 4)
    legend_rows = (len(handles) + ncol - 1) // max(1, ncol)
    # Lay out the header in inches (title, then legend, then panels) so it
    # holds for one row of panels or four.
    height = fig.get_figheight()
    header = 0.55 + 0.28 * legend_rows
    if header + 0.3 > 1.2:
        fig.set_figheight(height + header + 0.3 - 1.2)
        height = fig.get_figheight()
    fig.suptitle(
        f"Requests per second relative to {labels.get(baseline, baseline)} "
        "(= ×1, the black line); higher is better",
        fontsize=12,
        y=1 - 0.12 / height,
        va="top",
    )
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.5 / height),
        ncol=ncol,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - (header + 0.05) / height))
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] != "chart":
        print("usage: python report.py chart RESULTS.json OUT.png", file=sys.stderr)
        return 2
    write_chart(json.loads(Path(argv[2]).read_text()), Path(argv[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
