"""The round bundle: everything one round's job needs, in one self-contained, content-addressed
folder, written once when the round closes (crowd.rounds.record) and read by the job that trains
and judges it (crowd.rounds.job), wherever that runs. It is also the record of what trained.

    manifest.json         what the round is: campaign, round, base model, task, training mode,
                          training and judging settings, seed, candidates, every file's sha256
    champion/             the champion's LoRA adapter (absent when the champion is the bare base)
    groups/g<N>.jsonl     group N's training examples, one correction's lesson a line, with its id
    memory/<name>.jsonl   earlier rounds' examples candidate <name> also trains on (memory)
    starts/<name>/        the adapter candidate <name> starts from when not the champion's
    judging.json          the judging set: prompts and the target vector (emotion) or pairs
    showcase.json         volunteers' own prompts, answered by the old and new champion if crowned
    scorer.npz            the emotion scorer's head (emotion task, offline scorer)

The bundle's hash is the sha256 of its manifest, which holds the sha256 of every other file; the
folder is named by it. Reading checks all of it (`read_bundle`): a changed, missing or foreign
file is refused with a message naming it, before any of it is used.

Candidates are listed, each with a `kind` (crowd.rounds.job.CANDIDATE_KINDS says how a kind is
made; crowd.rounds.candidates which a round has): 'group' (one group's examples, or a union of
several groups' with the earlier rounds' examples it remembers) and 'merged' (a merge of the
adapters of candidates made before it). A new kind is a new entry there, not a new format.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from crowd.config import TrainingSettings
from crowd.training.data import PairExample

FORMAT = "crowd-round-bundle/1"
MANIFEST = "manifest.json"
CHAMPION = "champion"
SCORER = "scorer.npz"
STARTS = "starts"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class BundleError(ValueError):
    """The bundle cannot be used as it is; the message names the bundle and what is wrong."""


@dataclass(frozen=True)
class JudgingSettings:
    """How every model of a round is judged and when a candidate is crowned."""

    samples: int = 24  # replies sampled per model (emotion task)
    max_new_tokens: int = 48
    batch_size: int = 16
    seed: int = 0  # prompt j's sampling seed is the same under every model of a round
    temperature: float = 0.8
    top_p: float = 0.95
    win_margin: float = 0.0  # the campaign's: a candidate must beat the champion by this
    crown_z: float = 2.0  # ... plus this many standard errors (crowd.rounds.judge.CROWN_Z)
    judge: str = "fixed"  # emotion task: 'fixed' replies per model, or 'sequential' (in looks)

    def for_round(self, number: int, win_margin: float, judge: str) -> JudgingSettings:
        """What judges round `number`: the campaign's margin and judge, and sampling seeds of the
        round's own (seed + number), so a champion's replies are sampled afresh each round
        rather than the lucky ones it was crowned on, which every later round would measure
        again (docs/results/candidates.md, "Love at 0 %")."""
        return replace(self, seed=self.seed + number, win_margin=win_margin, judge=judge)


@dataclass(frozen=True)
class Example:
    """One correction's lesson as its group trains on it (crowd.lessons)."""

    correction_id: int
    sft: list[dict] | None  # chat messages ending with the reply to learn
    pair: PairExample | None

    @property
    def text(self) -> str | None:
        """The reply it teaches (its points contribution), or None."""
        return self.sft[-1]["content"] if self.sft else None


@dataclass(frozen=True)
class Candidate:
    """A model the job makes and judges against the champion, in bundle order. `kind` 'group':
    a LoRA trained from the champion on the examples of the groups in `sources` (one group, its
    own; several: their union) and on its memory of earlier rounds (`Bundle.memory`). Kind
    'union': the same, standing for every group. A kind that combines other candidates names
    them in `inputs` ('merged')."""

    name: str  # 'g0': its folder in the job's results
    kind: str
    group: int | None  # the group it stands for, for ranks and points; None for none
    sources: tuple[int, ...] = ()  # the groups whose examples it trains on
    inputs: tuple[str, ...] = ()  # candidates made before it that it is made from (a merge)
    scale: int = 1  # it stands for this many candidates: min_examples counts that many times
    start: bool = False  # it starts from its own adapter in starts/<name>/, not the champion
    method: str = ""  # a merge's PEFT combination type (crowd.training.merge)
    density: float | None = None  # ... and the share of entries TIES and DARE keep


