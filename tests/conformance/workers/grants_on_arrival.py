"""A bad worker: the raw worker claims streamed bodies and grants each piece back (CREDIT) as
it arrives, before its handler has read it (it answers once the body is complete)."""

import sys

import raw_worker

raw_worker.BREAK["grants on arrival"] = True
sys.exit(raw_worker.serve())
