"""A bad worker: the raw worker, but it sends a stream's chunks 1 and 2 swapped."""

import sys

import raw_worker

raw_worker.BREAK["chunk order"] = True
sys.exit(raw_worker.serve())