@dataclass(frozen=True)
class Bundle:
    """A bundle's content. `hash` and `root` are set once written or read."""

    campaign: dict  # id, name, database_id: whose round this is
    round: dict  # id, number
    base_model: str
    task: str
    target_emotion: str | None
    mode: str  # 'sft' | 'dpo' | 'sft+dpo'
    seed: int
    training: TrainingSettings
    judging: JudgingSettings
    champion_version: int
    groups: dict[int, list[Example]]
    candidates: list[Candidate]
    sat_out: dict[int, str]  # group -> why it did not train
    prompts: list[list[dict]] = field(default_factory=list)  # judging prompts (emotion)
    pairs: list[PairExample] = field(default_factory=list)  # judging pairs (preference)
    target: list[float] | None = None  # the emotion target vector
    scorer: dict | None = None  # {'file': 'scorer.npz'} or {'hub': model id}; emotion only
    showcase: list[dict] = field(default_factory=list)  # {participant_id, prompt}
    has_champion_adapter: bool = False
    memory: dict[str, list[Example]] = field(default_factory=dict)  # candidate -> earlier ones
    hash: str = ""
    root: Path | None = None

    @property
    def folder(self) -> Path:
        """Where the bundle lies: only a written or read bundle has a folder."""
        if self.root is None:
            raise ValueError(f"the bundle of round {self.round.get('id')} is not written yet")
        return self.root

    @property
    def champion_dir(self) -> Path | None:
        return self.root / CHAMPION if self.root and self.has_champion_adapter else None

    @property
    def scorer_file(self) -> Path | None:
        return self.root / SCORER if self.root and self.scorer and "file" in self.scorer else None

    def start_dir(self, candidate: Candidate) -> Path | None:
        """The adapter `candidate` trains from: its own start, else the champion's."""
        if candidate.start and self.root is not None:
            return self.root / STARTS / candidate.name
        return self.champion_dir

    def examples_of(self, candidate: Candidate) -> list[Example]:
        """What `candidate` trains on: its memory of earlier rounds, then its groups'."""
        own = [e for g in candidate.sources for e in self.groups[g]]
        return [*self.memory.get(candidate.name, []), *own]

    def contributions(self) -> list[tuple[int, int, Example]]:
        """(group, correction id, example) of every example that teaches a reply, in points
        order: by group, then oldest first."""
        return [
            (g, e.correction_id, e)
            for g in sorted(self.groups)
            for e in self.groups[g]
            if e.text is not None
        ]


# --- writing -----------------------------------------------------------------------------------


def write_bundle(
    bundle: Bundle,
    parent: Path,
    champion_dir: Path | None,
    scorer: Any = None,
    starts: dict[str, Path] | None = None,
) -> Bundle:
    """Write `bundle` under `parent` as a folder named by its hash; returns it with `hash` and
    `root` set. `scorer`: an emotion scorer with `save(path)` (written as scorer.npz) or None;
    `starts`: candidate name -> the adapter it starts from (for candidates with `start`).
    Writing the same content twice gives the same folder."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=parent))
    try:
        adapters = {CHAMPION: champion_dir} if champion_dir is not None else {}
        adapters |= {f"{STARTS}/{name}": path for name, path in (starts or {}).items()}
        files = _write_files(bundle, staging, adapters, scorer)
        header = _header(bundle, files, champion_dir is not None, scorer)
        text = _canonical(header)
        (staging / MANIFEST).write_text(text, encoding="utf-8")
        digest = hashlib.sha256(text.encode()).hexdigest()
        target = parent / digest
        if target.is_dir():
            shutil.rmtree(staging)  # the same content, written before (a retried close)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return read_bundle(target, digest)


def _write_files(bundle: Bundle, root: Path, adapters: dict[str, Path], scorer: Any) -> dict:
    (root / "groups").mkdir()
    for group, examples in bundle.groups.items():
        _write_examples(root / "groups" / f"g{group}.jsonl", examples)
    if bundle.memory:
        (root / "memory").mkdir()
    for name, examples in bundle.memory.items():
        _write_examples(root / "memory" / f"{name}.jsonl", examples)
    judging = {"prompts": bundle.prompts, "pairs": [asdict(p) for p in bundle.pairs]}
    judging["target"] = bundle.target
    (root / "judging.json").write_text(_canonical(judging))
    (root / "showcase.json").write_text(_canonical(bundle.showcase))
    for folder, source in adapters.items():
        (root / folder).mkdir(parents=True)
        for name in ADAPTER_FILES:
            shutil.copyfile(source / name, root / folder / name)
    if scorer is not None and hasattr(scorer, "save"):
        scorer.save(root / SCORER)
    return {
        p.relative_to(root).as_posix(): file_hash(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def _write_examples(path: Path, examples: list[Example]) -> None:
    lines = [_canonical(_example_json(e)) for e in examples]
    path.write_text("".join(f"{line}\n" for line in lines))


def _header(bundle: Bundle, files: dict, has_champion: bool, scorer: Any) -> dict:
    scorer_ref = None
    if bundle.task == "emotion" and scorer is not None:
        scorer_ref = {"file": SCORER} if hasattr(scorer, "save") else {"hub": scorer.model_id}
    return {
        "format": FORMAT,
        "campaign": bundle.campaign,
        "round": bundle.round,
        "base_model": bundle.base_model,
        "task": bundle.task,
        "target_emotion": bundle.target_emotion,
        "mode": bundle.mode,
        "seed": bundle.seed,
        "training": {
            **asdict(bundle.training),
            "target_modules": list(bundle.training.target_modules),
        },
        "judging": asdict(bundle.judging),
        "champion": {"version_id": bundle.champion_version, "adapter": has_champion},
        "groups": sorted(bundle.groups),
        "candidates": [asdict(c) for c in bundle.candidates],
        "memory": sorted(bundle.memory),
        "sat_out": {str(g): why for g, why in sorted(bundle.sat_out.items())},
        "scorer": scorer_ref,
        "files": files,
    }


def _example_json(example: Example) -> dict:
    pair = asdict(example.pair) if example.pair else None
    return {"correction_id": example.correction_id, "sft": example.sft, "pair": pair}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- reading -----------------------------------------------------------------------------------


def read_bundle(root: Path, expect_hash: str | None = None, wait_s: float = 0.0) -> Bundle:
    """The bundle in folder `root`, every file checked against the manifest and the manifest
    against `expect_hash` (default: the folder's name). BundleError names what is wrong. With
    `wait_s`, a missing or changing file is looked for again until then (a storage bucket's
    mount may show a new folder late)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _read(Path(root), expect_hash or Path(root).name)
        except BundleError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))


