"""A bad worker: the raw worker, but it answers a raising handler with 500 (not 502) and an
unknown event with 400 (not 404)."""

import sys

import raw_worker

raw_worker.BREAK["error codes"] = True
sys.exit(raw_worker.serve())
