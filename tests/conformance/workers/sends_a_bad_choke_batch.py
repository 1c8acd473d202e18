"""A bad worker: the raw worker claims batch, and its CHOKE_BATCH for an INVOKE_BATCH has an
entry without its with_last."""

import sys

import raw_worker

raw_worker.BREAK["batch bad entry"] = True
sys.exit(raw_worker.serve())
