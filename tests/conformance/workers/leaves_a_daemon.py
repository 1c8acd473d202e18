"""A worker that starts a process in a session of its own (out of its process group), writes
its pid where LEFT_BEHIND says, then serves as the raw worker."""

import os
import subprocess
import sys

import raw_worker

child = subprocess.Popen(["sleep", "300"], start_new_session=True)
with open(os.environ["LEFT_BEHIND"], "w") as f:
    f.write(str(child.pid))
sys.exit(raw_worker.serve())
