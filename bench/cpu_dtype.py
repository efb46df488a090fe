"""The default model's forward pass in float32 (what the app serves on a CPU) against bfloat16,
in one process, arms interleaved: what a burst of next messages would gain from bf16 on a CPU
that computes it natively (AVX512-BF16 or AMX). Not a setting of the app; a measurement.

    .venv/bin/python bench/cpu_dtype.py [--repeats 3] [--threads 2]

Three shapes, each timed as the median of 4 calls per repeat:
- burst: a prefill pass of 14 rows x 21 new tokens over 80 cached ones (a burst of next
  messages, as bench/load.py's heavy volunteers send them);
- single: a prefill pass of one 40-token prompt (one volunteer's first message);
- step: one decoding step of 20 rows over 150 cached tokens.
The last line is one JSON object: seconds per arm and shape (medians over repeats) and
`bf16_speedup` per shape (float32 seconds over bfloat16 seconds; above 1: bf16 is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from serve import packaged_model  # bench/ is on the path: run as a script

SHAPES = {"burst": (14, 21, 80), "single": (1, 40, 0), "step": (20, 1, 150)}
"""name: (rows, new tokens per row, cached tokens per row)."""


def timed(model: Any, rows: int, new: int, cached: int, calls: int = 4) -> float:
    """Median seconds of one forward pass feeding `new` tokens per row after `cached` ones."""
    import torch
    from transformers import DynamicCache

    ids = torch.randint(100, 5000, (rows, cached + new))
    seconds = []
    with torch.inference_mode():
        for _ in range(calls):
            cache = DynamicCache()
            if cached:
                cache = model(input_ids=ids[:, :cached], cache=cache, use_cache=True).cache
            start = time.perf_counter()
            model(input_ids=ids[:, cached:], cache=cache, use_cache=True, logits_to_keep=1)
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    base, _ = packaged_model(args.threads)
    import torch
    from transformers import AutoModelForCausalLM

    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(f"bf16 computed natively by this CPU (oneDNN): {native}", flush=True)
    models = {
        name: AutoModelForCausalLM.from_pretrained(base, dtype=dtype).eval()
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))
    }
    seconds: dict[str, dict[str, list[float]]] = {m: {s: [] for s in SHAPES} for m in models}
    for repeat in range(args.repeats):
        for shape, (rows, new, cached) in SHAPES.items():
            for name, model in models.items():
                seconds[name][shape].append(timed(model, rows, new, cached))
        print(
            f"repeat {repeat + 1}: "
            + ", ".join(
                f"{shape} {seconds['float32'][shape][-1]:.3f} / {seconds['bfloat16'][shape][-1]:.3f} s"
                for shape in SHAPES
            ),
            flush=True,
        )
    medians = {
        m: {s: round(statistics.median(v), 4) for s, v in by.items()} for m, by in seconds.items()
    }
    result = {
        "bf16_native": native,
        "threads": args.threads,
        "seconds": medians,
        "bf16_speedup": {
            s: round(medians["float32"][s] / medians["bfloat16"][s], 2) for s in SHAPES
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
