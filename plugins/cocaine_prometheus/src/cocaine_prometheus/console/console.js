// The cocaine console: polls /api/state every second and shows the node and its apps.
// Every text from the node goes in with textContent (never as HTML); rates are made here from
// the totals of two polls.
"use strict";

(function () {
  const POLL_MS = 1000;
  const EMPTY = "–";
  // The table's columns: the class of the cell, the label narrow screens show, its value.
  const COLUMNS = [
    ["name", "App", (app) => app.name],
    ["state", "State", (app) => app.state],
    ["rate num", "Req/s", (app, rate) => rateText(rate.requests)],
    ["errors-rate num", "Err/s", (app, rate) => rateText(rate.errors)],
    ["p50 num", "p50", (app) => msText(app["p50-ms"])],
    ["p99 num", "p99", (app) => msText(app["p99-ms"])],
    ["queue num", "Queue", (app) => pair(app.queue.depth, app.queue.limit)],
    ["busy num", "Busy", (app) => count(app.slaves.busy)],
    ["idle num", "Idle", (app) => count(app.slaves.idle)],
    ["starting num", "Starting", (app) => count(app.slaves.starting)],
    ["requests num", "Requests", (app) => count(app.requests)],
    ["restarts num", "Restarts", (app) => count(app.restarts)],
  ];

  let previous = null; // the last poll: {time, apps: {name: {requests, errors}}}

  function byId(id) {
    return document.getElementById(id);
  }

  function count(value) {
    return typeof value === "number" ? String(value) : EMPTY;
  }

  function pair(value, limit) {
    if (typeof value !== "number") return EMPTY;
    return typeof limit === "number" ? value + " / " + limit : String(value);
  }

  function rateText(rate) {
    if (typeof rate !== "number") return EMPTY;
    return rate >= 100 ? rate.toFixed(0) : rate.toFixed(1);
  }

  function msText(ms) {
    if (typeof ms !== "number") return EMPTY;
    return ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : ms.toFixed(ms >= 10 ? 0 : 1) + " ms";
  }

  function duration(seconds) {
    if (typeof seconds !== "number") return EMPTY;
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), rest = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + rest + "s";
    return rest + "s";
  }

  function bytes(value) {
    if (typeof value !== "number") return EMPTY;
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (value >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
    return value.toFixed(i ? 1 : 0) + " " + units[i];
  }

  // Requests and errors per second since the last poll (none at the first, or after the
  // app's counters started anew).
  function rates(app, time) {
    const before = previous && previous.apps[app.name];
    const elapsed = previous ? time - previous.time : 0;
    if (!before || elapsed <= 0 || app.requests < before.requests || app.errors < before.errors) {
      return {requests: null, errors: null};
    }
    return {requests: (app.requests - before.requests) / elapsed,
            errors: (app.errors - before.errors) / elapsed};
  }

  function appRow(app, time) {
    const row = document.createElement("tr");
    row.dataset.app = app.name;
    const rate = rates(app, time);
    for (const [classes, label, value] of COLUMNS) {
      const cell = document.createElement("td");
      cell.className = classes;
      cell.dataset.label = label;
      cell.textContent = value(app, rate);
      if (classes === "state") {
        cell.classList.add("state-" + app.state.replace(/[^a-z-]/g, ""));
        if (app.broken) {
          const reason = document.createElement("span");
          reason.className = "reason";
          reason.textContent = app.broken;
          cell.append(reason);
        }
      }
      row.append(cell);
    }
    return row;
  }

  function eventItem(event) {
    const item = document.createElement("li");
    const when = document.createElement("time");
    const date = new Date(event.time * 1000);
    when.dateTime = date.toISOString();
    when.textContent = date.toLocaleTimeString();
    const app = document.createElement("span");
    app.className = "app";
    app.textContent = event.app;
    const topic = document.createElement("span");
    topic.className = "topic topic-" + event.topic.replace(/[^a-z-]/g, "");
    topic.textContent = event.topic;
    item.append(when, app, topic);
    const details = ["reason", "version", "status"]
      .filter((key) => event[key] !== undefined)
      .map((key) => key + ": " + event[key]);
    if (details.length) {
      const detail = document.createElement("span");
      detail.className = "detail";
      detail.textContent = details.join(", ");
      item.append(detail);
    }
    return item;
  }

  function render(state) {
    const node = state.node;
    byId("node-name").textContent = node.name;
    document.title = node.name + " · cocaine";
    byId("node-version").textContent = node.version || EMPTY;
    byId("node-uptime").textContent = duration(node.uptime);
    byId("node-rss").textContent = bytes(node["rss-bytes"]);
    byId("node-cpu").textContent =
      typeof node["cpu-seconds"] === "number" ? node["cpu-seconds"].toFixed(1) + " s" : EMPTY;
    byId("node-slaves").textContent = pair(node.slaves, node["max-slaves"]);

    byId("apps").tBodies[0].replaceChildren(...state.apps.map((app) => appRow(app, state.time)));
    byId("no-apps").hidden = state.apps.length > 0;
    byId("events").replaceChildren(...state.events.map(eventItem));
    byId("no-events").hidden = state.events.length > 0;

    const apps = {};
    for (const app of state.apps) apps[app.name] = {requests: app.requests, errors: app.errors};
    previous = {time: state.time, apps: apps};
  }

  async function poll() {
    const status = byId("status");
    try {
      const response = await fetch("/api/state", {cache: "no-store",
                                                   headers: {Accept: "application/json"}});
      if (!response.ok) throw new Error("HTTP " + response.status);
      const state = await response.json();
      render(state);
      status.className = "live";
      status.textContent = "Live: updated " + new Date(state.time * 1000).toLocaleTimeString();
    } catch (error) {
      status.className = "error";
      status.textContent = "Cannot reach the node (" + error.message + "); retrying every second.";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
