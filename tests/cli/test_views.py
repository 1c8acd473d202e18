"""What ``cocaine info`` and ``cocaine app list`` print (``cocaine_core/cli/views.py``): every
name, state, reason and number whole, at 80 columns and wider."""

from __future__ import annotations

from typing import Any

import pytest

from cocaine_core.cli import views

REASON = ("the code did not load after 3 tries: ModuleNotFoundError: No module named "
          "'numpy' (in /srv/apps/a-rather-long-application-name/handlers/thumbnails.py, "
          "line 3)")


def app(state: str = "running", **extra: Any) -> dict[str, Any]:
    """An app's part of the node's ``info``."""
    return {
        "state": state,
        "pool": {"total": 2, "busy": 1, "idle": 1, "starting": 0, "limit": 10, "min": 0,
                 "spare": 1},
        "queue": {"depth": 7, "limit": 100},
        "jobs": {"done": 123456, "failed": 12, "timed-out": 3, "refused": 45, "expired": 0,
                 "retried": 1, "latency-ms": {"p50": 1.234, "p99": 98.765}},
        "slaves": [{"rss-bytes": 20 * 2**20}, {"rss-bytes": 22 * 2**20}],
        "spawns": 2, "uptime": 3600.0,
        "tasks": {"thumbnail": {"type": "native-server", "event": "thumbnail", "requests": 99},
                  "nightly": {"type": "cron", "event": "cleanup", "schedule": "0 3 * * *",
                              "next": "2026-11-29T03:00:00+00:00"}},
        **extra,
    }


def node(**apps: dict[str, Any]) -> dict[str, Any]:
    """The node's ``info``."""
    return {"node": "build-server-07.example.org", "endpoint": "tcp://127.0.0.1:10053",
            "pid": 4242, "uptime": 86400.0, "requests": 1234567, "rss-bytes": 48 * 2**20,
            "apps": apps}


NAME = "a-rather-long-application-name"


def flat(lines: list[str]) -> str:
    """The lines as one, each wrapped line's indentation folded into a space."""
    return " ".join(" ".join(lines).split())


@pytest.mark.parametrize("columns", [80, 120, 200])
def test_info_keeps_every_name_state_and_number_whole(columns: int) -> None:
    lines = views.node_lines(node(**{NAME: app(), "hello": app("stopping")}), columns)
    text = flat(lines)
    assert all(len(line) <= columns for line in lines), lines
    assert "…" not in text
    assert "node build-server-07.example.org at tcp://127.0.0.1:10053 · pid 4242" in text
    assert "1234567 requests · rss 48.0 MiB" in text
    assert f"{NAME} · running · up 3600 s" in text
    assert "hello · stopping" in text
    assert "2 slaves: 1 busy, 1 idle, 0 starting (max 10, min 0); 1 spare" in text
    assert "7 waiting of 100" in text
    assert "123456 done, 12 failed, 3 timed out, 45 refused, 1 retried" in text
    assert "p50 1.23 ms, p99 98.77 ms" in text
    assert "42.0 MiB resident in slaves" in text
    assert "thumbnail (native-server): requests=99" in text
    assert "nightly → cleanup (cron): schedule=0 3 * * *, next=2026-11-29T03:00:00+00:00" in text


def test_a_broken_app_s_reason_is_wrapped_not_cut() -> None:
    lines = views.node_lines(node(**{NAME: app("broken", broken=REASON)}), 80)
    assert all(len(line) <= 80 for line in lines), lines
    assert f"broken {REASON}" in flat(lines)
    assert sum(1 for line in lines if line.startswith("           ")) >= 2  # wrapped under it


def test_a_number_is_never_parted_from_its_unit() -> None:
    for columns in range(40, 100):
        for line in views.node_lines(node(**{NAME: app()}), columns):
            assert not line.lstrip().startswith(("ms", "MiB", "s ")), (columns, line)


def test_plugin_sections_are_shown_as_pairs() -> None:
    cgroups = {"path": "/sys/fs/cgroup/cocaine/hello", "memory": {"current": 1024, "max": None}}
    text = flat(views.node_lines(node(hello=app(cgroups=cgroups)), 80))
    assert "cgroups path=/sys/fs/cgroup/cocaine/hello, memory.current=1024" in text
    assert "memory.max" not in text


def test_a_node_without_apps() -> None:
    assert views.node_lines(node(), 80)[-1] == "no apps"
    assert views.app_list_lines({}, 80) == ["no apps"]


@pytest.mark.parametrize("columns", [80, 200])
def test_app_list_is_a_line_per_app_with_names_aligned(columns: int) -> None:
    lines = views.app_list_lines({"hello": app(), "thumbs": app("stopping")}, columns)
    if columns == 200:
        assert lines == [
            "hello   running · 2 slaves · 7 queued · 123456 done · 12 failed · tasks: "
            "thumbnail, nightly",
            "thumbs  stopping · 2 slaves · 7 queued · 123456 done · 12 failed · tasks: "
            "thumbnail, nightly"]
    assert all(len(line) <= columns for line in lines)
    assert flat(lines).startswith("hello running · 2 slaves · 7 queued · 123456 done")


def test_app_list_wraps_a_broken_app_s_reason_under_it() -> None:
    lines = views.app_list_lines({NAME: app("broken", broken=REASON), "hello": app()}, 80)
    assert all(len(line) <= 80 or " " not in line.strip() for line in lines), lines
    assert lines[0].startswith(f"{NAME}  broken · 2 slaves")
    assert f"broken: {REASON}" in flat(lines)
    assert "…" not in flat(lines)


def test_crashes_show_the_back_off_and_the_last_exit():
    app = {"state": "running", "uptime": 5, "pool": {"total": 1, "busy": 0, "idle": 1,
                                                    "starting": 0, "limit": 2, "min": 0},
           "queue": {"depth": 0, "limit": 100},
           "jobs": {"done": 1, "failed": 2, "timed-out": 0, "refused": 0,
                    "latency-ms": {"p50": 1.0, "p99": 2.0}},
           "crashes": {"recent": 6, "total": 7, "backoff-s": 0.5,
                       "last-exit": "slave 123 exited with 3"}}
    text = " ".join(" ".join(views.app_lines("crashy", app, 80)).split())
    assert "crashes 6 recent, 7 in all; new slaves wait 0.5 s; last: slave 123 exited with 3" \
        in text
    quiet = {**app, "crashes": {"recent": 0, "total": 0, "backoff-s": 0, "last-exit": None}}
    assert "crashes" not in "\n".join(views.app_lines("calm", quiet, 80))


def test_a_drivers_map_figures_read_as_pairs() -> None:
    web = app(tasks={"web": {"type": "http-server", "event": "web", "listen": "0.0.0.0:80",
                             "statuses": {"2xx": 10, "5xx": 1}, "unrouted": {}}})
    text = flat(views.node_lines(node(shop=web), 80))
    assert "statuses=2xx:10 5xx:1" in text and "unrouted=-" in text
    assert "{" not in text


def test_restarts_show_by_reason_only_once_there_are_some() -> None:
    quiet = "\n".join(views.node_lines(node(calm=app(restarts={})), 80))
    assert "restarts" not in quiet
    text = "\n".join(views.node_lines(node(shaky=app(restarts={"hung": 2, "crashed": 1})), 80))
    assert "restarts 1 crashed, 2 hung" in " ".join(text.split())
