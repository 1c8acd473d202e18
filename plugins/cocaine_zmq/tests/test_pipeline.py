"""examples/pipeline end to end: three `cocaine run` processes and the example's client."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from cocaine_core.testing import free_port

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "pipeline"
COCAINE = Path(sys.executable).with_name("cocaine")
APPS = ("intake", "pricing", "totals")


def test_pipeline_end_to_end(tmp_path):
    """Orders pushed to app A are checked, priced by app B and added up by app C, whose
    zeromq-server answers the totals; bad orders are dropped on the way."""
    shutil.copytree(EXAMPLE, tmp_path / "pipeline")
    root = tmp_path / "pipeline"
    ports = {port: str(free_port()) for port in ("5560", "5561", "5562", "5563")}
    for app in APPS:
        manifest = root / app / "manifest.json"
        manifest.write_text(re.sub(r"127\.0\.0\.1:(556\d)",
                                   lambda m: f"127.0.0.1:{ports[m.group(1)]}",
                                   manifest.read_text()))
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    nodes, logs = [], []
    try:
        for app in APPS:
            log = (tmp_path / f"{app}.log").open("w")
            logs.append(log)
            nodes.append(subprocess.Popen(
                [str(COCAINE), "run", str(root / app / "manifest.json"), "--listen",
                 f"tcp://127.0.0.1:{free_port()}", "--log-format", "plain"],
                stdout=log, stderr=subprocess.STDOUT, env=env))
        client = subprocess.run(
            [sys.executable, str(root / "client.py"), "--json", "--timeout", "90",
             "--work", f"tcp://127.0.0.1:{ports['5560']}",
             "--totals", f"tcp://127.0.0.1:{ports['5563']}"],
            capture_output=True, text=True, timeout=120, env=env)
        output = "\n".join(f"== {app}\n{(tmp_path / f'{app}.log').read_text()}"
                           for app in APPS)
        assert client.returncode == 0, f"{client.stderr}\n{output}"
        totals = json.loads(client.stdout)
        assert totals.pop("warm-up")["orders"] >= 1
        assert totals == {"ann": {"orders": 3, "cents": 1935},
                          "bob": {"orders": 2, "cents": 1270},
                          "cy": {"orders": 1, "cents": 1000}}
        assert "bad order" in output and "no price for 'whisky'" in output
    finally:
        for node in nodes:
            if node.poll() is None:
                node.send_signal(signal.SIGINT)
        codes = []
        for node in nodes:
            try:
                codes.append(node.wait(timeout=60))
            except subprocess.TimeoutExpired:
                node.kill()
                codes.append(node.wait())
        for log in logs:
            log.close()
    assert codes == [0, 0, 0]
