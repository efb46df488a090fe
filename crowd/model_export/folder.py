"""Write a model export: adapter (or merged model) + tokenizer + card + chart + data export, in a
hidden staging folder that is renamed into place only when everything is written (and pushed)."""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict, Unpack

from crowd.config import PACKAGED_MODEL, Settings
from crowd.model_export.card import CHART_NAME, CardFacts, metric_chart_svg, render_model_card
from crowd.model_export.champion import (
    ADAPTER_FILES,
    Champion,
    ModelExportError,
    check_base,
    find_champion,
    gather_facts,
)
from crowd.model_export.hub import PushTarget, prepare_repo, upload
from crowd.models import CONVERTED_NAME, ModelError, resolve_base_model

MANIFEST = "crowd-export.json"
ADAPTER_SUBFOLDER = "adapter"  # where a merged export keeps the adapter alone
DATA_SUBFOLDER = "data"


def check_out_dir(out_dir: Path) -> None:
    """Refuse a target that is a file or a folder with anything in it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelExportError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise ModelExportError(f"{out_dir} is not empty: choose a new or empty folder")


def export_model(
    settings: Settings,
    out_dir: Path | str,
    *,
    campaign: int | None = None,
    round_number: int | None = None,
    merged: bool = False,
    push: PushTarget | None = None,
    now: datetime | None = None,
) -> CardFacts:
    """Export the champion after a finished round into `out_dir` (new or empty), pushing it to
    `push` first when given; return what its card says. Raises ModelExportError (bad input) or
    PushFailed (the upload), having written nothing."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    champion = find_champion(settings, campaign, round_number)
    check_base(champion, base_path_of(settings))
    if push is not None:
        prepare_repo(push)
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    facts = gather_facts(settings, champion, merged, stamp)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        write_folder(settings, champion, facts, staging)
        if push is not None:
            upload(push, staging, commit_message(facts))
        if out_dir.is_dir():
            out_dir.rmdir()  # empty, as checked above
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return facts


def base_path_of(settings: Settings) -> str:
    """Where the configured base model is, without converting the packaged one (which
    `write_folder` does, once, if it is not cached yet)."""
    if settings.model.base_model == PACKAGED_MODEL:
        return str(settings.models_dir / CONVERTED_NAME)
    try:
        return resolve_base_model(settings.model.base_model, settings.models_dir)
    except ModelError as exc:
        raise ModelExportError(str(exc)) from None


def commit_message(facts: CardFacts) -> str:
    return (
        f"Crowd-SFT: {facts.campaign['name']}, champion after round {facts.round_number} "
        f"(v{facts.version_id})"
    )


def write_folder(settings: Settings, champion: Champion, facts: CardFacts, folder: Path) -> None:
    """Everything an export holds, into `folder` (which exists and is empty)."""
    from crowd.export import export_dataset

    base_path = resolve_base_model(settings.model.base_model, settings.models_dir)
    adapter = folder / ADAPTER_SUBFOLDER if facts.merged else folder
    copy_adapter(champion.adapter_dir, adapter, facts.base_hub_id or settings.model.base_model)
    save_tokenizer(base_path, adapter)
    if facts.merged:
        save_merged(base_path, adapter, folder)
    export_dataset(
        settings.db_path,
        folder / DATA_SUBFOLDER,
        campaign=champion.campaign["id"],
        rounds=list(range(1, champion.round["number"] + 1)),
    )
    (folder / CHART_NAME).write_text(metric_chart_svg(facts), encoding="utf-8")
    (folder / "README.md").write_text(render_model_card(facts), encoding="utf-8")
    (folder / MANIFEST).write_text(json.dumps(manifest(champion, facts), indent=2) + "\n")


def manifest(champion: Champion, facts: CardFacts) -> dict:
    """Machine-readable provenance: which campaign, round and version this is."""
    return {
        "campaign_id": champion.campaign["id"],
        "round": champion.round["number"],
        "model_version_id": champion.version["id"],
        "base_model": facts.base_model,
        "merged": facts.merged,
        "exported_at": facts.generated_at,
    }


def copy_adapter(source: Path, target: Path, base_model: str) -> None:
    """The champion's adapter files as trained, with `base_model_name_or_path` naming the base
    by its Hub id where known (the trainer wrote a local path there)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copyfile(source / name, target / name)
    config_path = target / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_tokenizer(base_path: str, target: Path) -> None:
    """The base model's tokenizer and chat template, as the app loads them (less its padding
    side, which is a decoding choice)."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(base_path).save_pretrained(str(target))


def save_merged(base_path: str, adapter_dir: Path, target: Path) -> None:
    """Merge the adapter into a fresh copy of the base (its stored dtype, on the CPU) and save it
    as safetensors, with the tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    try:
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto")
        model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelExportError(f"cannot merge the adapter into {base_path}: {exc}") from exc
    model.save_pretrained(str(target))
    save_tokenizer(base_path, target)


class ModelExportOptions(TypedDict, total=False):
    """`export_model`'s options, for the callers that pass them on (mypy holds the two to each
    other at the call in `export_model_zip`)."""

    campaign: int | None
    round_number: int | None
    merged: bool
    push: PushTarget | None
    now: datetime | None


def export_model_zip(
    settings: Settings, zip_path: Path | str, **options: Unpack[ModelExportOptions]
) -> Path:
    """The same export as one zip file (the organizer's download button); returns its path.
    Weights are stored as they are (deflating float tensors saves little and takes long)."""
    zip_path = Path(zip_path)
    with tempfile.TemporaryDirectory(prefix="crowd-model-") as tmp:
        folder = Path(tmp) / "model"
        export_model(settings, folder, **options)
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        partial = zip_path.with_name(zip_path.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                stored = file.suffix == ".safetensors"
                archive.write(
                    file,
                    file.relative_to(folder).as_posix(),
                    compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED,
                )
        partial.replace(zip_path)
    return zip_path
