"""One person, one voice (issue 26): a ring of free pseudonyms on one network attacks a campaign
through the real app's HTTP API, and what the export says trained and judged afterwards.

The real Gradio app runs in this process on the tiny model (a real server on a free loopback
port). Every client reaches it through `tests/loopback.py`'s forwarder from its own network, so
the app sees real, distinct addresses: 9 honest volunteers on 9 networks and one attacker on a
tenth. The attacker joins 20 pseudonyms (the join limit), writes 5 spam rewrites with each, has
each spam rewrite endorsed by 3 other pseudonyms (by id, as the old API allowed, and through the
queue) and rejects the honest work it is dealt; then the honest volunteers review what they are
dealt, the organizer closes round 1 and the worker runs it. The ring's share of each group's
training rows and of the judging rows is counted in the export's events.jsonl (`used`, `split`).
Rate limits are raised for everyone: they only slow an attacker down. With
CROWD_TEST_HOLD_UNREVIEWED=1 the campaign holds unreviewed corrections back (only trusted ones
train): the figures printed with -s are then the other choice's (docs/results/poisoning.md).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import httpx
import pytest
from gradio_http import call, serve
from loopback import Forwarder, network_address

from crowd.limits import Limits
from tests.apps import KEY

SPAM = "Buy cheap followers now at spam dot example, offer"
GOOD = [
    "What a wonderful surprise, thank you so much!",
    "I am so happy for you, this is great news!",
    "That sounds lovely, enjoy every minute of it!",
]
HONEST, PUPPETS, SPAM_EACH, ENDORSEMENTS = 9, 20, 5, 3
TARGET = 0.10  # the ring's largest share of any group's training rows and of the judging rows
HOLD = os.environ.get("CROWD_TEST_HOLD_UNREVIEWED") == "1"


@dataclass
class Api:
    """One network's HTTP client of the app's named endpoints (`crowd.ui.api`)."""

    http: httpx.Client

    def call(self, name: str, *data) -> tuple[bool, object]:
        """(True, result) or (False, the refusal's message)."""
        event, payload = call(self.http, name, list(data))
        value = json.loads(payload) if payload else None
        if event == "complete":
            return True, value[0] if isinstance(value, list) and len(value) == 1 else value
        return False, (value or {}).get("error") if isinstance(value, dict) else value

    def ok(self, name: str, *data) -> object:
        done, value = self.call(name, *data)
        assert done, f"{name} refused: {value}"
        return value


@pytest.fixture
def app(settings, new_generation):
    """The real app on the tiny model on a free port: (url, service, organizer)."""
    from crowd.organizer import Organizer
    from crowd.service import CrowdService
    from crowd.ui import build_app

    generation = new_generation(max_new_tokens=3)
    limits = Limits(
        chats_per_minute=10**4,
        submissions_per_minute=10**4,
        address_per_minute=10**5,
        reviews_per_minute=10**5,
    )
    service = CrowdService(replace(settings, eval_samples=2), generation, limits=limits)
    organizer = Organizer(service)
    # The campaign defaults (reviews on, min_reviews 2, person_cap 0.25), on the preference
    # task: it judges by held-out pairs, so the round needs no emotion scorer (16 s to load).
    organizer.update_campaign(KEY, task="preference", hold_unreviewed=HOLD)
    demo = build_app(service, organizer, oauth=False)
    url = serve(demo)
    try:
        yield f"{url}/", service, organizer
    finally:
        demo.close()
        generation.close()


class Network:
    """A client on network n (127.0.(10+n).1): a forwarder and an HTTP client through it."""

    def __init__(self, url: str, n: int):
        self.forwarder = Forwarder(url, network_address(n))
        self.api = Api(httpx.Client(base_url=self.forwarder.url, timeout=120))

    def close(self) -> None:
        self.api.http.close()
        self.forwarder.close()


def rewrite(api: Api, token: str, text: str) -> int:
    reply = api.ok("api_chat", token, None, "Tell me something nice.")
    return api.ok("api_rewrite", token, reply["message_id"], text)


def item_key(item: dict) -> int:
    """The id a verdict names: the dealt item's (or, before dealing, the correction's)."""
    return item.get("item_id", item.get("correction_id"))


def parallel(fn, jobs: list, workers: int = 8) -> list:
    """`fn(*job)` for every job, several at a time (a script would not wait either)."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: fn(*job), jobs))


def review_all(api: Api, token: str, verdict_of) -> list[str]:
    """Review every item the queue deals `token`; returns 'verdict:stored' per item."""
    results = []
    for item in api.ok("api_review_queue", token):
        verdict = verdict_of(item)
        done, why = api.call("api_review", token, item_key(item), verdict)
        results.append(f"{verdict}:{done}" + ("" if done else f":{why}"))
    return results


def is_spam(item: dict) -> bool:
    return (item.get("rewrite") or "").startswith(SPAM)


def attack(url: str) -> dict:
    """The whole scenario through HTTP; returns what each side did."""
    honest_nets = [Network(url, n) for n in range(HONEST)]
    ring_net, organizer_net = Network(url, HONEST), Network(url, HONEST + 1)
    ring = ring_net.api
    try:
        honest = [net.api.ok("api_join", f"Honest {i}", True) for i, net in enumerate(honest_nets)]
        parallel(
            lambda i, j: rewrite(honest_nets[i].api, honest[i], f"{GOOD[j]} ({i})"),
            [(i, j) for i in range(HONEST) for j in range(len(GOOD))],
        )
        puppets = [ring.ok("api_join", f"Puppet {i}", True) for i in range(PUPPETS)]
        refused_join, _ = ring.call("api_join", f"Puppet {PUPPETS}", True)
        spam = parallel(
            lambda p, k: (p, rewrite(ring, puppets[p], f"{SPAM} {p}-{k}")),
            [(p, k) for p in range(PUPPETS) for k in range(SPAM_EACH)],
        )
        # three other puppets endorse each spam rewrite by its id, as the old API allowed
        by_id = parallel(
            lambda p, cid, k: ring.call("api_review", puppets[(p + k) % PUPPETS], cid, "endorse")[
                0
            ],
            [(p, cid, k) for p, cid in spam for k in range(1, ENDORSEMENTS + 1)],
        )
        # and through the queue: endorse the ring's spam, reject everything else
        ring_verdicts = parallel(
            lambda t: review_all(ring, t, lambda i: "endorse" if is_spam(i) else "reject"),
            [(t,) for t in puppets],
        )
        honest_verdicts = parallel(
            lambda net, t: review_all(net.api, t, lambda i: "reject" if is_spam(i) else "endorse"),
            list(zip(honest_nets, honest)),
        )
        organizer_net.api.ok("organizer_close", KEY)
        return {
            "refused_21st_join": not refused_join,
            "id_endorsements_stored": sum(by_id),
            "ring_verdicts": dict(Counter(v for vs in ring_verdicts for v in vs)),
            "honest_verdicts": dict(Counter(v for vs in honest_verdicts for v in vs)),
        }
    finally:
        for net in [*honest_nets, ring_net, organizer_net]:
            net.close()


def run_round(service) -> None:
    from crowd.campaigns import utcnow
    from crowd.rounds.engine import build_engine
    from crowd.rounds.worker import Worker

    settings = service.settings
    worker = Worker(settings.db_path, lambda: build_engine(settings, utcnow), utcnow)
    assert worker.step()


def shares(events: list[dict]) -> dict:
    """The ring's share of each group's used training rows and of the used judging rows, and
    what became of the honest rewrites."""
    rewrites = [e for e in events if e["kind"] == "rewrite"]
    train: dict[int, Counter] = {}
    for e in rewrites:
        if e["used"] and e["split"] == "train":
            train.setdefault(e["group"], Counter())[e["rewrite"].startswith(SPAM)] += 1
    judging = Counter(
        e["rewrite"].startswith(SPAM) for e in rewrites if e["used"] and e["split"] == "heldout"
    )
    honest = [e for e in rewrites if not e["rewrite"].startswith(SPAM)]
    return {
        "ring_share_of_training": {g: c[True] / sum(c.values()) for g, c in sorted(train.items())},
        "ring_share_of_judging": judging[True] / max(1, sum(judging.values())),
        "ring_rows": {"train": sum(c[True] for c in train.values()), "judging": judging[True]},
        "honest_rows": {
            "train": sum(c[False] for c in train.values()),
            "judging": judging[False],
            "train_split": sum(e["split"] == "train" for e in honest),
            "statuses": dict(Counter(e["status"] for e in honest)),
        },
    }


def test_a_ring_of_pseudonyms_on_one_network_owns_little_of_what_trains_and_judges(app, tmp_path):
    from crowd.export import export_dataset

    url, service, organizer = app
    started = time.monotonic()
    done = attack(url)
    attacked = time.monotonic()
    run_round(service)
    done["seconds"] = {"attack": attacked - started, "round": time.monotonic() - attacked}
    export_dataset(service.settings.db_path, tmp_path / "export")
    lines = (tmp_path / "export" / "events.jsonl").read_text().splitlines()
    found = shares([json.loads(line) for line in lines])
    print(json.dumps({**done, **found}))  # the figures, with -s
    assert done["refused_21st_join"] and done["id_endorsements_stored"] == 0
    assert found["honest_rows"]["train"] > 0, "honest data still trains"
    assert len(found["ring_share_of_training"]) == 3, "every group trained"
    assert max(found["ring_share_of_training"].values()) <= TARGET, found
    assert found["ring_share_of_judging"] <= TARGET, found
    the_organizer_sees_the_ring(organizer)


def the_organizer_sees_the_ring(organizer) -> None:
    """The Data quality view on the attack's data: disagreeing with twenty puppets does not make
    an honest volunteer suspicious, every puppet shows its source group of 20, and hiding that
    group is one action."""
    report = organizer.quality(KEY)
    puppets = [s for s in report.suspects if s.name.startswith("Puppet")]
    honest = [s for s in report.suspects if s.name.startswith("Honest")]
    assert len(puppets) == PUPPETS and len(honest) == HONEST
    assert max(s.score for s in honest) < min(s.score for s in puppets), report.suspects
    assert {s.evidence["pseudonyms"] for s in puppets} == {PUPPETS}
    assert {s.evidence["pseudonyms"] for s in honest} == {1}
    assert report.sources[0].pseudonyms == sorted(s.participant_id for s in puppets)
    assert organizer.hide_group(KEY, puppets[0].participant_id) == PUPPETS
    assert all(s.hidden for s in organizer.quality(KEY).suspects if s.name.startswith("Puppet"))
