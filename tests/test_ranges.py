"""Every number a range, every name checked (issue 13): manifests, deploys and requests.

A number past what a real app could want is refused before anything starts, by key path and
with the range in the message; NaN and the infinities are no times; a name is the whole string
(``$`` matches before a trailing newline, so ``"app\\n"`` once passed as ``app``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgpack
import pytest

from cocaine_core import archive, schema
from cocaine_core.errors import ManifestError, NodeError, ServiceError, StorageError
from cocaine_core.manifest import ENGINE_KEYS, TASK_KEYS, check_app_name, parse_manifest
from cocaine_core.plugins import get_host
from cocaine_core.schema import Key, check_keys
from cocaine_core.storages.files import FileStorage
from cocaine_core.testing import leftover_slaves, write_app

CODE = "def echo(request):\n    return request.data\n"


def problems_of(data: dict[str, Any], root: Path) -> dict[str, str]:
    """The manifest's problems by key path ({} if it passes)."""
    try:
        parse_manifest(data, root=root)
    except ManifestError as exc:
        return {p.path: p.message for p in exc.problems}
    return {}


def manifest(engine: dict[str, Any] | None = None, **task: Any) -> dict[str, Any]:
    """A manifest of one native task ``echo`` with ``engine`` and extra task keys."""
    return {"type": "python", "args": {"source": "app.py"}, "engine": engine or {},
            "tasks": {"echo": {"type": "native-server", **task}}}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder holding the app's code."""
    (tmp_path / "app.py").write_text(CODE)
    return tmp_path


# -- 1. pool sizes and every engine number --------------------------------------------------------


def test_a_billion_slaves_is_refused_naming_the_range(root):
    found = problems_of(manifest({"pool-limit": 1e9, "pool-min": 1e9}), root)
    assert found["engine.pool-limit"] == "must be an integer from 1 to 1000, got 1000000000"
    assert found["engine.pool-min"] == "must be an integer from 0 to 1000, got 1000000000"


#: key, the lowest and highest value accepted, and the start of the message past them.
ENGINE_RANGES = [
    ("pool-limit", 1, 1000, "must be an integer from 1 to 1000"),
    ("pool-min", 0, 1000, "must be an integer from 0 to 1000"),
    ("queue-limit", 0, 1_000_000, "must be an integer from 0 to 1000000"),
    ("grow-threshold", 1, 10_000, "must be an integer from 1 to 10000"),
    ("concurrency", 1, 1000, "must be an integer from 1 to 1000"),
    ("heartbeat-timeout", 0.1, 86400, "must be a number of seconds from 0.1 to 86400 (1 day)"),
    ("startup-timeout", 0.1, 3600, "must be a number of seconds from 0.1 to 3600 (1 hour)"),
    ("idle-timeout", 0.1, 604800, "must be a number of seconds from 0.1 to 604800 (7 days)"),
    ("termination-timeout", 0, 600,
     "must be a number of seconds from 0 to 600 (10 minutes)"),
    ("job-timeout", 0.001, 604800,
     "must be a number of seconds from 0.001 to 604800 (7 days), or null for none"),
    ("max-requests", 0, 1_000_000_000, "must be an integer from 0 to 1000000000"),
]


@pytest.mark.parametrize(("key", "low", "high", "message"), ENGINE_RANGES,
                         ids=[r[0] for r in ENGINE_RANGES])
def test_every_engine_number_has_a_range(root, key, low, high, message):
    # pool-min may reach pool-limit; queue-limit 0 needs warm slaves.
    engine = {"pool-limit": 1000} if key == "pool-min" else \
        {"pool-min": 1} if key == "queue-limit" else {}
    for fine in (low, high):
        assert problems_of(manifest({**engine, key: fine}), root) == {}, fine
    step = 1 if isinstance(low, int) and isinstance(high, int) else low / 2 or 0.5
    for bad in (low - step, high + step, high * 10**6):
        found = problems_of(manifest({**engine, key: bad}), root)
        assert found[f"engine.{key}"].startswith(message), found


def test_the_biggest_sizes_are_refused(root):
    found = problems_of(manifest({"max-rss": "65T"}), root)
    assert found["engine.max-rss"].startswith("must be a size from 1 MiB to 64 TiB")
    assert problems_of(manifest({"max-rss": "64T"}), root) == {}


def test_pool_min_above_pool_limit_is_refused(root):
    found = problems_of(manifest({"pool-min": 5, "pool-limit": 2}), root)
    assert found["engine.pool-min"].startswith("is 5, above engine.pool-limit (2)")


def test_a_deploy_of_a_billion_slaves_is_a_400_and_nothing_runs(node_process, tmp_path):
    """Through a real node: refused before any slave is forked, nothing stored.

    (pool-min stays 0 so that on code without the range the deploy does not fork.)"""
    node = node_process()
    folder = tmp_path / "big"
    write_app(folder, CODE, {"echo": {"type": "native-server"}}, {"pool-limit": 1e9})
    code = archive.pack_source(folder / "app.py")
    data = json.loads((folder / "manifest.json").read_text())
    with node.client() as client:
        with pytest.raises(ServiceError) as error:
            client.control("deploy", name="big", manifest=data, archive=code,
                           sha256=archive.sha256(code))
        assert error.value.code == 400
        assert "engine.pool-limit: must be an integer from 1 to 1000, got 1000000000" in \
            error.value.message
        assert client.control("list") == []
    assert not (node.storage / "apps" / "big").exists()
    assert leftover_slaves(node.process.pid) == []