def _read(root: Path, expect_hash: str) -> Bundle:
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise BundleError(f"the bundle {root} has no {MANIFEST}: it is missing or not a bundle")
    text = manifest.read_text(encoding="utf-8")
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest != expect_hash:
        raise BundleError(
            f"the bundle {root} has the wrong hash: its manifest hashes to {digest[:12]}, "
            f"the record says {expect_hash[:12]} (the bundle was changed or is another one)"
        )
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise BundleError(f"the bundle {root}'s manifest is not JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BundleError(f"{root} is not a {FORMAT} bundle")
    for name, expected in header["files"].items():
        path = root / name
        if not path.is_file():
            raise BundleError(f"the bundle {root} is missing the file {name}")
        if file_hash(path) != expected:
            raise BundleError(f"the bundle {root}'s file {name} does not match its hash")
    try:
        return _content(root, header, digest)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"the bundle {root} is malformed: {exc!r}") from None


def _content(root: Path, header: dict, digest: str) -> Bundle:
    judging = json.loads((root / "judging.json").read_text(encoding="utf-8"))
    training = dict(header["training"])
    training["target_modules"] = tuple(training["target_modules"])
    return Bundle(
        campaign=header["campaign"],
        round=header["round"],
        base_model=header["base_model"],
        task=header["task"],
        target_emotion=header["target_emotion"],
        mode=header["mode"],
        seed=header["seed"],
        training=TrainingSettings(**training),
        judging=JudgingSettings(**header["judging"]),
        champion_version=header["champion"]["version_id"],
        groups={g: _examples(root / "groups" / f"g{g}.jsonl") for g in header["groups"]},
        candidates=[_candidate(c) for c in header["candidates"]],
        sat_out={int(g): why for g, why in header["sat_out"].items()},
        prompts=judging["prompts"],
        pairs=[PairExample(**p) for p in judging["pairs"]],
        target=judging["target"],
        scorer=header["scorer"],
        showcase=json.loads((root / "showcase.json").read_text(encoding="utf-8")),
        has_champion_adapter=bool(header["champion"]["adapter"]),
        memory={n: _examples(root / "memory" / f"{n}.jsonl") for n in header.get("memory", [])},
        hash=digest,
        root=root,
    )


def _candidate(fields: dict[str, Any]) -> Candidate:
    """A candidate from the manifest; JSON lists back to tuples."""
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return Candidate(**values)


def _examples(path: Path) -> list[Example]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        pair = PairExample(**row["pair"]) if row["pair"] else None
        out.append(Example(row["correction_id"], row["sft"], pair))
    return out


def check_owner(bundle: Bundle, database_id: str | None, campaign_id: int, round_id: int) -> None:
    """Refuse a bundle of another database, campaign or round than the one it is run for."""
    mine = (database_id, campaign_id, round_id)
    theirs = (bundle.campaign.get("database_id"), bundle.campaign.get("id"), bundle.round["id"])
    if mine != theirs:
        raise BundleError(
            f"the bundle {bundle.hash[:12]} belongs to round {bundle.round['number']} of campaign "
            f"{bundle.campaign.get('name')!r} in another database or campaign, not to this round"
        )
