"""The convergence study's outputs: results.csv, the per-generation plot, the summary line."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

from crowd.sim.convergence_study import PAPER_SAMPLES, StudyConfig

PAPER_MEDIAN_PCT = 21.5  # the paper's median reduction over 28 emotions (mean 28.5 %)


def write_outputs(out: Path, results: list[dict], config: StudyConfig) -> None:
    """OUT/results.csv (emotion, single, multi, reduction in %, its standard error, replies
    per final model) and OUT/convergence.png."""
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["emotion", "single", "multi", "reduction", "reduction_se", "final_samples"]
        )
        for r in results:
            se = r.get("reduction_se_pct")  # absent in results of runs before it was measured
            writer.writerow(
                [
                    r["emotion"],
                    f"{r['single']:.4f}",
                    f"{r['multi']:.4f}",
                    f"{r['reduction_pct']:.2f}",
                    "" if se is None else f"{se:.2f}",
                    r.get("final_samples", PAPER_SAMPLES),
                ]
            )
    plot(out / "convergence.png", results, config)


def summary(out: Path, results: list[dict]) -> dict:
    """The last line's content: each emotion's reduction (%), their median and mean."""
    reductions = {r["emotion"]: r["reduction_pct"] for r in results}
    errors = {r["emotion"]: r.get("reduction_se_pct") for r in results}
    values = list(reductions.values())
    return {
        "reduction_pct": reductions,
        "reduction_se_pct": errors,
        "median_reduction_pct": round(statistics.median(values), 3) if values else None,
        "mean_reduction_pct": round(statistics.fmean(values), 3) if values else None,
        "paper_median_reduction_pct": PAPER_MEDIAN_PCT,
        "beats_paper_median": [e for e, v in reductions.items() if v > PAPER_MEDIAN_PCT],
        "results": str(out / "results.csv"),
        "plot": str(out / "convergence.png"),
    }


def plot(path: Path, results: list[dict], config: StudyConfig) -> None:
    """One panel per emotion: every sub-model's mean L2 to the target vector per generation,
    the champion's path, and the single model's distance as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, max(1, len(results)))
    rows = max(1, math.ceil(len(results) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, result in zip(axes.flat, results):
        _panel(ax, result)
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    fig.suptitle(
        f"Distance to the target comment's vector per generation "
        f"({config.groups} groups, segments {','.join(map(str, config.segments))}, "
        f"{config.samples} samples, selection '{config.selection}')",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(ax, result: dict) -> None:
    gens = result["multi_arm"]["generations"]
    base = result["single_arm"]["base_to_target"]
    path_x, path_y = [0], [base]
    for g in gens:
        keys = sorted(g["candidates"], key=lambda k: (not k.isdigit(), k.zfill(3)))
        ax.scatter(
            [g["generation"]] * len(keys),
            [g["candidates"][k] for k in keys],
            c=[f"C{int(k)}" if k.isdigit() else "k" for k in keys],
            marker="o",
            s=22,
            alpha=0.8,
            zorder=3,
        )
        winner = g.get("winner", None if g["winner_group"] is None else str(g["winner_group"]))
        crowned = g["candidates"][winner] if winner is not None else g["champion"]
        path_x.append(g["generation"])
        path_y.append(crowned)
    ax.plot(path_x, path_y, "k-", lw=1.2, label="champion (multi)")
    if result["single_arm"]["to_target"] is not None:
        ax.axhline(
            result["single_arm"]["to_target"],
            color="grey",
            ls="--",
            lw=1,
            label=f"single ({result['pool']} items)",
        )
    ax.set_title(
        f"{result['emotion']}: to centroid {result['single']:.3f} -> "
        f"{result['multi']:.3f} ({result['reduction_pct']:+.1f}%)",
        fontsize=9,
    )
    ax.set_xlabel("generation (0 = base)", fontsize=8)
    ax.set_ylabel("mean L2 to target", fontsize=8)
    ax.set_xticks(range(len(gens) + 1))
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
