"""A bad worker: says why on stderr and exits at once with status 3, never shaking hands."""

import sys

print("never_handshakes: leaving before the handshake", file=sys.stderr)
sys.exit(3)
