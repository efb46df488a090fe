"""Outputs of `simulate grouping`: CSV files, plots and a side-by-side Markdown table.

- runs.csv: one row per run (setting, Pearson, Spearman, final distance and score, rounds);
- settings.csv: the mean over runs per setting;
- distances.csv: the mean distance to the expert per round, per setting;
- distance.png, pearson.png: those curves, and Pearson against crowd size per rule;
- table.md: the two points rules side by side, one row per crowd size, groups and grouping.
"""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np


def write_outputs(
    out: Path, rows: list[dict], summaries: list[dict], curves: dict[Any, np.ndarray]
) -> None:
    """Write every output file under `out` (created if missing)."""
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "runs.csv", rows)
    _write_csv(out / "settings.csv", summaries)
    _write_csv(
        out / "distances.csv",
        [
            {**asdict(s), "round": r, "mean_distance": float(d)}
            for s, curve in curves.items()
            for r, d in enumerate(curve)
        ],
    )
    _plot(out, summaries, curves)
    (out / "table.md").write_text(side_by_side(summaries))


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot(out: Path, summaries: list[dict], curves: dict[Any, np.ndarray]) -> None:
    """distance.png: mean distance to the expert per round; pearson.png: Pearson correlation
    with the Shapley reference against crowd size (mean over group counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groupings = sorted({s.grouping for s in curves})
    fig, axes = plt.subplots(1, len(groupings), figsize=(5 * len(groupings), 4), squeeze=False)
    colours = {"paper": "tab:orange", "shapley": "tab:blue"}
    for ax, grouping in zip(axes[0], groupings):
        for rule, colour in colours.items():
            picked = [c for s, c in curves.items() if s.grouping == grouping and s.points == rule]
            for curve in picked:  # each setting faint, their mean bold
                ax.plot(curve, color=colour, lw=0.5, alpha=0.3)
            if picked:
                ax.plot(
                    np.mean(picked, axis=0),
                    color=colour,
                    lw=2,
                    label=f"{rule} (mean of {len(picked)} settings)",
                )
        ax.set(title=grouping, xlabel="round", ylabel="mean distance to expert")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "distance.png", dpi=120)
    fig, ax = plt.subplots(figsize=(6, 4))
    for rule in sorted({s["points"] for s in summaries}):
        for grouping in groupings:
            settings = [s for s in summaries if s["points"] == rule and s["grouping"] == grouping]
            sizes = sorted({s["n_users"] for s in settings})
            means = [
                _mean_or_nan([s["pearson"] for s in settings if s["n_users"] == n]) for n in sizes
            ]
            ax.plot(sizes, means, "o-" if rule == "shapley" else "s--", label=f"{rule}, {grouping}")
    ax.set(xlabel="users", ylabel="Pearson(points, Shapley)", ylim=(None, 1.02))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pearson.png", dpi=120)
    plt.close("all")


def _mean_or_nan(values: list[float | None]) -> float:
    """Mean of the known values; NaN (not a warning) when there are none, e.g. one group."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else float("nan")


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def side_by_side(summaries: list[dict]) -> str:
    """Markdown: per crowd size, group count, grouping and metric, the paper's rule and the
    Shapley rule next to each other (Pearson, Spearman, final distance to the expert)."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for s in summaries:
        key = (s["n_users"], s["n_groups"], s["grouping"], s["metric"])
        by_key.setdefault(key, {})[s["points"]] = s
    lines = [
        "| users | groups | grouping | metric | Pearson paper | Pearson shapley "
        "| Spearman paper | Spearman shapley | final dist. paper | final dist. shapley |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in sorted(by_key):
        rules = by_key[key]
        cells = [f"{k}" for k in key]
        for figure, digits in (("pearson", 3), ("spearman", 3), ("final_distance", 4)):
            cells += [
                _cell(rules.get(rule, {}).get(figure), digits) for rule in ("paper", "shapley")
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
