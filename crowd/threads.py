"""The threads that run model work on the CPU, and the three rules they follow.

1. **A thread that runs torch work ends when its work ends.** torch's CPU thread pool (libgomp)
   is per calling thread: each thread that runs a parallel operation keeps its own team of
   helper threads until it exits. While the process holds more of those threads than there are
   cores, libgomp makes every team wait passively (a throttled spin of 100), and on 2 cores that
   halves batched decoding (docs/results/serving.md: 8 requests decoded 30-34 tok/s alone,
   14-17 tok/s while one idle thread kept its team). So a round runs in a thread of its own that
   ends with the round (`run_in_own_thread`), and the generation scheduler's thread ends when it
   has been idle for a while (crowd/generation.py) and starts again with the next request.
2. **Round work runs below the replies' priority** (`lower_priority`, `CROWD_WORKER_NICE`).
3. **The GIL changes hands every 0.5 ms, not every 5** (`share_the_gil`, called when the
   generation service starts). Each of the hundreds of torch operations in a forward pass drops
   the GIL and must take it back; while the web server's threads run Python, each take-back
   waits up to one switch interval. At Python's 5 ms, a 19-row decoding step that takes 0.4 s
   took 2.3 s on the load benchmark while 17 volunteers' replies ended and their next requests
   arrived. bench/gil.py: 8 replies beside 4 threads alternating Python work and waits decode
   2x faster at 0.5 ms than at 5 ms, first tokens 4x sooner, yet still ~10x slower than with
   the threads quiet; only a generation engine in a process of its own (a vLLM server,
   `CROWD_SERVING=vllm`) escapes the GIL altogether.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

SWITCH_INTERVAL_S = 0.0005
"""The GIL switch interval the app sets (rule 3); Python's default is 0.005."""


def share_the_gil() -> None:
    """Rule 3: a thread waiting for the GIL gets it within SWITCH_INTERVAL_S. Process-wide."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def run_in_own_thread(work: Callable[[], T], name: str, nice: int = 0) -> T:
    """`work()` in a new thread at `nice`, waited for; returns its result or raises its error.
    The thread, and the torch thread pool it made, end with the work (rule 1)."""
    value: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        lower_priority(nice)
        try:
            value.append(work())
        except BaseException as exc:  # handed to the caller below
            error.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return value[0]


def lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority by `nice` (Linux, where nice is per thread).
    Call it before the thread's first torch operation: the threads torch then starts for this
    one's parallel work inherit the priority, so a round that trains beside the chat takes the
    CPU the replies leave. Elsewhere (where it would lower the whole process) it does nothing."""
    if nice <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + nice))
