"""A bad worker: the raw worker claims batch, and its CHOKE_BATCH for an INVOKE_BATCH leaves
the last job out: it is never answered."""

import sys

import raw_worker

raw_worker.BREAK["batch drop"] = True
sys.exit(raw_worker.serve())
