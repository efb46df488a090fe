"""The load benchmark's parts: the app in a subprocess, simulated volunteers over its HTTP API
(`gradio_client`), what they saw, and the organizer who keeps a round training.

Two volunteer models:
- heavy: a chat every CYCLE_S (6 s) at most and a correction after every reply: an overload
  (kept from the first version of this benchmark, to compare with it);
- realistic: a chat, READ_S (uniform 5-15 s) to read the reply, a correction after
  CORRECT_SHARE (80 %) of replies, then THINK_S (uniform 20-60 s) before the next message; the
  first message comes after a uniform 0-20 s, so a crowd does not arrive in one burst. About one
  chat per 50 s per volunteer, a guess at a person who reads, rewrites and labels.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from storage import queries
from storage import rounds as store
from storage.db import connect
from storage.rows import must

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-organizer-key"
CYCLE_S = 6.0  # heavy: one chat per volunteer per 6 s at most, under the 12 chats/minute limit
READ_S = (5.0, 15.0)
CORRECT_SHARE = 0.8
THINK_S = (20.0, 60.0)
FIRST_S = (0.0, 20.0)
POLL_S = 0.01
"""How often a client looks for the streamed reply's first text (so time to first token is up
to 10 ms late). gradio_client's own iterator looks every 1 ms: 20 volunteers' clients then
took a third of a core of this 2-core machine from the app they measure (2026-12-03)."""
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

    ttft: list[float] = field(default_factory=list)  # seconds to the first streamed text
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

    def error(self, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{type(exc).__name__}: {exc}"[:200])


def percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- the app --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(
    data_dir: Path, port: int, tokens: int, scheduler: str, base_model: str | None, log: Path
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
        "CROWD_SCHEDULER": scheduler,
        # The benchmark plays a proxy on loopback: each client's X-Forwarded-For is its address.
        "CROWD_TRUSTED_PROXIES": "127.0.0.1, ::1",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": str(ROOT),  # this checkout's crowd/, whatever the venv has installed
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
        ssl_verify=False,  # plain HTTP on loopback; verifying would load the CA bundle per call
    )


def join(url: str, index: int):
    """A client with its own session and network address, and its volunteer's token."""
    api = client(url, f"10.{1 + index // 62500}.{index // 250 % 250}.{index % 250}")
    return api, api.predict(f"Volunteer {index}", True, api_name="/api_join")


# -- one volunteer's actions ------------------------------------------------------------------


def chat(api, token: str, conversation, text: str, tally: Tally):
    """One message through the streaming endpoint: time to the first text and to the stored
    reply are recorded; returns the stored reply or None."""
    from gradio_client.exceptions import AppError

    start = time.monotonic()
    first = None
    try:
        job = api.submit(token, conversation, text, api_name="/api_chat_stream")
        while not job.done():  # gradio_client's own iterator looks every 1 ms: see POLL_S
            if first is None and any(step and step.get("text") for step in job.outputs()):
                first = time.monotonic() - start
            time.sleep(POLL_S)
        reply = job.result()
    except AppError as exc:  # a refusal with the service's message (rate limit, old round)
        tally.refuse(str(exc))
        return None
    except Exception as exc:  # the HTTP layer failed: the client cannot know what was stored
        tally.error(exc)
        return None
    with tally.lock:
        tally.replies.append(time.monotonic() - start)
        tally.ttft.append(first if first is not None else time.monotonic() - start)
    return reply


def submit(api, token: str, message_id: int, marker: str, n: int, tally: Tally) -> None:
    """One correction; what the server confirmed is remembered, to be found in the database."""
    from gradio_client.exceptions import AppError

    kind, value, endpoint = [
        ("rewrite", f"{HAPPY} [{marker}]", "/api_rewrite"),
        ("rating", 1, "/api_rate"),
        ("emotion", "joy", "/api_label"),
    ][n % 3]
    start = time.monotonic()
    try:
        correction_id = api.predict(token, message_id, value, api_name=endpoint)
    except AppError as exc:
        tally.refuse(str(exc))
        return
    except Exception as exc:
        tally.error(exc)
        return
    with tally.lock:
        tally.submissions.append(time.monotonic() - start)
        tally.confirmed.append((int(correction_id), kind, value))


def heavy(api, token: str, index: int, until: float, tally: Tally, rng: random.Random) -> None:
    """Chat, then rewrite or rate or label the reply, one cycle per CYCLE_S, until `until`."""
    conversation, n = None, 0
    while time.monotonic() < until:
        start = time.monotonic()
        reply = chat(api, token, conversation, rng.choice(PROMPTS), tally)
        if reply is not None:
            conversation, n = reply["conversation_id"], n + 1
            submit(api, token, reply["message_id"], f"{index}-{n}", n, tally)
        time.sleep(max(0.0, start + CYCLE_S - time.monotonic()))


def realistic(api, token: str, index: int, until: float, tally: Tally, rng: random.Random) -> None:
    """Chat, read, correct most replies, think; the pauses are drawn as the docstring says."""
    conversation, n = None, 0
    pause(rng.uniform(*FIRST_S), until)
    while time.monotonic() < until:
        reply = chat(api, token, conversation, rng.choice(PROMPTS), tally)
        if reply is not None:
            conversation, n = reply["conversation_id"], n + 1
            pause(rng.uniform(*READ_S), until)
            if rng.random() < CORRECT_SHARE and time.monotonic() < until:
                submit(api, token, reply["message_id"], f"{index}-{n}", n, tally)
        pause(rng.uniform(*THINK_S), until)


def pause(seconds: float, until: float) -> None:
    time.sleep(max(0.0, min(seconds, until - time.monotonic())))


# -- keeping a round in training --------------------------------------------------------------


def worker_state(db_path: Path) -> tuple[bool, bool]:
    """(a round job is pending or running, the open round has enough data for some group)."""
    with connect(db_path) as db:
        busy = any(j["status"] in ("pending", "running") for j in store.recent_jobs(db, 5))
        campaign = must(store.active_campaign(db), "the benchmark's campaign")
        round_ = must(store.current_round(db, campaign["id"]), "its open round")
        counts = queries.group_correction_counts(db, round_["id"], campaign["n_groups"])
    return busy, max(counts) >= campaign["min_corrections"]


def keep_training(url: str, db_path: Path, until: float, tally: Tally, closed: list) -> None:
    """Sample whether the worker is busy each second; when it is idle and the open round has
    data to train on, close the round (as the organizer, over HTTP)."""
    organizer = client(url, "10.250.9.9")
    while time.monotonic() < until:
        busy, ready = worker_state(db_path)
        tally.busy.append(busy)
        if not busy and ready:
            try:
                organizer.predict(KEY, api_name="/organizer_close")
                closed.append(time.monotonic())
            except Exception as exc:  # e.g. "database is locked" under load: try again in 1 s
                print(f"organizer close failed: {exc}"[:200], flush=True)
        time.sleep(1.0)


def seed(url: str, people: int, rewrites: int) -> None:
    """Rewrites in every group (in parallel, untimed), so that the first round trains long."""

    def one(i: int) -> None:
        api = client(url, f"10.249.0.{i}")
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
    url: str, db_path: Path, first_id: int, volunteers: int, seconds: float, behave, closed: list
) -> Tally:
    """`volunteers` new volunteers acting as `behave` (joined before the clock starts), with a
    round kept training, for `seconds`."""
    tally = Tally()
    ids = [first_id + i for i in range(volunteers)]
    joined = [join(url, i) for i in ids]
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=behave, args=(api, token, i, until, tally, random.Random(i)))
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
