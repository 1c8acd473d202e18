"""A bad worker: the raw worker, but it skips heartbeats while a job runs (a single thread
that beats only when idle)."""

import sys

import raw_worker

raw_worker.BREAK["heartbeats during jobs"] = True
sys.exit(raw_worker.serve())
