"""The GPU path, checked in one go: the `gpu`-marked tests, one short round on the default model
(bf16 on CUDA: generation, TRL training and judging), that round's bundle trained and judged
again by `python -m crowd round-job` alone (what a Hugging Face Job runs: its minutes are what a
round costs), and the serving benchmark.

    .venv/bin/python bench/gpu_check.py          # on a machine with a CUDA GPU: under 8 minutes
    .venv/bin/python bench/gpu_check.py --cpu    # the same steps on the CPU (fp32), smaller

Each step runs in its own process with its own time limit, so one that fails or hangs does not
hide the others. The last line is one JSON object: device, each step's status, seconds and
figures, and `ok` (every step passed; on the CPU the gpu tests are skipped, which is a pass).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(command: list[str], env: dict, limit_s: float, log: Path) -> tuple[int, float, str]:
    """(exit status or 124 on timeout, seconds, the output's last 4000 characters)."""
    started = time.monotonic()
    with log.open("w") as out:
        try:
            status = subprocess.run(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=limit_s
            ).returncode
        except subprocess.TimeoutExpired:
            status = 124
    return status, round(time.monotonic() - started, 1), log.read_text()[-4000:]


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def gpu_tests(env: dict, work: Path, limit_s: float) -> dict:
    """1. The tests marked `gpu` (they skip themselves without CUDA)."""
    junit = work / "gpu-tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    status, seconds, tail = run(command + [f"--junitxml={junit}"], env, limit_s, work / "tests.log")
    counts = {}
    if junit.is_file():
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    ok = status in (0, 5) and not counts.get("failures") and not counts.get("errors")
    return {"ok": ok, "status": status, "seconds": seconds, **counts, "tail": None if ok else tail}


def short_round(env: dict, work: Path, limit_s: float, cpu: bool) -> dict:
    """2. One whole round on the default model: chat, train each group (TRL, LoRA), judge."""
    env = {**env, "CROWD_EPOCHS": "1", "CROWD_EVAL_SAMPLES": "4" if cpu else "16"}
    env["CROWD_MAX_NEW_TOKENS"] = "24" if cpu else "48"
    data_dir = work / "round"
    data_dir.mkdir()
    cached = ROOT / ".venv" / "test-cache" / "models"
    if cached.is_dir():  # the converted default model, rather than converting it again
        (data_dir / "models").symlink_to(cached, target_is_directory=True)
    command = [sys.executable, "-m", "crowd", "demo-round", "--data-dir", str(data_dir)]
    command += ["--volunteers", "6", "--corrections", "30" if cpu else "90"]
    status, seconds, tail = run(command, env, limit_s, work / "round.log")
    summary = last_json(tail)
    ok = status == 0 and summary is not None and summary.get("job") == "finished"
    return {
        "ok": ok,
        "status": status,
        "seconds": seconds,
        "summary": summary,
        "tail": None if ok else tail,
    }


def round_job(env: dict, work: Path, limit_s: float) -> dict:
    """3. The short round's bundle through `round-job` in a fresh process and OUT: model load,
    every candidate's training and the judging, as a round job on rented hardware runs them."""
    bundles = sorted((work / "round" / "bundles").glob("*/manifest.json"))
    if not bundles:
        return {"ok": False, "status": None, "seconds": 0.0, "tail": "the round wrote no bundle"}
    bundle = bundles[0].parent
    command = [sys.executable, "-m", "crowd", "round-job", str(bundle), str(work / "round-job")]
    status, seconds, tail = run(command, env, limit_s, work / "round-job.log")
    results = work / "round-job" / "results.json"
    ok = status == 0 and results.is_file()
    minutes = seconds / 60
    return {
        "ok": ok,
        "status": status,
        "seconds": seconds,
        "minutes": round(minutes, 2),
        "billed_minutes": int(-(-seconds // 60)),
        "candidates": sorted(json.loads(results.read_text())["trained"]) if ok else None,
        "tail": None if ok else tail,
    }


def serving(env: dict, work: Path, limit_s: float, cpu: bool) -> dict:
    """4. bench/serve.py: 8 requests over 4 groups, batched against one at a time."""
    command = [
        sys.executable,
        str(ROOT / "bench" / "serve.py"),
        "--device",
        "cpu" if cpu else "cuda",
    ]
    command += ["--repeats", "1", "--tokens", "24"] if cpu else ["--repeats", "3"]
    status, seconds, tail = run(command, env, limit_s, work / "serve.log")
    figures = last_json(tail)
    ok = status == 0 and figures is not None
    return {
        "ok": ok,
        "status": status,
        "seconds": seconds,
        "figures": figures,
        "tail": None if ok else tail,
    }


def device_name(cpu: bool) -> str:
    if cpu:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --cpu to check the script on the CPU")
    return f"cuda: {torch.cuda.get_device_name(0)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run every step on the CPU (fp32)")
    parser.add_argument(
        "--minutes", type=float, default=None, help="time limit for all steps (8; 25 with --cpu)"
    )
    args = parser.parse_args(argv)
    args.minutes = args.minutes or (25.0 if args.cpu else 8.0)
    device = device_name(args.cpu)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "CROWD_DEVICE": "cpu" if args.cpu else "cuda",
        "TOKENIZERS_PARALLELISM": "false",
    }
    work = Path(tempfile.mkdtemp(prefix="crowd-gpu-check-"))
    budget = args.minutes * 60
    started = time.monotonic()
    result: dict = {"device": device}
    result["gpu_tests"] = gpu_tests(env, work, 0.25 * budget)
    left = budget - (time.monotonic() - started)
    result["round"] = short_round(env, work, 0.45 * left, args.cpu)
    left = budget - (time.monotonic() - started)
    result["round_job"] = round_job(env, work, 0.5 * left)
    left = budget - (time.monotonic() - started)
    result["serve"] = serving(env, work, max(30.0, left), args.cpu)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["ok"] = all(result[k]["ok"] for k in ("gpu_tests", "round", "round_job", "serve"))
    result["within_budget"] = result["seconds"] <= budget
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
