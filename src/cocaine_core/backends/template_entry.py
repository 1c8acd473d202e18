"""``python -m cocaine_core.backends.template_entry FD NODE_PID``: start a template process."""

import socket
import sys

from cocaine_core.backends.template import template_main

if __name__ == "__main__":
    fd, node_pid = int(sys.argv[1]), int(sys.argv[2])
    template_main(socket.socket(fileno=fd), node_pid)
