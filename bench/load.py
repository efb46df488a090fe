"""Load benchmark: simulated volunteers chat and submit at once through the app's real HTTP API
(`gradio_client` against `app.py` in a subprocess, on the default model) while a round trains.

    .venv/bin/python bench/load.py [--volunteers 20] [--seconds 60] [--baseline-seconds 30]

Three arms, one after another in one run: one volunteer, N volunteers, one volunteer again (the
two single-volunteer arms are pooled as the baseline). Whenever the worker is idle, the round is
closed again, so training runs through all arms. Reported: submissions lost (confirmed to the
client but absent from the database; must be 0), and p50/p95 latency of a submission and of a
whole reply, loaded against baseline. The last line is one JSON object. Absolute seconds depend
on the machine and whatever else runs on it; the ratios are the figures to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from storage import queries  # noqa: E402
from storage import rounds as store  # noqa: E402
from storage.db import connect  # noqa: E402

KEY = "bench-organizer-key"
CYCLE_S = 6.0  # one chat per volunteer per 6 s at most: under the 12 chats/minute limit
PROMPTS = [
    "Tell me about your day.",
    "What do you think of rainy weekends?",
    "Give me some advice about a new job.",
    "Write a reddit comment about cats.",
]
HAPPY = "What a joyful thing to hear, I am so happy for you!"


@dataclass
class Tally:
    """What the clients of one arm saw."""

    replies: list[float] = field(default_factory=list)  # seconds per whole reply
    submissions: list[float] = field(default_factory=list)  # seconds per correction
    confirmed: list[tuple[int, str, object]] = field(default_factory=list)  # (id, kind, value)
    refused: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    busy: list[bool] = field(default_factory=list)  # worker busy, sampled every second
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refuse(self, message: str) -> None:
        with self.lock:
            key = message.split(";")[0][:60]
            self.refused[key] = self.refused.get(key, 0) + 1


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


# -- the app --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(
    data_dir: Path, port: int, tokens: int, base_model: str | None, log: Path
) -> subprocess.Popen:
    cached = ROOT / ".venv" / "test-cache" / "models"
    if cached.is_dir():  # reuse the converted default model rather than convert it again
        (data_dir / "models").symlink_to(cached, target_is_directory=True)
    env = {
        **os.environ,
        "CROWD_DATA_DIR": str(data_dir),
        "CROWD_PORT": str(port),
        "CROWD_ORGANIZER_SECRET": KEY,
        "CROWD_MAX_NEW_TOKENS": str(tokens),
        # The benchmark plays a proxy on loopback: each client's X-Forwarded-For is its address.
        "CROWD_TRUSTED_PROXIES": "127.0.0.1, ::1",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    env.pop("CROWD_BASE_MODEL", None)  # unset: the packaged default, SmolLM2-135M-Instruct
    if base_model:
        env["CROWD_BASE_MODEL"] = base_model
    process = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(1)
    raise SystemExit("the app did not start within 10 minutes")


def client(url: str, address: str):
    from gradio_client import Client

    return Client(
        url,
        verbose=False,
        headers={"X-Forwarded-For": address},
        analytics_enabled=False,
        download_files=False,
    )


# -- volunteers -----------------------------------------------------------------------------


def join(url: str, index: int):
    """A client with its own session and network address, and its volunteer's token."""
    api = client(url, f"10.1.{index // 250}.{index % 250}")
    return api, api.predict(f"Volunteer {index}", True, api_name="/api_join")


def volunteer(api, token: str, index: int, until: float, tally: Tally, rng: random.Random) -> None:
    """Chat, then rewrite or rate or label the reply, one cycle per CYCLE_S, until `until`."""
    conversation, n = None, 0
    while time.monotonic() < until:
        start = time.monotonic()
        reply = timed(
            tally,
            tally.replies,
            lambda c=conversation: api.predict(token, c, rng.choice(PROMPTS), api_name="/api_chat"),
        )
        if reply is not None:
            conversation, n = reply["conversation_id"], n + 1
            submit(api, token, reply["message_id"], f"{index}-{n}", n, tally)
        time.sleep(max(0.0, start + CYCLE_S - time.monotonic()))


