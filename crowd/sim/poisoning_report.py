"""The poisoning study's numbers and outputs: regressions, the points AUROC, the honest share
of training, results.csv, the plot and the summary line."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def regressions(path: list[dict]) -> int:
    """Rounds where the champion got worse on the clean reference by more than the standard
    error of the difference (a round that kept its champion cannot regress)."""
    count = 0
    for before, after in zip(path, path[1:]):
        if after["version"] == before["version"]:
            continue
        if after["distance"] - before["distance"] > math.hypot(after["se"], before["se"]):
            count += 1
    return count


def auroc(honest: list[float], hostile: list[float]) -> float | None:
    """P(an honest volunteer's points > an adversary's), ties counting half; None without
    both kinds of volunteer."""
    if not honest or not hostile:
        return None
    wins = sum((h > a) + 0.5 * (h == a) for h in honest for a in hostile)
    return wins / (len(honest) * len(hostile))


def by_role(values: dict[str, float], roles: dict[str, str]) -> dict[str, float]:
    """The mean of `values` (points, say) over each role's volunteers (0 for those without)."""
    means = {}
    for role in sorted(set(roles.values())):
        mine = [values.get(p, 0.0) for p, r in roles.items() if r == role]
        means[role] = round(sum(mine) / len(mine), 3)
    return means


def honest_share(used: dict[str, int], roles: dict[str, str]) -> float | None:
    """Share of the SFT examples an arm trained on that came from honest volunteers."""
    total = sum(used.values())
    if total == 0:
        return None
    return sum(n for p, n in used.items() if roles.get(p) == "honest") / total


def write_csv(path: Path, paths: dict[str, list[dict]], pooled: dict | None) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["arm", "round", "version", "distance", "se"])
        for arm, rows in paths.items():
            for r in rows:
                writer.writerow([arm, r["round"], r["version"], r["distance"], r["se"]])
        if pooled:
            writer.writerow(["pooled", pooled["round"], "", pooled["distance"], pooled["se"]])


def plot(path: Path, paths: dict[str, list[dict]], pooled: dict | None, title: str) -> None:
    """Each arm's champion distance to the clean reference per round (error bars: one
    standard error), the pooled model as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (arm, rows) in enumerate(paths.items()):
        ax.errorbar(
            [r["round"] for r in rows],
            [r["distance"] for r in rows],
            yerr=[r["se"] for r in rows],
            marker="o",
            capsize=3,
            color=f"C{i}",
            label=arm,
        )
    if pooled:
        ax.axhline(pooled["distance"], color="grey", ls="--", label="pooled (equal passes)")
    ax.set_xticks(sorted({r["round"] for rows in paths.values() for r in rows}))
    ax.set_xlabel("round (0 = base)")
    ax.set_ylabel("mean L2 to the neighbourhood centroid")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
