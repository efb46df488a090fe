"""The organizer page's Replication tab: whether every commit reaches the replica, how far it
lags, and whether the replica still restores (`crowd.replication.health_of`). Its own module,
so that the other tabs' handlers stay apart."""

from __future__ import annotations

from datetime import datetime

import gradio as gr

from crowd.limits import Refused
from crowd.organizer import Organizer
from crowd.replication import Health, health_of
from crowd.ui.components import warn
from storage.replica_health import utc_now

VERDICTS = {
    "healthy": "Healthy: every commit reaches the replica, and it restores.",
    "lagging": "Lagging: the replica is behind the database by more than a few syncs.",
    "failing": "FAILING: what is committed now may not survive a restart.",
}
OFF = (
    "**Replication is off** (CROWD_REPLICA is unset): the database lives on this machine's "
    "disk only. On a Space that disk is wiped at every restart: set CROWD_REPLICA "
    "(docs/deploy.md, section 3)."
)


def ago(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "never"
    seconds = (now - datetime.fromisoformat(stamp)).total_seconds()
    return f"{stamp} ({max(0, round(seconds))} s ago)"


def replication_text(health: Health, now: datetime | None = None) -> str:
    """The tab's Markdown: the verdict, its problems, then the facts it rests on."""
    if health.verdict == "off":
        return OFF
    now, s = now or utc_now(), health.status
    lines = [f"### Replication to `{health.target}`", f"**{VERDICTS[health.verdict]}**"]
    lines += [f"- **Problem**: {problem}" for problem in health.problems]
    lines.append(f"- Last successful sync: {ago(s.get('synced_at'), now)}")
    if "lag_s" in s:
        lines.append(
            f"- Lag: {s['lag_s']} s (newest transaction here {s.get('local_txid')}, in the "
            f"replica {s.get('replica_txid')}; measured {ago(s.get('probed_at'), now)})"
        )
    alive = s.get("litestream_running")  # None until Litestream was first started
    running = "not started" if alive is None else "running" if alive else "NOT running"
    lines.append(f"- Litestream: {running}, restarted {s.get('restarts', 0)} time(s)")
    if s.get("last_error"):
        lines.append(
            f"- Last error ({ago(s.get('last_error_at'), now)}): `{s['last_error'][:300]}`"
        )
    check = s.get("restore_check")
    every = s.get("check_every_s")
    if check:
        result = "passed" if check.get("ok") else "FAILED"
        lines.append(
            f"- Restore check (a full restore into a temporary file, then an integrity check, "
            f"every {every} s): {result} {ago(check.get('at'), now)}, in {check.get('seconds')} s"
            f": {check.get('detail')}"
        )
    else:
        lines.append(f"- Restore check: not run yet (every {every} s, once the replica holds data)")
    return "\n".join(lines)


class ReplicationHandlers:
    def __init__(self, organizer: Organizer):
        self.organizer = organizer

    def show(self, key: str | None) -> str:
        try:
            self.organizer.check_key(key)
        except Refused as exc:
            warn(exc)
            return gr.skip()
        return replication_text(health_of(self.organizer.service.settings))
