"""Run cocaine's benchmark scenarios and print a table; see bench/README.md.

    .venv/bin/python bench/run.py [--quick] [--peers | --no-peers] [--json PATH] [--rounds N]
                                  [--only NAME]

Exits 0 when every scenario ran or was skipped for a stated reason, 1 when one failed. The
targets are printed with pass or miss and never change the exit code.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import sys
import tempfile
import traceback
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.results import ScenarioResult, Stopwatch  # noqa: E402
from bench.session import Bench, Settings  # noqa: E402

#: Every scenario, in the order they run.
SCENARIOS = ("throughput", "latency", "curve", "growth", "timer", "fsmonitor", "memory",
             "overload", "chaos", "soak", "cluster", "languages", "http")
#: Scenarios run only when named with --only (they need root, or take long).
EXTRA = ("oom",)
#: The scenarios that share servers (cocaine and the broker, started once).
SHARING = ("throughput", "latency", "curve")
DEFAULT_JSON = ROOT / "bench" / "results" / "latest.json"


def scenario_module(name: str) -> ModuleType:
    """The module of scenario ``name`` (imported on demand)."""
    import importlib

    return importlib.import_module(f"bench.scenarios.{name}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description="Benchmark cocaine against its baselines.")
    parser.add_argument("--quick", action="store_true",
                        help="run each scenario briefly (CI: checks the suite works)")
    peers = parser.add_mutually_exclusive_group()
    peers.add_argument("--peers", action="store_true", default=None,
                       help="run Celery with Redis, installing what is missing (the default "
                            "of a full run; a --quick run needs this flag)")
    peers.add_argument("--no-peers", dest="peers", action="store_false",
                       help="skip Celery with Redis")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the results [{DEFAULT_JSON.relative_to(ROOT)}]")
    parser.add_argument("--plot", type=Path, default=None,
                        help="where to draw latency distributions [the JSON path, .png]")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per scenario [5; 2 with --quick]")
    parser.add_argument("--only", action="append", default=None, metavar="SCENARIO",
                        help=f"run only these (repeat or comma-separate): "
                             f"{', '.join(SCENARIOS)}; also {', '.join(EXTRA)}")
    parser.add_argument("--soak-seconds", type=float, default=None, metavar="N",
                        help="seconds of load in the soak scenario [60; 3 with --quick]")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (apps, node logs) for a look afterwards")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if args.soak_seconds is not None and not 1 <= args.soak_seconds <= 86400:
        parser.error(f"--soak-seconds must be from 1 to 86400, got {args.soak_seconds:g}")
    chosen = [n.strip() for item in args.only or [] for n in item.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in SCENARIOS + EXTRA]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from "
                     f"{', '.join(SCENARIOS + EXTRA)}")
    args.scenarios = ([n for n in SCENARIOS + EXTRA if n in chosen] if chosen
                      else list(SCENARIOS))
    if args.peers is None:  # Celery in every full run; the quick run (CI) does without
        args.peers = not args.quick
    return args


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import zmq

    from cocaine_core import __version__

    return {"cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "python": platform.python_version(), "platform": platform.platform(),
            "pyzmq": zmq.pyzmq_version(), "libzmq": zmq.zmq_version(),
            "cocaine": __version__}


def run_scenario(bench: Bench, name: str) -> ScenarioResult:
    """Run one scenario; a failure becomes a ``failed`` result, never an exception."""
    module = scenario_module(name)
    bench.say(f"[{name}] {module.TITLE}")
    watch = Stopwatch()
    try:
        result: ScenarioResult = module.run(bench)
    except KeyboardInterrupt:
        raise
    except Exception:
        result = ScenarioResult(name, module.TITLE, status="failed",
                                reason=traceback.format_exc())
        bench.say(f"[{name}] FAILED\n{result.reason}")
    result.seconds = watch.seconds
    bench.say(f"[{name}] {result.status} in {result.seconds:.1f} s")
    return result


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios, print the table, write the JSON (and the plot)."""
    args = parse_args(argv)
    from bench.nodes import cocaine_command

    if not Path(cocaine_command()).exists():
        print(f"error: no cocaine command beside {sys.executable}; run the bench with the "
              f"venv's python (.venv/bin/python bench/run.py)", file=sys.stderr)
        return 2
    settings = Settings.make(args.quick, args.rounds)
    if args.soak_seconds is not None:
        from bench.scenarios.soak import SECONDS_VARIABLE

        os.environ[SECONDS_VARIABLE] = str(args.soak_seconds)
    signal.signal(signal.SIGTERM, _interrupt)  # stop what we started, as on Ctrl-C
    folder = Path(tempfile.mkdtemp(prefix="cocaine-bench-", dir="/tmp"))  # short: ipc paths
    # The nodes and clients of the run sign with a key of its own, never the user's.
    os.environ["XDG_CONFIG_HOME"] = str(folder / "config")
    os.environ.pop("COCAINE_KEY", None)
    bench = Bench(settings=settings, folder=folder, peers=args.peers, verbose=not args.quiet)
    started = datetime.datetime.now(datetime.UTC)
    watch = Stopwatch()
    results: list[ScenarioResult] = []
    load_before = os.getloadavg()
    bench.say(f"cocaine bench: {', '.join(args.scenarios)}; {settings.rounds} rounds"
              f"{' (quick)' if settings.quick else ''}; work folder {folder}")
    try:
        for name in args.scenarios:
            if name not in SHARING:
                bench.close_services()  # no idle servers beside the scenarios that follow
            results.append(run_scenario(bench, name))
    except KeyboardInterrupt:
        bench.say("interrupted: stopping every process started")
        return 130
    finally:
        bench.close_services()
        bench.group.stop_all()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(report.render(results, settings.rounds))
    plot_path = args.plot or args.json.with_suffix(".png")
    plotted = report.plot(results, plot_path)
    document = {
        "version": 1,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(watch.seconds, 3),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else
                                                      sys.argv[1:])]),
        "settings": asdict(settings),
        "machine": {**machine(), "load_average_before": load_before},
        "scenarios": {r.name: r.as_dict() for r in results},
        "targets": [{"scenario": r.name, **t.as_dict()} for r in results for t in r.targets],
        "pids": bench.group.pids,
        "plot": plotted,
        "work_folder": str(folder) if args.keep else None,
    }
    report.write_json(args.json, document)
    print(f"\nresults: {args.json}; plot: {plotted}; {watch.seconds:.0f} s in all")
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
