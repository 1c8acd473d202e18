"""A bad worker: the raw worker claims batch, and its CHOKE_BATCH for an INVOKE_BATCH gives
the first job the last one's body and the last job the first one's."""

import sys

import raw_worker

raw_worker.BREAK["batch mixed up"] = True
sys.exit(raw_worker.serve())
