"""``http-server``: requests and answers with real clients (httpx, curl), errors mapped."""

from __future__ import annotations

import asyncio
import json

import httpx

from cocaine_core.testing import wait_until


def test_echo_with_httpx_sync_and_async(serve):
    """GET and POST reach the handler; the answer comes back with Content-Length."""
    url = serve({"echo": {}})["echo"]
    with httpx.Client() as client:
        r = client.post(url + "/anything", content=b"hello")
        assert (r.status_code, r.content) == (200, b"hello")
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-length"] == "5"
        r = client.get(url)
        assert (r.status_code, r.content) == (200, b"")

    async def many() -> list[bytes]:
        async with httpx.AsyncClient() as client:
            answers = await asyncio.gather(*(client.post(url, content=str(i).encode())
                                             for i in range(20)))
        return [a.content for a in answers]

    assert asyncio.run(many()) == [str(i).encode() for i in range(20)]


def test_meta_reaches_the_handler(serve):
    """Method, path, raw query, headers (lower-case names, as sent), version, remote."""
    url = serve({"meta": {}})["meta"]
    r = httpx.put(url + "/a/b%20c?x=1&y=%2F", content=b"{}",
                  headers={"X-Custom": "Value One", "Content-Type": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    meta = r.json()
    assert meta["method"] == "PUT" and meta["path"] == "/a/b%20c"
    assert meta["query"] == "x=1&y=%2F" and meta["http_version"] == "1.1"
    assert ["x-custom", "Value One"] in meta["headers"]
    assert meta["remote"].startswith("127.0.0.1:")


def test_status_and_headers_set_by_the_app(serve):
    """Response(status, headers) becomes the status line and headers (repeated ones too)."""
    urls = serve({"created": {"path": "/made"}, "missing": {"path": "/gone"}})
    r = httpx.post(urls["created"] + "/made")
    assert (r.status_code, r.content, r.headers["x-thing"]) == (201, b"made", "a b")
    assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
    r = httpx.get(urls["missing"] + "/gone/7")
    assert (r.status_code, r.text, r.headers["content-type"]) == (404, "nothing here",
                                                                  "text/plain")


def test_curl_sees_status_headers_and_bodies(serve, tmp_path, curl):
    """curl -i shows the status line and headers; -d @file posts a file."""
    urls = serve({"created": {"path": "/made"}, "echo": {"path": "/echo"}})
    out = curl("-i", "-X", "POST", urls["created"] + "/made")
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 Created\r\n") and b"\r\nX-Thing: a b" in head
    assert body == b"made"
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"items": list(range(1000))}))
    out = curl("--data-binary", f"@{data}", "-H", "Content-Type: application/json",
               urls["echo"] + "/echo")
    assert out.returncode == 0 and json.loads(out.stdout) == {"items": list(range(1000))}


def test_paths_route_to_the_longest_prefix(serve):
    """Tasks of one app on one address split it by path prefix, on segment boundaries; a
    path no task serves is 404."""
    urls = serve({"echo": {"path": "/"}, "meta": {"path": "/api/"}, "boom": {"path": "/b"}})
    url = urls["meta"]
    assert urls["echo"] == url == urls["boom"]  # one server for the app's "127.0.0.1:0"
    assert httpx.get(url + "/api").json()["path"] == "/api"
    assert httpx.get(url + "/api/x?q").json()["path"] == "/api/x"
    assert httpx.post(url + "/apix", content=b"echo").content == b"echo"
    assert httpx.get(url + "/b/c").status_code == 502
    assert httpx.post(url + "/bc", content=b"e").content == b"e"


def test_a_path_no_task_serves_is_404(serve, task_info):
    """Without a task at "/", paths outside every prefix are 404, saying what is served;
    the connection stays open for the next request."""
    url = serve({"meta": {"path": "/api"}})["meta"]
    with httpx.Client() as client:
        r = client.get(url + "/apix")
        assert r.status_code == 404
        assert "no task serves /apix here (paths served: /api)" in r.text
        assert client.get(url + "/api").status_code == 200
    info = task_info("meta")
    assert info["accepted"] == 1 and info["unrouted"] == {"4xx": 1}


def test_keep_alive_reuses_one_connection(serve, task_info, curl):
    """An HTTP/1.1 client sends many requests on one connection; HTTP/1.0 closes."""
    url = serve({"echo": {}})["echo"]
    with httpx.Client() as client:
        for i in range(10):
            assert client.post(url, content=b"%d" % i).content == b"%d" % i
    info = task_info("echo")
    assert info["accepted"] == 1 and info["requests"] == 10
    assert info["statuses"] == {"2xx": 10}
    out = curl("-0", "-i", url, url)  # two requests with HTTP/1.0: two connections
    assert out.stdout.count(b"HTTP/1.1 200 OK") == 2 and b"Connection: close" in out.stdout
    assert wait_until(lambda: task_info("echo")["accepted"] == 3)


def test_engine_errors_become_http_statuses(serve, task_info):
    """A handler that raises: 502; a job over its timeout: 504; bodies are text/plain
    messages."""
    urls = serve({"boom": {"path": "/boom"}, "slow": {"path": "/slow", "timeout": 0.5}})
    r = httpx.get(urls["boom"] + "/boom")
    assert r.status_code == 502 and "ValueError: boom" in r.text
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    r = httpx.get(urls["slow"] + "/slow?5")
    assert r.status_code == 504
    statuses = task_info("boom")["statuses"]
    assert statuses == {"5xx": 1}


def test_full_queue_answers_503_with_retry_after(serve, folder):
    """Past the app's queue-limit a request is answered 503 with Retry-After at once."""
    urls = serve({"held": {"path": "/held"}, "echo": {"path": "/echo"}},
                 engine={"pool-limit": 1, "queue-limit": 1})
    assert httpx.post(urls["echo"] + "/echo", content=b"up").content == b"up"  # a slave is up
    url = urls["held"] + "/held"

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            tasks = [asyncio.ensure_future(client.get(url)) for _ in range(6)]
            done: list[httpx.Response] = []
            # The refused ones come back while the others wait for the release.
            while len(done) < 4:
                await asyncio.sleep(0.02)
                done = [t.result() for t in tasks if t.done()]
            (folder / "release").touch()
            return [await t for t in tasks]

    answers = asyncio.run(burst())
    refused = [r for r in answers if r.status_code == 503]
    assert len(refused) == 4 and sum(r.status_code == 200 for r in answers) == 2
    assert all(r.headers["retry-after"] == "1" for r in refused)
    assert "queue is full" in refused[0].text


def test_a_broken_app_answers_503_saying_why(serve):
    """An app whose code lacks a task's handler is broken: 503, the reason in the body."""
    url = serve({"nothere": {}})["nothere"]
    r = httpx.get(url)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "no handler 'nothere'" in r.text
