"""Cold start: seconds from `python app.py` (what `make run` runs, once installed) to the first
page answering and to the model being ready, on a fresh data dir (the first start converts the
packaged GGUF model) and on a second start of the same data dir, for this tree and for a
baseline tree (default: the merge base with main, where the model loads before the page).

    .venv/bin/python bench/coldstart.py [--baseline REF]

Each start runs alone; the baseline and this tree run one after the other in one run. Absolute
seconds depend on the machine and whatever else runs on it; compare the two trees' figures. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = "the model is ready"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(tree: Path, data_dir: Path, log: Path) -> dict[str, float]:
    """Seconds to the first page (HTTP 200 on /) and to the model being ready."""
    port = free_port()
    env = {
        **os.environ,
        "CROWD_DATA_DIR": str(data_dir),
        "CROWD_PORT": str(port),
        "CROWD_WORKER": "false",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    for name in ("CROWD_BASE_MODEL", "CROWD_REPLICA"):
        env.pop(name, None)  # the packaged default model, as `make run` starts it
    began = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    page = ready = None
    try:
        while time.monotonic() - began < 900 and (page is None or ready is None):
            if process.poll() is not None:
                raise SystemExit(f"the app exited:\n{log.read_text()[-3000:]}")
            if page is None and answers(f"http://127.0.0.1:{port}/"):
                page = time.monotonic() - began
            if ready is None and READY in log.read_text():
                ready = time.monotonic() - began
            if page is not None and ready is None and READY not in _source(tree):
                ready = page  # the baseline loads the model before it serves the page
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return {"page_s": round(page or -1, 1), "model_ready_s": round(ready or -1, 1)}


def answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def _source(tree: Path) -> str:
    for warmup in (tree / "crowd" / "serving" / "warmup.py", tree / "crowd" / "warmup.py"):
        if warmup.is_file():  # the second: a tree from before crowd/serving/
            return warmup.read_text()
    return ""


def baseline_tree(ref: str, into: Path) -> Path:
    """The files of `ref`, unpacked into `into` (no checkout, no change to the repository)."""
    commit = ref
    if ref == "merge-base":
        commit = subprocess.run(
            ["git", "merge-base", "HEAD", "main"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", commit], cwd=ROOT, check=True, capture_output=True
    ).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--baseline",
        default="merge-base",
        help="a git ref; default: the merge base of HEAD and main",
    )
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="crowd-bench-coldstart-") as tmp:
        trees = {"baseline": baseline_tree(args.baseline, Path(tmp) / "baseline"), "ours": ROOT}
        for name, tree in trees.items():
            data = Path(tmp) / f"data-{name}"
            first = start(tree, data, Path(tmp) / f"{name}-1.log")
            second = start(tree, data, Path(tmp) / f"{name}-2.log")
            results[name] = {"first": first, "second": second}
            print(
                f"{name:>8}: first start: page {first['page_s']} s, model ready "
                f"{first['model_ready_s']} s; second start: page {second['page_s']} s, model "
                f"ready {second['model_ready_s']} s",
                flush=True,
            )
    base, ours = results["baseline"], results["ours"]
    for start_ in ("first", "second"):
        print(
            f"{start_} start, first page: {base[start_]['page_s']} s -> "
            f"{ours[start_]['page_s']} s (x{base[start_]['page_s'] / ours[start_]['page_s']:.1f}"
            " sooner)"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
