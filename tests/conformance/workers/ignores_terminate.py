"""A bad worker: the raw worker, but it keeps running after TERMINATE."""

import sys

import raw_worker

raw_worker.BREAK["terminate"] = True
sys.exit(raw_worker.serve())
