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
METRICS: list[tuple[str, str, str, bool]] = [
    ("rps", "req/s", "{:,.0f}", False),
    ("p50_ms", "p50 ms", "{:.3g}", True),
    ("p99_ms", "p99 ms", "{:.3g}", True),
    ("p999_ms", "p99.9 ms", "{:.3g}", True),
    ("errors", "errors", "{:,.0f}", True),
    ("cpu_us_per_req", "server CPU µs/req", "{:.3g}", True),
    ("rss_mib", "RSS MiB", "{:.1f}", True),
    ("pss_mib", "PSS MiB", "{:.1f}", True),
    ("wrk_cpu_pct", "wrk CPU %", "{:.0f}", True),
]


def median_of(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key, *_ in METRICS}


def ratio(value: float, base: float | None) -> float | None:
    if base is None or base == 0:
        return None
    return value / base


def add_ratios(points: list[dict[str, Any]], baseline: str) -> None:
    """Adds ``ratio`` (each median divided by the baseline's) to every point."""
    base = {
        (p["app"], p["mode"], p["concurrency"]): p["median"]
        for p in points
        if p["server"] == baseline
    }
    for p in points:
        b = base.get((p["app"], p["mode"], p["concurrency"]))
        p["ratio"] = {
            key: ratio(p["median"][key], b[key] if b else None) for key, *_ in METRICS
        }


def _cell(value: float, rel: float | None, fmt: str) -> str:
    text = fmt.format(value)
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
        "| server | version | how it runs | command (app: hello) |",
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
            out.append("| server | c | " + " | ".join(m[1] for m in METRICS) + " |")
            out.append("| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " |")
            pts.sort(key=lambda p: (p["concurrency"], p["order"]))
            for p in pts:
                cells = [
                    _cell(p["median"][k], p["ratio"][k], fmt) for k, _, fmt, _ in METRICS
                ]
                out.append(f"| {p['label']} | {p['concurrency']} | " + " | ".join(cells) + " |")
            out.append("")
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
            first = f["error"].strip().splitlines()[0] if f["error"].strip() else "?"
            out.append(f"- {f['server']} / {f['app']}: {first}")
        out.append("")
    if results.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(out)


def write_chart(results: dict[str, Any], png: Path) -> None:
    """Grouped bars of req/s ratio to the baseline, one panel per app × mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (app, mode) in zip(axes.flat, panels, strict=False):
        pts = [p for p in results["points"] if p["app"] == app and p["mode"] == mode]
        concs = sorted({p["concurrency"] for p in pts})
        present = [s for s in servers if any(p["server"] == s for p in pts)]
        width = 0.8 / max(1, len(present))
        top = 1.0
        for i, name in enumerate(present):
            xs, ys = [], []
            for j, c in enumerate(concs):
                p = next((q for q in pts if q["server"] == name and q["concurrency"] == c), None)
                if p and p["ratio"]["rps"] is not None:
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(p["ratio"]["rps"])
            bars = ax.bar(xs, ys, width, label=labels[name], color=colors[name])
            ax.bar_label(bars, fmt="%.2g", fontsize=7, padding=1)
            top = max([top, *ys])
        ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
        ax.set_yscale("log")
        ax.set_ylim(min(0.5, ax.get_ylim()[0]), top * 1.6)
        ax.set_xticks(range(len(concs)), [f"c={c}" for c in concs])
        ax.set_title(f"{app} — {mode}", fontsize=11)
        ax.set_ylabel(f"req/s ÷ {labels.get(baseline, baseline)}")
        ax.grid(axis="y", which="both", alpha=0.3)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=False):
            handles.setdefault(lab, h)
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="lower center",
        ncol=min(len(handles), 4),
        frameon=False,
    )
    fig.suptitle(
        f"Throughput relative to {labels.get(baseline, baseline)} "
        f"(dashed line = 1; higher is better; log scale)",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0.04 + 0.03 * ((len(handles) - 1) // 4), 1, 0.97))
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
