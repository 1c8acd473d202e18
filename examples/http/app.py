"""A small JSON API on the http-server driver: items kept in SQLite, an upload that streams,
an answer that streams.

    GET  /api/items          every item, as JSON
    POST /api/items          {"name": "..."}: a new item (201, Location: /api/items/ID)
    GET  /api/items/ID       one item, or 404
    POST /api/upload         any body, read as it arrives: its size and sha256
    GET  /api/count?n=5      the lines 1..n, each sent as it is made
"""

import hashlib
import json
import os
import sqlite3
import tempfile
import urllib.parse

from cocaine_python import Response

#: The items live in a file, so every slave of the app sees the same ones.
DATABASE = os.environ.get("ITEMS_DB") or os.path.join(tempfile.gettempdir(),
                                                      "cocaine-http-example.sqlite3")
JSON = {"Content-Type": "application/json"}


def _db():
    db = sqlite3.connect(DATABASE, timeout=10)
    db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    return db


def _json(value, status=200, headers=None):
    return Response(json.dumps(value), status=status, headers={**JSON, **(headers or {})})


def items(request):
    """GET the list or one item; POST a new one."""
    method, path = request.meta["method"], request.meta["path"].rstrip("/")
    tail = path.removeprefix("/api/items").lstrip("/")
    with _db() as db:
        if method == "GET" and not tail:
            rows = db.execute("SELECT id, name FROM items ORDER BY id").fetchall()
            return _json([{"id": i, "name": n} for i, n in rows])
        if method == "GET":
            row = db.execute("SELECT id, name FROM items WHERE id = ?",
                             (tail if tail.isdigit() else -1,)).fetchone()
            if row is None:
                return _json({"error": f"no item {tail}"}, status=404)
            return _json({"id": row[0], "name": row[1]})
        if method == "POST" and not tail:
            try:
                name = request.json()["name"]
            except (ValueError, KeyError, TypeError):
                return _json({"error": 'send {"name": "..."} as JSON'}, status=400)
            if not isinstance(name, str) or not name:
                return _json({"error": "name must be a non-empty string"}, status=400)
            item_id = db.execute("INSERT INTO items (name) VALUES (?)", (name,)).lastrowid
            return _json({"id": item_id, "name": name}, status=201,
                         headers={"Location": f"/api/items/{item_id}"})
    return _json({"error": f"{method} is not allowed here"}, status=405,
                 headers={"Allow": "GET, POST"})


def upload(request):
    """Read the body piece by piece as it arrives (never whole in memory): size and sha256."""
    size, digest = 0, hashlib.sha256()
    for piece in request.stream:
        size += len(piece)
        digest.update(piece)
    return _json({"bytes": size, "sha256": digest.hexdigest()})


def count(request):
    """Stream the lines 1..n (?n=, default 10, at most 100000): one chunk per line."""
    query = urllib.parse.parse_qs(request.meta["query"])
    try:
        n = min(int(query.get("n", ["10"])[0]), 100_000)
    except ValueError:
        yield Response(status=400, headers={"Content-Type": "text/plain"})
        yield "n must be a number\n"
        return
    yield Response(status=200, headers={"Content-Type": "text/plain"})
    for i in range(1, n + 1):
        yield f"{i}\n"