# -- 2. NaN and the infinities are no times -------------------------------------------------------

NOT_TIMES = [math.nan, math.inf, -math.inf]
ENGINE_TIMES = ["heartbeat-timeout", "startup-timeout", "idle-timeout", "termination-timeout",
                "job-timeout"]


@pytest.mark.parametrize("value", NOT_TIMES, ids=repr)
@pytest.mark.parametrize("key", ENGINE_TIMES)
def test_nan_and_infinity_are_no_engine_time(root, key, value):
    # Python's json reads NaN and Infinity: a manifest file can carry them.
    data = json.loads(json.dumps(manifest({key: value})))
    assert f"engine.{key}" in problems_of(data, root)


@pytest.mark.parametrize("value", NOT_TIMES, ids=repr)
def test_nan_and_infinity_are_no_task_timeout(root, value):
    assert "tasks.echo.timeout" in problems_of(manifest(timeout=value), root)


@pytest.mark.parametrize("value", NOT_TIMES, ids=repr)
def test_nan_and_infinity_in_a_deployed_manifest_are_a_400(node_process, tmp_path, value):
    """msgpack floats can be NaN or infinite: the deploy is refused by key path."""
    node = node_process()
    (tmp_path / "app.py").write_text(CODE)
    code = archive.pack_source(tmp_path / "app.py")
    data = manifest({"job-timeout": value}, timeout=value)
    with node.client() as client, pytest.raises(ServiceError) as error:
        client.control("deploy", name="app", manifest=data, archive=code,
                       sha256=archive.sha256(code))
    assert error.value.code == 400
    assert "engine.job-timeout: must be a number" in error.value.message
    assert "tasks.echo.timeout: must be a number" in error.value.message


@pytest.mark.parametrize("value", NOT_TIMES, ids=repr)
@pytest.mark.parametrize("key", ["timeout", "deadline"])
def test_nan_and_infinity_are_no_policy_time(cocaine_node, make_app, key, value):
    """The native request's policy (``Policy.parse``): a 400 naming the key."""
    cocaine_node.add_app("echo", make_app(CODE))
    with cocaine_node.client() as client, pytest.raises(ServiceError) as error:
        client.call("echo", "echo", b"x", **{key: value})
    assert error.value.code == 400 and f"policy.{key}" in error.value.message


def test_a_policy_number_out_of_range_is_a_400(cocaine_node, make_app):
    """Raw requests whose policy holds a huge, negative or ill-typed number: a 400 each."""
    import zmq

    cocaine_node.add_app("echo", make_app(CODE))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cocaine_node.endpoint)
    try:
        for number, policy in enumerate([{"timeout": 1e300}, {"timeout": -1},
                                         {"deadline": 2**64 - 1}, {"urgent": 1}]):
            sock.send_multipart([msgpack.packb([10, number, "echo", "echo", policy]), b"x"])
            assert sock.poll(10_000), "no answer"
            answer = msgpack.unpackb(sock.recv_multipart()[0])
            assert answer[0] == 7 and answer[2] == 400, (policy, answer)
    finally:
        sock.close()


# -- 3. the filesystem monitor's debounce ---------------------------------------------------------


def debounce_problems(root: Path, debounce: Any) -> dict[str, str]:
    """The problems of a filesystem-monitor task with ``debounce``."""
    return problems_of({"type": "python", "args": {"source": "app.py"},
                        "tasks": {"echo": {"type": "filesystem-monitor", "path": ".",
                                           "debounce": debounce}}}, root)


@pytest.mark.parametrize("debounce", [1e300, 3601, 0.0001])
def test_a_debounce_out_of_range_is_refused(root, debounce):
    """1e300 s was accepted and became a 1e303 ms wait handed to the watcher."""
    found = debounce_problems(root, debounce)
    assert found["tasks.echo.debounce"].startswith(
        "must be a number of seconds from 0.001 to 3600 (1 hour), got "), found


@pytest.mark.parametrize("debounce", [0, math.nan, math.inf])
def test_a_debounce_of_nothing_or_forever_is_refused(root, debounce):
    assert "tasks.echo.debounce" in debounce_problems(root, debounce)


# -- 5. the control protocol's numbers -------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1, 2**64 - 1, 1.5, math.nan, math.inf, True, "10"],
                         ids=repr)
def test_an_upload_size_out_of_range_is_a_400(cocaine_node, size):
    with cocaine_node.client() as client, pytest.raises(ServiceError) as error:
        client.control("upload-begin", size=size)
    assert error.value.code == 400, error.value


