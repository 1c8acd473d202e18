"""A bad worker: the raw worker does not claim batch, yet answers sleeps that end together
with a CHOKE_BATCH."""

import sys

import raw_worker

raw_worker.BREAK["unasked batch"] = True
sys.exit(raw_worker.serve())
