"""Scenario, languages: echo throughput of one app whose slaves are written in Python,
JavaScript or C++, in the same run (issue 17).

Three ``cocaine run`` nodes, one app each, with the same engine (pool-limit 2, pool-min 2,
concurrency 1) and the same ``echo``: *Python* is examples/hello (``type`` python: slaves
forked from the app's template), *JavaScript* is examples/javascript (``type`` exec, ``node
app.js`` on the npm package cocaine-worker) and *C++* is examples/cpp (``type`` exec, the
built ``build/app`` on the header-only workers/cpp). Each manifest is written into the
bench's work folder and runs the example's code where it is. The same closed loop (100
requests in flight, 100-byte and 64 KiB bodies) drives each in turn, in an order rotated
every round; the ratios JavaScript / Python and C++ / Python are taken round by round. The
CPU time per request of the node, the slaves and the bench process shows where each spends.

First the scenario runs ``sh workers/javascript/install.sh`` and ``make -C examples/cpp``
(both do nothing when up to date); a language whose tool (node and npm, or make and the C++
compiler) is missing, or whose install or build fails, is skipped saying why, and the rest
runs. No target: the figures are reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench import systems
from bench.nodes import CocaineRun, write_app
from bench.processes import cpu_seconds
from bench.report import number
from bench.results import Figure, ScenarioResult, interleave, percentile
from bench.session import Bench

NAME = "languages"
TITLE = ("Languages: echo throughput of Python, JavaScript and C++ slaves, 100 in flight, "
         "2 slaves")
PAYLOADS = {"100 B": 100, "64 KiB": 65536}
ROOT = Path(__file__).resolve().parents[2]
#: The same engine for every language, as the issue sets: 2 warm slaves, one job each.
ENGINE = {**systems.ECHO_ENGINE, "concurrency": 1}
LABELS = {"python": "Python", "javascript": "JavaScript", "cpp": "C++"}
#: Bounds on the preparation steps (npm ci the first time; a cold C++ build).
INSTALL_TIMEOUT = 600.0
BUILD_TIMEOUT = 600.0
JS_PREREQUISITES = ("the JavaScript example needs Node.js >= 18 and npm (Debian: apt-get "
                    "install nodejs npm)")
CPP_PREREQUISITES = ("the C++ example needs a C++17 compiler, make, pkg-config, cppzmq, "
                     "msgpack-cxx and libzmq (Debian: apt-get install g++ make pkg-config "
                     "cppzmq-dev libmsgpack-cxx-dev libzmq3-dev)")


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:] if line.strip())


def _prepare(bench: Bench, command: list[str], timeout: float, what: str) -> str | None:
    """Run a preparation step from the repository's root; None when it worked, else why not."""
    bench.say(f"  {' '.join(command)}")
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"skipped: {what} did not finish within {timeout:g} s"
    if done.returncode != 0:
        output = done.stderr.decode(errors="replace") + done.stdout.decode(errors="replace")
        return f"skipped: {what} failed (exit {done.returncode}): {_tail(output)}"
    return None


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    return lines[0] if lines else "unknown"


