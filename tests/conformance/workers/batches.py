"""A good worker: the raw worker, claiming batch: it answers an INVOKE_BATCH, and sleeps
due together, with one CHOKE_BATCH."""

import sys

import raw_worker

raw_worker.BREAK["batch"] = True
sys.exit(raw_worker.serve())
