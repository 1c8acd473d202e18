"""The web console in a real headless Chromium: it loads, lists the running apps, and shows a
request made with the native client within two seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cocaine_core.client import Client

#: What the page shows for a number it does not have (an en dash).
EMPTY = "\u2013"
#: The cells of an app's row, by app, as the page shows them.
ROWS = """JSON.stringify(Object.fromEntries([...document.querySelectorAll('#apps tbody tr')]
  .map(tr => [tr.dataset.app, Object.fromEntries([...tr.cells]
    .map(td => [td.className.split(' ')[0], td.textContent]))])))"""


def _rows(page) -> dict[str, dict[str, str]]:
    return json.loads(page.evaluate(ROWS))


def test_the_console_lists_the_apps_and_shows_a_new_request_within_two_seconds(
        metrics_node, app_folder: Path, browser, tmp_path: Path) -> None:
    metrics_node.deploy("shop", app_folder)
    metrics_node.deploy("cart", app_folder)
    name = metrics_node.info()["node"]
    page = browser.open(metrics_node.base + "/")
    page.wait_for(f"document.getElementById('node-name').textContent === {json.dumps(name)}")
    page.wait_for("document.querySelectorAll('#apps tbody tr').length === 2")
    rows = _rows(page)
    assert set(rows) == {"shop", "cart"}
    assert rows["shop"]["state"] == "running" and rows["shop"]["requests"] == "0"
    assert page.evaluate("document.getElementById('node-version').textContent") != EMPTY

    with Client(metrics_node.node.endpoint, wait=30) as client:
        assert client.call("shop", "echo", b"hello") == b"hello"
    called = time.monotonic()
    page.wait_for("""(() => { const row = document.querySelector('#apps tr[data-app="shop"]');
                      return row && row.querySelector('td.requests').textContent === '1'; })()""",
                  timeout=2.0)
    shown_after = time.monotonic() - called
    assert shown_after < 2.0
    assert _rows(page)["cart"]["requests"] == "0"
    # The next poll makes a rate of it (a number, where the first poll had none).
    page.wait_for(f"""document.querySelector('#apps tr[data-app="shop"] td.rate')
                     .textContent !== {json.dumps(EMPTY)}""", timeout=3.0)
    # Lifecycle events are listed, newest first.
    times = page.wait_for("""(() => { const t = [...document.querySelectorAll('#events time')]
                             .map(e => Date.parse(e.dateTime)); return t.length ? t : null; })()""")
    assert times == sorted(times, reverse=True)
    topics = page.evaluate("[...document.querySelectorAll('#events .topic')]"
                           ".map(e => e.textContent)")
    assert "slave-spawned" in topics or "started" in topics, topics
    page.evaluate("1")  # read what the page logged meanwhile
    assert page.problems() == []  # no script error, no CSP violation
    page.screenshot(tmp_path / "console.png")


def test_the_console_fits_a_narrow_screen(metrics_node, app_folder: Path, browser,
                                          tmp_path: Path) -> None:
    metrics_node.deploy("shop", app_folder)
    page = browser.open(metrics_node.base + "/", width=360, height=740)
    page.wait_for("document.querySelectorAll('#apps tbody tr').length === 1")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a 360 px screen"
    # Each app is a card whose cells carry their own labels.
    label = page.evaluate("""getComputedStyle(document.querySelector(
        '#apps td.requests'), '::before').content""")
    assert label == '"Requests"'
    page.evaluate("1")
    assert page.problems() == []
    page.screenshot(tmp_path / "console-narrow.png")
