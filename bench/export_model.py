"""Benchmark: exporting the champion on the real default model (SmolLM2-135M-Instruct).

Sets up a data dir whose round 1 is finished with a LoRA champion (the campaign's initial
adapter: PEFT's B = 0 init, so the merge is a no-op numerically but costs what a real one costs),
then times, interleaved in one process:
- ours: `export_model` (adapter), against copying the adapter folder and saving the tokenizer
  beside it (the least an adapter export must do);
- ours: `export_model(merged=True)`, against loading the base and saving it again (the least a
  merged export must do).
Prints one line per repetition, then one JSON object: medians, ratios, folder sizes, and the
process's peak RSS. Other work on the machine slows both sides alike; say so when quoting.

    .venv/bin/python bench/export_model.py [--repeats 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from crowd.campaigns import utcnow
from crowd.config import ModelSettings, Settings, TrainingSettings
from crowd.model_export.folder import export_model
from crowd.models import convert_packaged_model
from crowd.rounds.state import advance
from crowd.service import CrowdService
from crowd.training.trainer import create_initial_adapter
from storage.db import connect

CACHE = Path(__file__).resolve().parent.parent / ".venv" / "test-cache" / "models"


def finished_round(data_dir: Path, model: Path, lora_r: int) -> Settings:
    """A data dir whose round 1 is done, its champion the initial adapter."""
    training = TrainingSettings(lora_r=lora_r)
    settings = Settings(
        data_dir=data_dir, model=ModelSettings(base_model=str(model)), training=training
    )
    adapter = create_initial_adapter(str(model), training, data_dir / "adapters" / "initial")
    service = CrowdService(settings, None, initial_adapter=adapter)
    _, round_ = service.context()
    with connect(settings.db_path) as db:
        for state in ("closing", "training", "evaluating"):
            advance(db, round_["id"], state)
        advance(
            db,
            round_["id"],
            "done",
            winner_id=round_["champion_id"],
            improved=0,
            finished_at=utcnow(),
        )
    return settings


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def copy_adapter(champion: Path, model: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    shutil.copytree(champion, out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)


def resave_base(model: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(model, dtype="auto").save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, help="base model folder (default: SmolLM2-135M)")
    parser.add_argument("--lora-r", type=int, default=16)
    args = parser.parse_args()
    model = args.model or convert_packaged_model(CACHE)
    times: dict[str, list[float]] = {"adapter": [], "copy": [], "merged": [], "resave": []}
    with tempfile.TemporaryDirectory(prefix="bench-export-model-") as tmp:
        root = Path(tmp)
        settings = finished_round(root / "data", model, args.lora_r)
        champion = next((root / "data" / "adapters").iterdir())
        sizes = {}
        for i in range(args.repeats):
            runs = {
                "adapter": lambda out: export_model(settings, out),
                "copy": lambda out: copy_adapter(champion, model, out),
                "merged": lambda out: export_model(settings, out, merged=True),
                "resave": lambda out: resave_base(model, out),
            }
            for name, run in runs.items():
                out = root / f"{name}{i}"
                times[name].append(timed(run, out))
                sizes[name] = size_mb(out)
            print(f"repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    med = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "model": str(model),
        "repeats": args.repeats,
        **{f"{name}_s": round(value, 3) for name, value in med.items()},
        "adapter_vs_copy": round(med["adapter"] / med["copy"], 1),
        "merged_vs_resave": round(med["merged"] / med["resave"], 2),
        **{f"{name}_mb": round(value, 1) for name, value in sizes.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