def prepare_javascript(bench: Bench) -> tuple[str | None, str]:
    """Install the JavaScript example's npm packages; (why not, or None; node's version)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"skipped: {tool} is not installed: {JS_PREREQUISITES}", ""
    why = _prepare(bench, ["sh", "workers/javascript/install.sh"], INSTALL_TIMEOUT,
                   "sh workers/javascript/install.sh")
    return why, _version(["node", "--version"])


def prepare_cpp(bench: Bench) -> tuple[str | None, str]:
    """Build the C++ example; (why not, or None; the compiler's version)."""
    compiler = os.environ.get("CXX") or "g++"
    for tool in (compiler, "make"):
        if shutil.which(tool) is None:
            return f"skipped: {tool} is not installed: {CPP_PREREQUISITES}", ""
    why = _prepare(bench, ["make", "-C", "examples/cpp"], BUILD_TIMEOUT,
                   "make -C examples/cpp")
    if why is None and not os.access(ROOT / "examples" / "cpp" / "build" / "app", os.X_OK):
        why = "skipped: make -C examples/cpp left no examples/cpp/build/app"
    return why, _version([compiler, "--version"])


def write_exec_app(folder: Path, command: list[str]) -> Path:
    """Write an exec app's ``manifest.json`` (the bench's engine, one ``echo``) into
    ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"type": "exec", "args": {"command": command}, "engine": ENGINE,
                "tasks": {"echo": {"type": "native-server"}}}
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


def _manifest(bench: Bench, language: str) -> Path:
    folder = bench.subfolder(f"languages-{language}")
    if language == "python":
        code = (ROOT / "examples" / "hello" / "app.py").read_text()
        return write_app(folder, code, {"echo": {"type": "native-server"}}, ENGINE)
    if language == "javascript":
        return write_exec_app(folder, ["node", str(ROOT / "examples" / "javascript" /
                                                   "app.js")])
    return write_exec_app(folder, [str(ROOT / "examples" / "cpp" / "build" / "app")])


def _start(bench: Bench, language: str) -> systems.NativeSystem:
    bench.say(f"  starting cocaine run with the {LABELS[language]} app")
    node = CocaineRun(bench.group, _manifest(bench, language))
    try:
        node.start()
    except Exception:
        node.stop()
        raise

    def slaves() -> list[int]:
        return [s["pid"] for s in node.info("bench")["slaves"] if s.get("pid")]

    return systems.NativeSystem(LABELS[language], node, slaves)


def run(bench: Bench) -> ScenarioResult:
    """Prepare the examples, start one node per language, measure them interleaved."""
    result = ScenarioResult(NAME, TITLE)
    versions: dict[str, str] = {"python": _version([bench.python, "--version"])}
    languages = ["python"]
    for language, prepare in (("javascript", prepare_javascript), ("cpp", prepare_cpp)):
        why, versions[language] = prepare(bench)
        if why is None:
            languages.append(language)
        else:
            result.skipped_parts[LABELS[language]] = why
            bench.say(f"  {LABELS[language]}: {why}")
    result.details.update(versions={LABELS[k]: v for k, v in versions.items() if v},
                          engine=ENGINE, inflight=bench.settings.inflight)
    started: dict[str, systems.NativeSystem] = {}
    try:
        for language in languages:
            started[language] = _start(bench, language)
        _measure(bench, result, started)
    finally:
        for system in reversed(list(started.values())):
            system.stop()
    return result


def _measure(bench: Bench, result: ScenarioResult,
             targets: dict[str, systems.NativeSystem]) -> None:
    settings = bench.settings
    rates = {(key, size): result.figure(f"{LABELS[key]}, {size}", "req/s")
             for size in PAYLOADS for key in targets}
    parts = ("node", "slaves", "bench process")
    cpu = {(key, size): {part: Figure(f"{LABELS[key]}, {size}: {part}", "us")
                         for part in parts} for size in PAYLOADS for key in targets}
    latency: dict[str, dict[str, float | None]] = {}
    problems: list[str] = []
    for round_index in range(settings.rounds):
        bench.say(f"  round {round_index + 1}/{settings.rounds}")
        for size, length in PAYLOADS.items():
            payload = b"x" * length
            for key in interleave(targets, round_index):
                system = targets[key]
                pids = system.cpu_pids()
                groups = (pids[:1], pids[1:])
                before = (*(cpu_seconds(g) for g in groups), time.process_time())
                measured = system.run(payload, settings.inflight, settings.throughput_seconds,
                                      settings.warmup_seconds)
                after = (*(cpu_seconds(g) for g in groups), time.process_time())
                rates[key, size].add(measured.rate)
                if measured.answered:
                    for part, b, a in zip(parts, before, after, strict=True):
                        cpu[key, size][part].add((a - b) / measured.answered * 1e6)
                if measured.errors or measured.wrong:
                    problems.append(f"{LABELS[key]} {size} round {round_index + 1}: errors "
                                    f"{dict(measured.errors)}, wrong echoes {measured.wrong}")
                lat = list(measured.latencies)
                series = f"{LABELS[key]}, {size}"
                result.samples[series] = lat
                latency[series] = {f"p{q}": _ms(percentile(lat, q)) for q in (50, 99)}
    for key in ("javascript", "cpp"):
        if key in targets:
            for size in PAYLOADS:
                result.add_ratio(f"{LABELS[key]} / Python, {size}", rates[key, size],
                                 rates["python", size])
    rows = []
    for (key, size), figures in cpu.items():
        medians = [figures[p].median for p in parts]
        total = sum(m for m in medians if m is not None)
        rows.append([f"{LABELS[key]}, {size}", *(number(m) for m in medians), number(total),
                     number(2e6 / total if total else None)])
    result.tables.append((
        "CPU time per request, us (median of rounds): where the time goes",
        ["language", *parts, "total", "2 cores' worth, req/s"], rows))
    result.details["latency_under_load_ms"] = latency
    result.details["cpu_us_per_request"] = {
        f"{LABELS[key]}, {size}": {part: f.as_dict() for part, f in figures.items()}
        for (key, size), figures in cpu.items()}
    if problems:
        result.details["problems"] = problems


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)

