"""The organizer page's tables and lines, as plain data for Gradio: the live jobs, every round's
result (winner, metric per model, points), the recent corrections, the round's status, where
round jobs run and what reference data the campaign has."""

from __future__ import annotations

import html

import pandas as pd

from crowd.groups import GROUP_NAMES, MERGED_NAME, UNION_NAME, group_name
from crowd.lessons import about
from crowd.ui.components import points, table
from crowd.views import RoundResult
from storage.rows import Campaign, RecentCorrection

JOB_COLUMNS = ["id", "round", "status", "stage", "step", "loss", "eta_s", "attempts", "error"]
CORRECTION_COLUMNS = [
    "id",
    "kind",
    "name",
    "group",
    "value",
    "reply",  # the text the correction is about, as its author saw it (crowd.lessons.about)
    "state",
    "created",
    "participant",
]


def jobs_frame(jobs: list[dict]) -> pd.DataFrame:
    rows = []
    for job in jobs:
        progress = job["progress"]
        step = f"{progress['step']}/{progress['steps']}" if "steps" in progress else ""
        if "models" in progress:  # judging: models judged of all
            step = f"{progress.get('judged', 0)}/{progress['models']} models"
        loss = progress.get("loss")
        rows.append(
            {
                "id": job["id"],
                "round": job["round_id"],
                "status": job["status"],
                "stage": "done" if job["status"] == "finished" else progress.get("stage", ""),
                "step": step,
                "loss": round(loss, 4) if isinstance(loss, (int, float)) else None,
                "eta_s": progress.get("eta_s"),
                "attempts": job.get("attempts"),
                "error": (job.get("error") or "")[:300],
            }
        )
    return table(rows, JOB_COLUMNS)


def notes_text(jobs: list[dict]) -> str:
    """What the recent rounds could not build, and why (crowd.rounds.record at closing,
    crowd.rounds.crown for a candidate the job could not make), newest first; empty when they
    built everything."""
    lines = [
        f"- **Round {job['round_number']}**: {html.escape(note)}"
        for job in jobs
        for note in job.get("notes") or []
    ]
    return "### Round notes\n" + "\n".join(dict.fromkeys(lines)) if lines else ""


def corrections_frame(rows: list[RecentCorrection]) -> pd.DataFrame:
    def short(text: object) -> str:
        text = "" if text is None else str(text)
        return text if len(text) <= 120 else text[:119] + "…"

    return table(
        [
            {
                "id": r["id"],
                "kind": r["kind"],
                "name": r["display_name"],
                "participant": r["participant_id"],
                "group": group_name(r["group_index"]),
                "value": short(r["value"]),
                "reply": short(about(r)),
                "state": "hidden" if r["hidden_at"] else "undone" if r["undone_at"] else "live",
                "created": r["created_at"],
            }
            for r in rows
        ],
        CORRECTION_COLUMNS,
    )


def status_text(status: dict) -> str:
    groups = ", ".join(
        f"{group_name(i)}: {m} people, {c} corrections"
        for i, (m, c) in enumerate(zip(status["group_members"], status["group_corrections"]))
    )
    closes = f"; closes at {status['closes_at']}" if status["closes_at"] else ""
    return (
        f"**{status['campaign']}**: round {status['round']} is {status['state']} "
        f"(policy: {status['policy']}{closes}). {groups or 'No one has joined yet.'}"
    )


RESULT_COLUMNS = ["round", "state", "winner", "metric", "champion"]  # then one per group
RESULT_TAIL = ["points awarded", "people"]


def results_frame(results: list[RoundResult], n_groups: int) -> pd.DataFrame:
    """One row per round: its winner, the metric of the champion it started with and of each
    group's candidate ('—': the group sat the round out), then the union's and the merge's when
    a round had them, and the points it awarded."""
    groups = [group_name(g) for g in range(max(n_groups, *[_groups(r) for r in results], 0))]
    groups += [k for k in (UNION_NAME, MERGED_NAME) if any(k in r.values for r in results)]
    rows = []
    for r in reversed(results):  # the newest first
        if r.state != "done":
            winner = "(judging)" if r.state != "open" else "(open)"
        else:
            winner = r.winner or "champion stayed"
        direction = "lower is better" if r.lower_is_better else "higher is better"
        rows.append(
            {
                "round": r.number,
                "state": r.state,
                "winner": winner,
                "metric": f"{r.metric} ({direction})" if r.metric else "",
                "champion": _value(r.values.get("champion")),
                **{g: _value(r.values.get(g)) for g in groups},
                "points awarded": points(r.points) if r.points else "",
                "people": r.people or "",
            }
        )
    return table(rows, [*RESULT_COLUMNS, *groups, *RESULT_TAIL])


def _groups(result: RoundResult) -> int:
    """How many groups a round's values name (a campaign may have had more then)."""
    named = [GROUP_NAMES.index(s) + 1 for s in result.values if s in GROUP_NAMES]
    return max(named, default=0)


def _value(value: float | None) -> object:
    return "—" if value is None else round(value, 3)


def references_text(counts: dict[str, dict[str, int]], campaign: Campaign) -> str:
    """What reference data the campaign has and what the current task does with it."""
    emotion, pairs = counts.get("emotion", {}), sum(counts.get("pair", {}).values())
    labels = ", ".join(f"{label or 'no label'}: {n}" for label, n in emotion.items())
    texts = f"{sum(emotion.values())} emotion text(s)" + (f" ({labels})" if labels else "")
    if campaign["task"] == "preference":
        use = "its pairs join the crowd's held-out pairs"
    elif emotion:
        use = "the target vector is the mean scored vector of the emotion texts"
    else:
        use = (
            f"with no emotion texts, the target is the one-hot vector of "
            f"{campaign['target_emotion'] or 'the target emotion'}"
        )
    return (
        f"**Reference data**: {texts}, {pairs} preference pair(s). The task is "
        f"{campaign['task']}: {use}."
    )


RUNNER_WORDS = {
    "thread": "in the app, in a thread below the replies' priority",
    "process": "in a child process of the app, below the replies' priority",
    "hf-jobs": "on Hugging Face Jobs",
}


def runner_text(status: dict) -> str:
    """Where round jobs run, and the latest one's state and cost so far (Markdown)."""
    where = RUNNER_WORDS.get(status["runner"], status["runner"])
    lines = [f"**Round jobs run** {where} (`CROWD_ROUND_RUNNER={status['runner']}`)"]
    if status["flavor"]:
        price = status["price_per_hour"]
        priced = f"${price:.2f} an hour, billed by the minute" if price else "price unknown"
        lines[0] += f" on `{status['flavor']}` ({priced})"
    job = status["job"]
    if job is None:
        return lines[0] + ". No round job yet."
    line = f"**Latest round job** {job['id']}: {job['status']}"
    if job["runner"]:
        line += f"; its {job['runner']} runner says {job['runner_stage'] or 'not started'}"
    if job["running_s"] is not None:
        line += f", {job['running_s'] / 60:.1f} min"
    if job["cost_usd"] is not None:
        line += f", ${job['cost_usd']:.2f} so far"
    lines.append(line + ".")
    if job["error"]:
        lines.append(f"**Error**: {job['error'][:600]}")
    if job["log_tail"]:
        tail = job["log_tail"][-2000:].replace("```", "` ` `")
        lines.append(f"The end of its log:\n```\n{tail}\n```")
    return "\n\n".join(lines)
