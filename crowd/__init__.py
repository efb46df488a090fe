"""Crowd-SFT: live human alignment of language models by competing groups of volunteers.

The domain package. It never imports gradio; the UI lives in `crowd.ui` and calls `crowd.service`.

Importing it sets one process-wide default before torch loads: `OMP_WAIT_POLICY=PASSIVE`
(unless the environment sets it). torch's CPU thread pool (libgomp) otherwise keeps its idle
threads spinning between operations; on a CPU shared with anything else (the round worker,
another process, a Space's neighbours) the spinning threads take the cores the working ones
need. `bench/shared_cpu.py` measured a 40-token reply with one core busy elsewhere: 14.5 s
spinning against 2.5 s passive (docs/results/serving.md).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # libgomp reads it when torch loads