def submit(api, token: str, message_id: int, marker: str, n: int, tally: Tally) -> None:
    """One correction; what the server confirmed is remembered, to be found in the database."""
    kind, value, endpoint = [
        ("rewrite", f"{HAPPY} [{marker}]", "/api_rewrite"),
        ("rating", 1, "/api_rate"),
        ("emotion", "joy", "/api_label"),
    ][n % 3]
    correction_id = timed(
        tally, tally.submissions, lambda: api.predict(token, message_id, value, api_name=endpoint)
    )
    if correction_id is not None:
        with tally.lock:
            tally.confirmed.append((int(correction_id), kind, value))


def timed(tally: Tally, into: list[float], call):
    """Run one API call; record its latency if it succeeded, its refusal or error if not."""
    from gradio_client.exceptions import AppError

    start = time.monotonic()
    try:
        result = call()
    except AppError as exc:  # a refusal with the service's message (rate limit, old round)
        tally.refuse(str(exc))
        return None
    except Exception as exc:  # the HTTP layer failed: the client cannot know what was stored
        with tally.lock:
            tally.errors.append(f"{type(exc).__name__}: {exc}"[:200])
        return None
    with tally.lock:
        into.append(time.monotonic() - start)
    return result


# -- keeping a round in training --------------------------------------------------------------


def worker_state(db_path: Path) -> tuple[bool, bool]:
    """(a round job is pending or running, the open round has enough data for some group)."""
    with connect(db_path) as db:
        busy = any(j["status"] in ("pending", "running") for j in store.recent_jobs(db, 5))
        campaign = store.active_campaign(db)
        round_ = store.current_round(db, campaign["id"])
        counts = queries.group_correction_counts(db, round_["id"], campaign["n_groups"])
    return busy, max(counts) >= campaign["min_corrections"]


def keep_training(url: str, db_path: Path, until: float, tally: Tally, closed: list) -> None:
    """Sample whether the worker is busy each second; when it is idle and the open round has
    data to train on, close the round (as the organizer, over HTTP)."""
    organizer = client(url, "10.9.9.9")
    while time.monotonic() < until:
        busy, ready = worker_state(db_path)
        tally.busy.append(busy)
        if not busy and ready:
            organizer.predict(KEY, api_name="/organizer_close")
            closed.append(time.monotonic())
        time.sleep(1.0)


def seed(url: str, people: int, rewrites: int) -> None:
    """Rewrites in every group (in parallel, untimed), so that the first round trains long."""

    def one(i: int) -> None:
        api = client(url, f"10.8.0.{i}")
        token = api.predict(f"Seed {i}", True, api_name="/api_join")
        for turn in range(rewrites):
            reply = api.predict(token, None, PROMPTS[turn % len(PROMPTS)], api_name="/api_chat")
            api.predict(token, reply["message_id"], HAPPY, api_name="/api_rewrite")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_arm(
    url: str, db_path: Path, arm: int, volunteers: int, seconds: float, closed: list
) -> Tally:
    """`volunteers` new volunteers (joined before the clock starts) for `seconds`."""
    tally = Tally()
    ids = [100 * arm + i for i in range(volunteers)]
    joined = [join(url, i) for i in ids]
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=volunteer, args=(api, token, i, until, tally, random.Random(i)))
        for i, (api, token) in zip(ids, joined)
    ]
    threads.append(
        threading.Thread(target=keep_training, args=(url, db_path, until, tally, closed))
    )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


# -- report ---------------------------------------------------------------------------------


