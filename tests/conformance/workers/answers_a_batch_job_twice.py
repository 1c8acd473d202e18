"""A bad worker: the raw worker claims batch, and its CHOKE_BATCH for an INVOKE_BATCH holds
the first job twice."""

import sys

import raw_worker

raw_worker.BREAK["batch twice"] = True
sys.exit(raw_worker.serve())