@pytest.mark.parametrize("offset", [-1, 2**64 - 1, math.nan, 1.5, "0", None], ids=repr)
def test_an_upload_offset_that_is_not_the_next_byte_is_a_400(node_process, offset):
    node = node_process()
    with node.client() as client:
        upload = client.control("upload-begin", size=10)["upload"]
        with pytest.raises(ServiceError) as error:
            client.control("upload-chunk", upload=upload, data=b"x", offset=offset)
        assert error.value.code == 400, error.value


# -- 4. a name is the whole string ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["app\n", "app\r\n", "\napp", "app\n\n", "a\nb"])
def test_a_name_with_a_newline_is_no_app_name(name):
    with pytest.raises(NodeError, match="is not allowed"):
        check_app_name(name)


def test_a_deploy_named_with_a_trailing_newline_is_refused_and_nothing_runs(node_process,
                                                                            tmp_path):
    node = node_process()
    folder = tmp_path / "app"
    write_app(folder, CODE, {"echo": {"type": "native-server"}})
    code = archive.pack_source(folder / "app.py")
    data = json.loads((folder / "manifest.json").read_text())
    with node.client() as client:
        with pytest.raises(ServiceError) as error:
            client.control("deploy", name="app\n", manifest=data, archive=code,
                           sha256=archive.sha256(code))
        assert error.value.code == 400 and "is not allowed" in error.value.message
        assert client.control("list") == []
        assert client.control("info")["apps"] == {}
    assert leftover_slaves(node.process.pid) == []
    # Nothing but the key the node authorized at its first start.
    stored = [p.relative_to(node.storage).parts[0] for p in node.storage.rglob("*")
              if p.is_file()]
    assert stored == ["keys"], stored


@pytest.mark.parametrize("task", ["echo\n", "echo\r\n"])
def test_an_event_name_with_a_trailing_newline_is_refused(root, task):
    data = {"type": "python", "args": {"source": "app.py"},
            "tasks": {task: {"type": "native-server"}}}
    assert f"tasks.{task}" in problems_of(data, root)
    emitted = manifest(emit="echo\n")
    assert "tasks.echo.emit" in problems_of(emitted, root)


@pytest.mark.parametrize(("namespace", "key"), [("apps", "app\n"), ("apps\n", "app"),
                                                ("code", "x\n")])
def test_storage_keys_with_a_trailing_newline_are_refused(tmp_path, namespace, key):
    store = FileStorage(f"files://{tmp_path / 'storage'}")
    with pytest.raises(StorageError, match="bad storage"):
        store.put(namespace, key, b"{}")
    assert not [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]


# -- 3. the sweep: every number any shipped key declares has a range -----------------------------

UNBOUNDED = {schema.positive_int, schema.non_negative_int, schema.positive_number,
             schema.non_negative_number, schema.optional_positive_number}


#: The distributions this repository ships (the test suite's example plugins are not swept).
SHIPPED = {"cocaine-core", "cocaine-python", "cocaine-timers", "cocaine-zmq", "cocaine-cgroups",
           "cocaine-http"}


def every_key() -> list[tuple[str, Key]]:
    """Every key the core and the shipped plugins declare: engine, task and driver keys."""
    host = get_host()
    keys = [(f"engine.{k.name}", k) for k in ENGINE_KEYS]
    keys += [(f"engine.{name}", spec) for name, spec in host.registry("engine_keys").items()]
    keys += [(f"tasks.*.{k.name}", k) for k in TASK_KEYS]
    drivers = host.registry("drivers")
    for name, driver in drivers.items():
        owner = drivers.owner(name)
        if owner is not None and owner.distribution in SHIPPED:
            keys += [(f"tasks.*.{k.name} ({name})", k) for k in getattr(driver, "keys", ())]
    return keys


def test_every_number_key_has_a_range():
    keys = every_key()
    assert len(keys) > 20
    unbounded = [path for path, key in keys
                 if key.kind in UNBOUNDED or (isinstance(key.default, int | float) and not
                                              isinstance(key.default, bool) and
                                              not schema.is_bounded(key.kind))]
    assert unbounded == []


def test_a_kind_that_breaks_is_a_problem_of_its_key_not_a_crash():
    """A plugin's check that raises something else than ``Invalid`` (``int("²")``) still gives
    a problem by key path, so a deploy is a 400, not a 500."""
    def port(value: Any) -> int:
        return int(value)

    _values, problems = check_keys({"port": "²"}, (Key("port", port),), "tasks.t")
    assert [p.path for p in problems] == ["tasks.t.port"]
    assert "could not be checked (ValueError" in problems[0].message


def test_an_app_has_at_most_256_tasks(root):
    """3000 timer tasks at the 10 ms floor kept a node at 100% CPU, its queue growing by
    14k jobs a second: the floor bounds a task's rate, the cap bounds an app's."""
    many = {"type": "python", "args": {"source": "app.py"},
            "tasks": {f"t{i}": {"type": "native-server", "emit": "echo"} for i in range(257)}}
    found = problems_of(many, root)
    assert found["tasks"].startswith("has 257 tasks; an app may have at most 256")
    many["tasks"].pop("t0")
    assert problems_of(many, root) == {}
