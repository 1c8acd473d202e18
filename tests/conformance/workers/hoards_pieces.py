"""A bad worker: the raw worker claims streamed bodies, but grants no piece back (CREDIT)
before the whole body has come: the body stalls once the window is used up."""

import sys

import raw_worker

raw_worker.BREAK["hoards pieces"] = True
sys.exit(raw_worker.serve())