def lost(db_path: Path, confirmed: list[tuple[int, str, object]]) -> int:
    """Corrections the server confirmed that the database lacks (or holds with other content)."""
    with connect(db_path) as db:
        stored = {
            row[0]: row[1:]
            for row in db.execute("SELECT id, kind, rewrite, rating, emotion FROM corrections")
        }
    fields = {"rewrite": 1, "rating": 2, "emotion": 3}
    return sum(
        cid not in stored or stored[cid][0] != kind or stored[cid][fields[kind]] != value
        for cid, kind, value in confirmed
    )


def summary(arm: Tally) -> dict:
    def r(x):
        return None if x is None else round(x, 3)

    return {
        "replies": len(arm.replies),
        "submissions": len(arm.submissions),
        "reply_p50_s": r(percentile(arm.replies, 50)),
        "reply_p95_s": r(percentile(arm.replies, 95)),
        "submit_p50_s": r(percentile(arm.submissions, 50)),
        "submit_p95_s": r(percentile(arm.submissions, 95)),
        "refused": arm.refused,
        "errors": len(arm.errors),
        "training_busy_share": r(sum(arm.busy) / len(arm.busy)) if arm.busy else None,
    }


def pooled(a: Tally, b: Tally) -> Tally:
    return Tally(
        a.replies + b.replies,
        a.submissions + b.submissions,
        a.confirmed + b.confirmed,
        {k: a.refused.get(k, 0) + b.refused.get(k, 0) for k in {*a.refused, *b.refused}},
        a.errors + b.errors,
        a.busy + b.busy,
    )


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volunteers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--baseline-seconds", type=float, default=30.0)
    parser.add_argument("--tokens", type=int, default=48, help="max new tokens per reply")
    parser.add_argument("--seed-people", type=int, default=9)
    parser.add_argument("--seed-rewrites", type=int, default=4, help="per seed volunteer")
    parser.add_argument(
        "--base-model",
        default=None,
        help="a model folder instead of the default (for a quick smoke run)",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="crowd-load-"))
    data_dir, port = work / "data", free_port()
    data_dir.mkdir()
    app = start_app(data_dir, port, args.tokens, args.base_model, work / "app.log")
    url, db_path, closed = f"http://127.0.0.1:{port}/", data_dir / "crowd.db", []
    try:
        seed(url, args.seed_people, args.seed_rewrites)
        first = run_arm(url, db_path, 1, 1, args.baseline_seconds, closed)
        loaded = run_arm(url, db_path, 2, args.volunteers, args.seconds, closed)
        second = run_arm(url, db_path, 3, 1, args.baseline_seconds, closed)
        baseline = pooled(first, second)
        missing = lost(db_path, baseline.confirmed + loaded.confirmed)
    finally:
        app.terminate()
        app.wait(timeout=30)
    result = report(args, loaded, baseline, missing, len(closed))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if result["submissions_lost"] == 0 else 1


def report(args, loaded: Tally, baseline: Tally, missing: int, rounds_closed: int) -> dict:
    heavy, light = summary(loaded), summary(baseline)
    for name, arm in ((f"{args.volunteers} volunteers", heavy), ("1 volunteer", light)):
        print(f"{name:>14}: {arm}")
    for error in (loaded.errors + baseline.errors)[:5]:
        print("error:", error)
    result = {
        "volunteers": args.volunteers,
        "seconds": args.seconds,
        "tokens": args.tokens,
        "submissions_confirmed": len(loaded.confirmed) + len(baseline.confirmed),
        "submissions_lost": missing,
        "rounds_closed_during_run": rounds_closed,
        "loaded": heavy,
        "baseline": light,
        "reply_p50_ratio": ratio(heavy["reply_p50_s"], light["reply_p50_s"]),
        "reply_p95_ratio": ratio(heavy["reply_p95_s"], light["reply_p95_s"]),
        "submit_p50_ratio": ratio(heavy["submit_p50_s"], light["submit_p50_s"]),
        "submit_p95_ratio": ratio(heavy["submit_p95_s"], light["submit_p95_s"]),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(main())
