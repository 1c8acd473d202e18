"""A bad worker: the raw worker, but it answers `echo` with a header that is not msgpack."""

import sys

import raw_worker

raw_worker.BREAK["garbage"] = True
sys.exit(raw_worker.serve())
