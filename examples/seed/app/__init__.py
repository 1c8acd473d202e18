"""The seed app: the original Cocaine README's example, made to do something.

Data comes in two ways and is summed up once a minute:

- ``spool``: files dropped into ``var/spool`` are taken in (claimed, counted, deleted);
- ``event``: clients send messages (``cocaine call seed event "some text"``), which are counted
  the same way; the answer is the latest summary;
- ``aggregate``: every minute, the counts so far are summed into ``var/aggregate.json``.

Every record is one JSON line in ``var/records.jsonl``, appended with a single ``write`` so
slaves running at the same time never interleave. The folder ``var`` sits beside this package
(set ``SEED_DATA`` to put it elsewhere).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

DATA = Path(os.environ.get("SEED_DATA") or Path(__file__).resolve().parent.parent / "var")
RECORDS = DATA / "records.jsonl"
SUMMARY = DATA / "aggregate.json"
CLAIMED = DATA / "claimed"


def _append(record: dict) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    fd = os.open(RECORDS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def _count(source: str, name: str, data: bytes) -> dict:
    record = {"source": source, "name": name, "bytes": len(data),
              "lines": data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0),
              "at": time.time()}
    _append(record)
    return record


def spool(request):
    """Take in the files a batch of changes names: claim each, count it, delete it.

    Jobs of two batches may run at once and name the same file (added, then modified), so a
    file is first claimed by an atomic rename; whoever loses the race skips it.
    """
    CLAIMED.mkdir(parents=True, exist_ok=True)
    taken = []
    for kind, path in request.meta.get("changes", []):
        source = Path(path)
        if kind == "deleted" or source.name.startswith(".") or not source.is_file():
            continue  # a removal, a hidden (partial) file, or a folder
        claimed = CLAIMED / f"{uuid.uuid4().hex}-{source.name}"
        try:
            os.rename(source, claimed)
        except FileNotFoundError:
            continue  # another job took it
        except OSError:
            claimed = source  # another file system: count it in place
        taken.append(_count("spool", source.name, claimed.read_bytes())["name"])
        claimed.unlink(missing_ok=True)
    if taken:
        print(f"spool: took in {len(taken)} file(s): {', '.join(sorted(taken)[:5])}"
              f"{' ...' if len(taken) > 5 else ''}")


def event(request):
    """Count the message in the request's body (if any); answer the latest summary as JSON."""
    if request.data:
        _count("event", request.event, request.data)
    try:
        summary = json.loads(SUMMARY.read_text())
    except FileNotFoundError:
        summary = None
    return json.dumps({"received": len(request.data), "summary": summary})


def aggregate(request):
    """Sum every record so far into var/aggregate.json (written whole, then renamed)."""
    totals = {"files": 0, "events": 0, "bytes": 0, "lines": 0}
    try:
        with open(RECORDS) as f:
            for line in f:
                record = json.loads(line)
                totals["files" if record["source"] == "spool" else "events"] += 1
                totals["bytes"] += record["bytes"]
                totals["lines"] += record["lines"]
    except FileNotFoundError:
        pass
    try:
        runs = json.loads(SUMMARY.read_text())["runs"] + 1
    except (FileNotFoundError, ValueError, KeyError):
        runs = 1
    summary = {**totals, "runs": runs, "scheduled": request.meta.get("scheduled"),
               "at": time.time()}
    DATA.mkdir(parents=True, exist_ok=True)
    partial = SUMMARY.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(partial, SUMMARY)
    print(f"aggregate #{runs}: {totals['files']} file(s), {totals['events']} event(s), "
          f"{totals['bytes']} bytes, {totals['lines']} lines")
