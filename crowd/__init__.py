"""Crowd-SFT: live human alignment of language models by competing groups of volunteers.

The domain package. It never imports gradio; the UI lives in `crowd.ui` and calls `crowd.service`.

Importing it sets one process-wide default before torch loads, unless the environment chose a
policy itself (`OMP_WAIT_POLICY` or `GOMP_SPINCOUNT`): `GOMP_SPINCOUNT=10000`. torch's CPU
thread pool (libgomp) otherwise keeps its idle threads spinning 300000 times between
operations; on a CPU shared with anything else (another process, a Space's neighbours) the
spinning threads take the cores the working ones need. Measured (docs/results/serving.md): a
40-token reply beside one busy core took 14.5 s with libgomp's default, 3.4 s with a 10000 spin,
2.5 s fully passive; on a quiet machine a short spin keeps batched decoding as fast as the
default (42.8 against 41.2 tok/s) where passive waiting halved it (16.6). libgomp also waits
passively whenever the process holds more pool threads than cores: crowd/threads.py says how
the app's threads avoid that.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ:  # libgomp reads these when torch loads
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
