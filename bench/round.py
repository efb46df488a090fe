"""One whole round on the default model: 3 groups x 30 corrections, timed by stage (closing into
its bundle, then the job); the bundle's size and the time to write and read it; TRL against a
plain PyTorch LoRA loop on the same examples; chat latency while the round trains vs idle.

    .venv/bin/python bench/round.py [--per-group 30] [--eval-samples 24] [--skip-compare]
                                    [--judge-repeats 3]

The last line is one JSON object. Ratios come from one run; absolute seconds depend on load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from crowd.campaigns import utcnow  # noqa: E402
from crowd.config import load_settings  # noqa: E402
from crowd.limits import Limits  # noqa: E402
from crowd.models import load_base  # noqa: E402
from crowd.organizer import Organizer  # noqa: E402
from crowd.rounds.engine import RoundEngine, build_engine  # noqa: E402
from crowd.rounds.judge import FixedJudge, Judge, SequentialJudge  # noqa: E402
from crowd.rounds.material import group_data  # noqa: E402
from crowd.rounds.worker import Worker  # noqa: E402
from crowd.service import CrowdService  # noqa: E402
from crowd.serving.generation import GenerationService  # noqa: E402
from storage import rounds as store  # noqa: E402
from storage.rows import must  # noqa: E402

KEY = "bench"
REWRITES = (ROOT / "assets" / "demo_rewrites.txt").read_text().splitlines()
PROBE = [{"role": "user", "content": "How was your weekend?"}]


def submit(service: CrowdService, people: int, per_group: int) -> int:
    """`people` volunteers in parallel threads, until every group has `per_group` rewrites."""
    sessions = [service.join(f"Bench {i}", consent=True) for i in range(people)]
    groups = {g: [s for s in sessions if s.group_index == g] for g in range(3)}
    count = [0]

    def one_person(session, n: int) -> None:
        for turn in range(n):
            reply = list(service.send(session.token, None, f"Tell me something, please ({turn})."))[
                -1
            ]
            assert reply.message_id is not None  # a finished reply is stored
            service.rewrite(
                session.token,
                reply.message_id,
                REWRITES[(turn * 7 + hash(session.participant_id)) % len(REWRITES)],
            )
            count[0] += 1

    threads = []
    for members in groups.values():
        for i, session in enumerate(members):
            n = per_group // len(members) + (i < per_group % len(members))
            threads.append(threading.Thread(target=one_person, args=(session, n)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count[0]


def chat_latency(
    service: CrowdService, adapter: str, stop: threading.Event | None = None, n: int = 5
) -> list[float]:
    """Seconds for a whole 40-token reply, repeated n times or until `stop` is set."""
    assert service.generation is not None  # the benchmark's service serves its model
    times: list[float] = []
    while (stop is None and len(times) < n) or (stop is not None and not stop.is_set()):
        start = time.perf_counter()
        service.generation.reply(PROBE, adapter)
        times.append(time.perf_counter() - start)
        if stop is not None:
            stop.wait(0.5)
    return times


def run_round(organizer: Organizer, worker: Worker, service: CrowdService, adapter: str) -> dict:
    """Close the round, write its bundle (timed), run its job in a thread, time its stages,
    probe chat latency meanwhile."""
    job_id = organizer.close_round(KEY)
    with service.db() as db:
        job = must(store.claim_job(db, utcnow()), f"job {job_id}")
        round_ = must(store.get_round(db, must(job["round_id"], "the job's round")), "its round")
        campaign = must(store.get_campaign(db, round_["campaign_id"]), "its campaign")
    started = time.perf_counter()
    worker.engine._close(campaign, round_)  # draw, material, scorer, bundle, record: one commit
    closing_s = time.perf_counter() - started
    marks: dict[str, float] = {}
    thread = threading.Thread(target=worker.run_job, args=(job,))
    start = time.monotonic()
    thread.start()
    stop = threading.Event()
    busy: list[float] = []
    prober = threading.Thread(target=lambda: busy.extend(chat_latency(service, adapter, stop)))
    prober.start()
    while thread.is_alive():
        stage = next(j for j in organizer.jobs(KEY) if j["id"] == job_id)["progress"].get(
            "stage", ""
        )
        marks.setdefault(stage.split(" ")[0], time.monotonic() - start)
        thread.join(0.2)
    stop.set()
    prober.join()
    total = time.monotonic() - start
    finished = next(j for j in organizer.jobs(KEY) if j["id"] == job_id)
    evaluating = marks.get("evaluating", total)
    return {
        "job": finished["status"],
        "error": finished["error"],
        "closing_s": closing_s,
        "round_s": total,
        "training_s": evaluating - marks.get("training", 0.0),
        "evaluation_s": total - evaluating,
        "busy_latencies": busy,
    }


def bundle_figures(service: CrowdService, scorer_for) -> dict:
    """Round 1's bundle: its size and files, the time to read it back (every file hashed and
    checked), and the time to write its content again and read that, with a trained candidate
    as the champion adapter (what every later round's bundle carries)."""
    from crowd.rounds.bundle import read_bundle, write_bundle
    from storage import records

    campaign, _ = service.context()
    data_dir = service.settings.data_dir
    with service.db() as db:
        first = store.rounds_of(db, campaign["id"])[0]
        record = must(records.bundle_of(db, first["id"]), "round 1's record")
        trained = [v for g in range(3) if (v := store.candidate_for(db, first["id"], g))]
    root = data_dir / record["path"]
    files = [p for p in root.rglob("*") if p.is_file()]
    started = time.perf_counter()
    bundle = read_bundle(root, record["hash"])
    read_s = time.perf_counter() - started
    adapter = next((data_dir / v["adapter_path"] for v in trained if v["adapter_path"]), None)
    scorer = scorer_for(campaign["id"])
    again = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    started = time.perf_counter()
    written = write_bundle(bundle, again, adapter, scorer)
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    read_bundle(written.folder)
    read_again_s = time.perf_counter() - started
    with_adapter = sum(p.stat().st_size for p in written.folder.rglob("*") if p.is_file())
    figures = {
        "bundle_bytes": sum(p.stat().st_size for p in files),
        "bundle_files": len(files),
        "bundle_examples": sum(len(v) for v in bundle.groups.values()),
        "bundle_read_s": read_s,
        "bundle_with_adapter_bytes": with_adapter,
        "bundle_with_adapter_write_s": write_s,
        "bundle_with_adapter_read_s": read_again_s,
    }
    print(
        f"bundle: {figures['bundle_bytes'] / 1e6:.2f} MB in {len(files)} files "
        f"({figures['bundle_examples']} examples), read and checked in {read_s * 1000:.0f} ms; "
        f"with a champion adapter {with_adapter / 1e6:.2f} MB, written in {write_s * 1000:.0f} ms, "
        f"read in {read_again_s * 1000:.0f} ms"
    )
    return figures


def compare_judges(engine: RoundEngine, service: CrowdService, repeats: int) -> dict:
    """The first round's champion and candidates judged `repeats` times by each judge on its
    bundle's judging set, alternating which goes first; every judgement starts with no replies
    kept and its own sampling seed (a round like another). Mean wall seconds and replies
    decoded per judge."""
    import numpy as np

    from crowd.evaluation import EvalSet
    from crowd.rounds.bundle import read_bundle
    from storage import records

    campaign, _ = service.context()
    data_dir = service.settings.data_dir
    with service.db() as db:
        first = store.rounds_of(db, campaign["id"])[0]
        made = [v for v in store.round_versions(db, first["id"]) if v["adapter_path"]]
        champion = must(store.get_version(db, first["champion_id"]), "round 1's champion")
        record = must(records.bundle_of(db, first["id"]), "round 1's record")
    bundle = read_bundle(data_dir / record["path"])
    evaluator = engine.evaluator
    names = [
        evaluator.load(f"v{v['id']}", data_dir / v["adapter_path"] if v["adapter_path"] else None)
        for v in [champion, *made]
    ]
    target = np.asarray(bundle.target, dtype=np.float32)
    scorer = engine.scorer_for(campaign["id"])
    eval_set = EvalSet("emotion", prompts=bundle.prompts, target=target, scorer=scorer)
    judges: dict[str, Judge] = {"fixed": FixedJudge(), "sequential": SequentialJudge()}
    seconds: dict[str, list[float]] = {name: [] for name in judges}
    replies: dict[str, list[int]] = {name: [] for name in judges}
    crowned: dict[str, list[bool]] = {name: [] for name in judges}
    for repeat in range(repeats):
        order = list(judges) if repeat % 2 == 0 else list(judges)[::-1]
        for name in order:
            evaluator.forget_replies()  # a new round: nothing decoded before
            before = evaluator.decoded
            start = time.monotonic()
            verdict = judges[name].judge(
                evaluator,
                replace(eval_set, seed=1000 + repeat),
                names[0],
                names[1:],
                campaign["win_margin"],
            )
            seconds[name].append(time.monotonic() - start)
            replies[name].append(evaluator.decoded - before)
            crowned[name].append(verdict.crowned)
    fixed, sequential = (statistics.mean(seconds[n]) for n in judges)
    print(
        f"judging {len(names)} models ({repeats} repeats, eval samples {evaluator.samples}): "
        f"fixed {fixed:.1f} s ({statistics.mean(replies['fixed']):.0f} replies), sequential "
        f"{sequential:.1f} s ({statistics.mean(replies['sequential']):.0f} replies) -> "
        f"sequential / fixed {sequential / fixed:.2f}; crowned: {crowned}"
    )
    return {
        "judge_models": len(names),
        "judge_fixed_s": fixed,
        "judge_sequential_s": sequential,
        "judge_sequential_over_fixed": sequential / fixed,
        "judge_fixed_replies": statistics.mean(replies["fixed"]),
        "judge_sequential_replies": statistics.mean(replies["sequential"]),
        "judge_runs_s": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-group", type=int, default=30)
    parser.add_argument("--eval-samples", type=int, default=24)
    parser.add_argument("--compare-steps", type=int, default=8)
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--judge-repeats", type=int, default=3, help="0: skip the judges")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-round-"))
    settings = load_settings({"CROWD_DATA_DIR": str(tmp), "CROWD_WORKER": "false"})
    settings = replace(settings, eval_samples=args.eval_samples, organizer_secret=KEY)
    cache = ROOT / ".venv" / "test-cache" / "models"
    loaded = load_base(settings.model.base_model, cache, "cpu")
    settings = replace(settings, model=replace(settings.model, base_model=str(loaded.path)))
    generation = GenerationService(loaded, replace(settings.model, max_new_tokens=40))
    service = CrowdService(
        settings, generation, limits=Limits(chats_per_minute=10_000, submissions_per_minute=10_000)
    )
    organizer = Organizer(service)
    organizer.update_campaign(
        KEY,
        task="emotion",
        target_emotion="joy",
        min_corrections=3,
        heldout_share=0.2,
        reviews_on=False,  # timing the round's stages: every correction trains and judges
        person_cap=1.0,
    )
    t0 = time.monotonic()
    submitted = submit(service, 9, args.per_group)
    print(f"{submitted} corrections from 9 volunteers in {time.monotonic() - t0:.0f} s")
    adapter = service.adapter_of_round()
    idle = chat_latency(service, adapter)
    worker = Worker(settings.db_path, lambda: build_engine(settings, utcnow), utcnow)
    result = run_round(organizer, worker, service, adapter)
    busy = result.pop("busy_latencies")
    print(
        f"round: closing (bundle and record) {result['closing_s']:.2f} s, then the job "
        f"{result['round_s']:.0f} s (training {result['training_s']:.0f} s, "
        f"evaluation {result['evaluation_s']:.0f} s), job {result['job']}"
    )
    result.update(bundle_figures(service, worker.engine.scorer_for))
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    result["load_average_1m"] = round(load[0], 2)
    ratio = statistics.median(busy) / statistics.median(idle) if busy else None
    print(
        f"chat reply (40 tokens): idle median {statistics.median(idle):.2f} s, while the round "
        f"runs median {statistics.median(busy) if busy else float('nan'):.2f} s over {len(busy)} "
        f"replies -> ratio {ratio:.2f}"
    )
    generation.close()
    judges = (
        compare_judges(worker.engine, service, args.judge_repeats) if args.judge_repeats else {}
    )
    summary = {
        **result,
        "corrections": submitted,
        "eval_samples": args.eval_samples,
        "chat_idle_s": round(statistics.median(idle), 3),
        "chat_busy_s": round(statistics.median(busy), 3) if busy else None,
        "chat_busy_over_idle": round(ratio, 3) if ratio else None,
        **judges,
        "load_average": os.getloadavg(),
    }
    if not args.skip_compare:
        from train import compare

        campaign, _ = service.context()
        with service.db() as db:
            first = store.rounds_of(db, campaign["id"])[0]
            data = group_data(store.round_corrections(db, first["id"]), "emotion", "joy")
        cmp = compare(
            str(loaded.path), data[0].sft, args.compare_steps, repeats=2, settings=settings.training
        )
        summary.update({k: cmp[k] for k in ("trl_s_per_step", "loop_s_per_step", "trl_over_loop")})
    print(f"load average {os.getloadavg()}")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
