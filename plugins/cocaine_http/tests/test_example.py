"""examples/http: the JSON API answers as its README says, with httpx and curl."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import httpx

from cocaine_core.testing import free_port

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "http"


def test_the_example_api(cocaine_node, tmp_path, monkeypatch, curl):
    """Items: list, create (201 + Location), get, 404, 400; upload streams; count streams."""
    folder = tmp_path / "http"
    shutil.copytree(EXAMPLE, folder)
    port = free_port()
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    monkeypatch.setenv("ITEMS_DB", str(tmp_path / "items.sqlite3"))
    cocaine_node.add_app("http", manifest)
    base = f"http://127.0.0.1:{port}/api"
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/items").json() == []
        made = client.post("/items", json={"name": "tea"})
        assert made.status_code == 201 and made.headers["location"] == "/api/items/1"
        assert client.get("/items/1").json() == {"id": 1, "name": "tea"}
        assert client.get("/items").json() == [{"id": 1, "name": "tea"}]
        missing = client.get("/items/99")
        assert missing.status_code == 404 and missing.json() == {"error": "no item 99"}
        assert client.post("/items", content=b"not json").status_code == 400
        assert client.delete("/items/1").status_code == 405
        with client.stream("GET", "/count", params={"n": 5}) as lines:
            assert lines.headers["transfer-encoding"] == "chunked"
            assert list(lines.iter_lines()) == ["1", "2", "3", "4", "5"]
        assert client.get("/nothing").status_code == 404
    data = os.urandom(5 * 2**20)
    out = curl("-T", "-", f"{base}/upload", stdin=data)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (b'{"bytes": %d, "sha256": "%s"}'
                          % (len(data), hashlib.sha256(data).hexdigest().encode()))
