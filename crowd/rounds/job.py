"""The round job: train every candidate of a bundle and judge them all with the champion, from
the bundle alone (no database), into an OUT folder it can resume from (crowd.rounds.results).

The same function runs in the app's worker thread (runner `thread`), in a child process and in
a Hugging Face Job (`python -m crowd round-job BUNDLE OUT`, runners `process` and `hf-jobs`):

    1. OUT is checked: it must be new or belong to this bundle; finished results end the job.
    2. each candidate not yet trained is made by its kind (CANDIDATE_KINDS), its adapter and how
       it ended written to OUT before the next starts;
    3. the champion and every trained candidate are judged on the bundle's judging set;
    4. the crowning decision, each contribution's value for points (emotion: its reply's vector;
       preference: how much more the best candidate prefers its pair's chosen reply than the
       champion did) and, when a candidate is crowned, the showcase replies;
    5. results.json, last.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crowd.config import ModelSettings, TrainingSettings
from crowd.evaluation import EvalSet, Evaluator
from crowd.rounds.bundle import (
    ADAPTER_FILES,
    Bundle,
    BundleError,
    Candidate,
    JudgingSettings,
)
from crowd.rounds.judge import SequentialJudge
from crowd.rounds.progress import Reporter
from crowd.rounds.results import (
    CANDIDATES,
    CHAMPION,
    OWNER,
    RESULTS,
    Results,
    ResultsMismatch,
    decide,
    read_results,
    write_json,
    write_results,
)
from crowd.rounds.showcase import before_after_rows
from crowd.serving.protocol import Sampling
from crowd.training.base import Progress, TrainResult
from crowd.training.data import SFTExample, TrainingCancelled, TrainingFailed

if TYPE_CHECKING:  # heavy (TRL): the kit is built in build_kit, on demand
    from crowd.training.trainer import TRLTrainer


@dataclass
class Kit:
    """The models a job runs on: the trainer's and the judge's private copies of the base,
    loaded once and kept by the thread runner from round to round."""

    trainer: TRLTrainer
    evaluator: Evaluator
    base_model: str
    scorers: dict[str, Any] = field(default_factory=dict)  # by the scorer file's hash


def build_kit(
    base_model: str,
    training: TrainingSettings,
    models_dir: Path,
    device: str,
    judging: JudgingSettings | None = None,
    *,
    remote: ModelSettings | None = None,
    trainer_class: type[TRLTrainer] | None = None,
    evaluator_class: type[Evaluator] | None = None,
) -> Kit:
    """The trainer and the judge, each on its own copy of `base_model` on `device`: the one way
    a round's models are built (the worker's thread runner, a round job's process, the studies).
    `judging` sets the judge's replies until a bundle sets them; `remote`: the judge samples
    from that vLLM server (CROWD_SERVING=vllm); `trainer_class`, `evaluator_class`: subclasses
    of the real ones (the poisoning study times them)."""
    from crowd.models import load_base, resolve_base_model
    from crowd.training.trainer import TRLTrainer

    j = judging or JudgingSettings()
    base_path = resolve_base_model(base_model, models_dir)
    judge = load_base(base_path, models_dir, device)
    trainer = (trainer_class or TRLTrainer)(base_path, training, device=judge.device)
    vllm = None
    if remote is not None:  # the judges' samples come from the same server as the replies
        from crowd.serving.vllm_engine import VLLMGeneration

        vllm = VLLMGeneration(remote)
    evaluator = (evaluator_class or Evaluator)(
        judge,
        samples=j.samples,
        max_new_tokens=j.max_new_tokens,
        batch_size=j.batch_size,
        remote=vllm,
    )
    return Kit(trainer, evaluator, base_model)


def run_round_job(bundle: Bundle, out: Path, kit: Kit, report: Reporter) -> Results:
    """Steps 1-5 for `bundle` into `out`. Raises TrainingCancelled when `report` says stop,
    BundleError when `out` belongs to another bundle."""
    done = _claim(out, bundle)
    if done is not None:
        return done
    trained, failed = {}, {}
    for n, candidate in enumerate(bundle.candidates):
        groups_done = sum(c.kind == "group" for c in bundle.candidates[:n])  # the union's too
        _stage(report, {"stage": _training_stage(candidate), "groups_done": groups_done})
        outcome = make_candidate(kit, bundle, candidate, out, report)
        if outcome.get("status") == "trained":
            trained[candidate.name] = {k: outcome[k] for k in ("steps", "loss", "seconds")}
        else:
            failed[candidate.name] = outcome["error"]
    groups = sum(c.kind == "group" for c in bundle.candidates)
    _stage(report, {"stage": "evaluating", "groups_done": groups, "judging": True})
    eval_set = _eval_set(kit, bundle)
    names, scores = _judge(kit, bundle, eval_set, out, list(trained), report)
    best, improved = decide(scores, [c.name for c in bundle.candidates], bundle.judging)
    contributions = _contributions(kit, bundle, eval_set, names, best)
    showcase: list[dict] = []
    if improved:
        _stage(report, {"stage": "before/after replies"})
        showcase = before_after_rows(
            kit.evaluator, bundle.showcase, names[CHAMPION], names[best], eval_set
        )
    write_results(
        out,
        bundle,
        trained=trained,
        failed=failed,
        scores=scores,
        best=best,
        improved=improved,
        contributions=contributions,
        showcase=showcase,
    )
    report({"stage": "finished"}, force=True)
    return read_results(out, bundle)


def _stage(report: Reporter, update: dict) -> None:
    """A new stage, reported at once; the job stops here if it was cancelled."""
    if not report(update, force=True):
        raise TrainingCancelled(f"cancelled before {update['stage']}")


def _training_stage(candidate: Candidate) -> str:
    if candidate.kind == "group":
        return f"training group {candidate.group}"
    if candidate.kind == "union":
        return "training all groups together"
    return f"making the {candidate.name} candidate"


def _claim(out: Path, bundle: Bundle) -> Results | None:
    """Make OUT this bundle's (refusing another's); its finished results if it has them."""
    out.mkdir(parents=True, exist_ok=True)
    owner = out / OWNER
    if owner.is_file() and owner.read_text().strip() != bundle.hash:
        raise BundleError(
            f"{out} holds the job of bundle {owner.read_text().strip()[:12]}, not of "
            f"{bundle.hash[:12]}: give each round's job its own OUT folder"
        )
    owner.write_text(bundle.hash + "\n")
    if (out / RESULTS).is_file():
        try:
            return read_results(out, bundle)
        except ResultsMismatch:
            (out / RESULTS).unlink()  # half-valid: judge again from the adapters
    (out / CANDIDATES).mkdir(exist_ok=True)
    return None


# --- 2. candidates -----------------------------------------------------------------------------


def make_candidate(
    kit: Kit, bundle: Bundle, candidate: Candidate, out: Path, report: Reporter
) -> dict:
    """How `candidate` ended, making it first unless OUT already says (a resumed job)."""
    marker = out / CANDIDATES / f"{candidate.name}.json"
    target = out / CANDIDATES / candidate.name
    if marker.is_file():
        outcome = json.loads(marker.read_text())
        if outcome.get("status") != "trained" or all((target / f).is_file() for f in ADAPTER_FILES):
            return outcome
        marker.unlink()  # its adapter went missing (a lossy store): train it again
    shutil.rmtree(target, ignore_errors=True)  # a half-written folder from a killed job
    make = CANDIDATE_KINDS.get(candidate.kind)
    started = time.monotonic()
    try:
        if make is None:
            raise TrainingFailed(f"unknown candidate kind {candidate.kind!r}")
        result = make(kit, bundle, candidate, target, _progress_of(report, candidate))
        outcome = {"status": "trained", "steps": result.steps, "loss": result.final_loss}
    except TrainingCancelled:
        raise
    except TrainingFailed as exc:
        outcome = {"status": "failed", "error": str(exc)}
    except Exception as exc:  # any other crash fails this candidate, not the round
        outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    outcome["seconds"] = round(time.monotonic() - started, 3)
    write_json(marker, outcome)
    return outcome


def _progress_of(report: Reporter, candidate: Candidate) -> Callable[[Progress], bool]:
    def progress(p: Progress) -> bool:
        update = {"group": candidate.group, "step": p.step, "steps": p.steps, "loss": p.loss}
        return report({**update, "eta_s": p.eta_s}, force=p.step == p.steps)

    return progress


def train_group(kit: Kit, bundle: Bundle, candidate: Candidate, out_dir: Path, progress) -> Any:
    """Kinds 'group' and 'union': a LoRA from the champion (or the candidate's own start) on
    the examples of the candidate's groups and its memory of earlier rounds."""
    examples = bundle.examples_of(candidate)
    kit.trainer.settings = bundle.training  # the round's settings, whatever the kit was built with
    return kit.trainer.train(
        init_adapter=bundle.start_dir(candidate),
        sft=[SFTExample(e.sft) for e in examples if e.sft],
        pairs=[e.pair for e in examples if e.pair],
        mode=bundle.mode,
        out_dir=out_dir,
        progress=progress,
        scale=candidate.scale,
    )


def merge_inputs(kit: Kit, bundle: Bundle, candidate: Candidate, out_dir: Path, progress) -> Any:
    """Kind 'merged': the adapters of the candidate's inputs that trained, merged by PEFT's
    combination `candidate.method` (crowd.training.merge). MergeRefused (a TrainingFailed:
    the candidate fails, the round goes on) when fewer than two trained or they differ in rank
    or targets."""
    done = out_dir.parent
    trained = [
        name
        for name in candidate.inputs
        if (done / f"{name}.json").is_file()
        and json.loads((done / f"{name}.json").read_text()).get("status") == "trained"
    ]
    started = time.monotonic()
    kit.trainer.merge(
        [done / name for name in trained],
        out_dir,
        candidate.method,
        [_label(bundle, name) for name in trained],
        candidate.density,
    )
    return TrainResult(out_dir, 0, 0.0, time.monotonic() - started)


def _label(bundle: Bundle, name: str) -> str:
    """How a message names a candidate: 'group Amber', or its name."""
    from crowd.groups import group_name

    group = next((c.group for c in bundle.candidates if c.name == name), None)
    return f"group {group_name(group)}" if group is not None else name


CANDIDATE_KINDS: dict[str, Callable[..., Any]] = {
    "group": train_group,
    "union": train_group,
    "merged": merge_inputs,
}
"""How each kind of candidate is made: (kit, bundle, candidate, out_dir, progress) -> a
TrainResult, the adapter written to out_dir (crowd.rounds.candidates says which a round has).
A kind made from others ('merged') comes after them in the bundle's order."""


# --- 3-4. judging, contributions -----------------------------------------------------------


def _eval_set(kit: Kit, bundle: Bundle) -> EvalSet:
    """What the round is judged on: the bundle's held-out prompts, target, scorer and seed, or
    its held-out pairs."""
    if bundle.task != "emotion":
        return EvalSet("preference", pairs=bundle.pairs)
    target = np.asarray(bundle.target, dtype=np.float32)
    return EvalSet(
        "emotion",
        prompts=bundle.prompts,
        target=target,
        scorer=_scorer(kit, bundle),
        seed=bundle.judging.seed,
    )


def _judge(
    kit: Kit, bundle: Bundle, eval_set: EvalSet, out: Path, trained: list[str], report: Reporter
) -> tuple:
    """({'champion' | candidate: adapter name in the evaluator}, {same keys: Score}); reports
    how many of the models are judged, with an estimate of the time left."""
    evaluator = kit.evaluator
    j = bundle.judging
    evaluator.samples, evaluator.batch_size = j.samples, j.batch_size
    evaluator.sampling = Sampling(
        max_new_tokens=j.max_new_tokens, temperature=j.temperature, top_p=j.top_p
    )
    tag = f"r{bundle.round['id']}"
    names = {CHAMPION: evaluator.load(f"{tag}_champion", bundle.champion_dir)}
    for name in trained:
        names[name] = evaluator.load(f"{tag}_{name}", out / CANDIDATES / name)
    progress = _judging(report)
    if j.judge == "sequential":  # in looks (crowd.rounds.judge); preference: as the fixed one
        adapters = list(names.values())
        verdict = SequentialJudge(j.crown_z).judge(
            evaluator, eval_set, adapters[0], adapters[1:], j.win_margin, progress
        )
        key = {adapter: name for name, adapter in names.items()}
        return names, {key[a]: score for a, score in verdict.scores.items()}
    results = evaluator.evaluate(eval_set, list(names.values()), progress=progress)
    return names, dict(zip(names, results))


def _judging(report: Reporter) -> Callable[[float, int], None]:
    """The evaluator's progress as the job's: models judged of all, and the time left at the
    pace so far (the organizer's jobs table and the volunteers' banner read it)."""
    start = time.monotonic()

    def progress(judged: float, models: int) -> None:
        pace = (time.monotonic() - start) / judged if judged > 0 else None
        eta = round(pace * (models - judged), 1) if pace is not None else None
        update = {"judged": int(judged), "models": models, "eta_s": eta}
        report(update, force=judged >= models)

    return progress


def _scorer(kit: Kit, bundle: Bundle) -> Any:
    from crowd.scoring.scorers import EmbeddingHeadScorer, HubScorer

    ref = bundle.scorer or {}
    key = f"hub:{ref['hub']}" if "hub" in ref else bundle.hash
    if key not in kit.scorers:
        if "hub" in ref:
            kit.scorers = {key: HubScorer(ref["hub"])}
        elif bundle.scorer_file is not None:
            kit.scorers = {key: EmbeddingHeadScorer.load(bundle.scorer_file)}
        else:
            raise BundleError(f"the emotion bundle {bundle.hash[:12]} carries no scorer")
    return kit.scorers[key]


def _contributions(
    kit: Kit, bundle: Bundle, eval_set: EvalSet, names: dict, best: str | None
) -> dict:
    """correction id -> {vector, margin} for every example that teaches a reply."""
    items = bundle.contributions()
    if bundle.task == "emotion":
        texts = [e.text for _, _, e in items]
        vectors = eval_set.scorer.score(texts) if texts else []
        return {
            cid: {"vector": [float(v) for v in vec], "margin": None}
            for (_, cid, _), vec in zip(items, vectors)
        }
    margins: dict[int, float] = {}
    paired = [(cid, e.pair) for _, cid, e in items if e.pair is not None]
    if best is not None and paired:
        pairs = [p for _, p in paired]
        gains = np.array(_margins(kit, pairs, names[best])) - np.array(
            _margins(kit, pairs, names[CHAMPION])
        )
        margins = {cid: float(gain) for (cid, _), gain in zip(paired, gains)}
    return {cid: {"vector": None, "margin": margins.get(cid)} for _, cid, _ in items}


def _margins(kit: Kit, pairs: list, adapter: str) -> list[float]:
    evaluator = kit.evaluator
    chosen = evaluator.mean_log_likelihood([(p.prompt, p.chosen) for p in pairs], adapter)
    rejected = evaluator.mean_log_likelihood([(p.prompt, p.rejected) for p in pairs], adapter)
    return [c - r for c, r in zip(chosen, rejected)]
