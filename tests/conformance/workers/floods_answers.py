"""A bad worker: the raw worker, but it answers `echo` with 200 MiB of chunks."""

import sys

import raw_worker

raw_worker.BREAK["flood"] = True
sys.exit(raw_worker.serve())
