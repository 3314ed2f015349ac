"""``tlrec events ...``: health and maintenance of a server's event log folder.

A typer sub-app; ``services/cli.py`` mounts it with ``app.add_typer(events_app, name="events")``.

* ``tlrec events verify DIR``: read-only. Prints a short health table (records, sequence
  range, corrupt regions with their offsets, torn tail bytes, duplicated seqs, snapshot and
  archive state, and the exposure log beside it when there is one). Exit code 0 when
  healthy (a torn tail alone is what a crash mid-write leaves and counts as healthy), 1 when
  damage is found (records lost, seqs duplicated, a damaged snapshot or archive, unreadable
  exposure lines), 2 on bad input (no such folder).
* ``tlrec events compact DIR``: seals the live segment, archives every sealed segment as
  Parquet and writes a new snapshot (what a running server does by itself past 32 MB).
  Refused (exit 2) while a server has the log open.

``--json`` prints exactly one JSON object on stdout (logs go to stderr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from tlrec.services.errors import friendly_errors
from tlrec.serving.settings import EXPOSURES_FILE

events_app = typer.Typer(
    name="events",
    help="Event log: verify its health (read-only), compact it into snapshot + Parquet archive.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DirArg = Annotated[Path, typer.Argument(help="Event log folder (TLREC_EVENTS_DIR).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def _folder(directory: Path) -> Path:
    from tlrec.errors import UsageError

    if not directory.is_dir():
        raise UsageError(f"{directory}: not a folder (expected an event log folder with events.log)")
    return directory


def _console() -> Any:
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200, soft_wrap=False)


def _seq_range(first: int | None, last: int | None) -> str:
    return "-" if first is None else f"{first} .. {last}"


def _print_health(directory: Path, doc: dict[str, Any]) -> None:
    from rich.table import Table

    log = doc["event_log"]
    console = _console()
    table = Table(title=f"event log {directory}: {'healthy' if doc['healthy'] else 'DAMAGED'}")
    table.add_column("check")
    table.add_column("value", justify="right")
    rows = [
        ("records (segments after the snapshot)", f"{log['records']:,} ({log['events']:,} events)"),
        ("segments", f"{log['segments']} ({log['segment_bytes']:,} bytes)"),
        ("sequence range", _seq_range(log["first_seq"], log["last_seq"])),
        ("next sequence number", str(log["next_seq"])),
        ("corrupt records (lost)", str(log["corrupt_records"])),
        ("corrupt regions", str(sum(r["kind"] == "corrupt" for r in log["regions"]))),
        ("torn tail bytes (cut on open)", str(log["torn_tail_bytes"])),
        ("duplicate seqs (skipped)", str(log["duplicates"])),
        ("snapshot", f"{log['snapshot']} (covers seq < {log['snapshot_covered_seq']}, "
                     f"{log['snapshot_keys']:,} keys, {log['snapshot_users']:,} users)"
         if log["snapshot"] == "loaded" else log["snapshot"]),
        ("archive", f"{log['archives']} file(s), {log['archived_events']:,} events"),
    ]
    exposures = doc.get("exposures")
    if exposures is not None:
        rows += [("exposure log", f"{exposures['exposures']:,} exposures, {len(exposures['unreadable'])} unreadable "
                                  f"range(s), {exposures['duplicates']} duplicate(s), torn tail "
                                  f"{exposures['torn_tail_bytes']} bytes")]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    regions = log["regions"] + [{"file": EXPOSURES_FILE, "offset": r["offset"], "length": r["length"],
                                 "kind": "corrupt", "records": "?", "action": "skipped"}
                                for r in (exposures or {}).get("unreadable", [])]
    if regions:
        damage = Table(title="damaged regions")
        for col in ("file", "offset", "bytes", "kind", "records lost", "on open"):
            damage.add_column(col, justify="right" if col in ("offset", "bytes", "records lost") else "left")
        for r in regions:
            damage.add_row(r["file"], str(r["offset"]), str(r["length"]), r["kind"], str(r["records"]), r["action"])
        console.print(damage)


@events_app.command()
@friendly_errors
def verify(directory: DirArg, as_json: JsonOpt = False) -> None:
    """Report the event log's health without changing anything; exit 1 when damage is found."""
    from tlrec.serving.event_log import check_log
    from tlrec.serving.exposure_log import ExposureLog

    directory = _folder(directory)
    report = check_log(directory)
    exposures_path = directory / EXPOSURES_FILE
    exposures = ExposureLog.check(exposures_path) if exposures_path.exists() else None
    healthy = report.healthy and (exposures is None or exposures["healthy"])
    doc = {"directory": str(directory), "healthy": healthy, "event_log": report.as_dict(), "exposures": exposures}
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        _print_health(directory, doc)
    if not healthy:
        raise typer.Exit(1)


@events_app.command()
@friendly_errors
def compact(
    directory: DirArg,
    as_json: JsonOpt = False,
    fresh_per_user: Annotated[int | None, typer.Option(
        help="Fresh events kept per user in the snapshot (default TLREC_FRESH_PER_USER or 200).")] = None,
    fresh_max_users: Annotated[int | None, typer.Option(
        help="Users kept in the snapshot (default TLREC_FRESH_MAX_USERS or 100,000).")] = None,
) -> None:
    """Archive every finished segment as Parquet and write a new snapshot (no server may have the log open)."""
    import os

    from tlrec.serving.event_log import EventLog
    from tlrec.serving.event_snapshot import FreshEvents

    directory = _folder(directory)
    per_user = fresh_per_user or int(os.environ.get("TLREC_FRESH_PER_USER", 200))
    max_users = fresh_max_users or int(os.environ.get("TLREC_FRESH_MAX_USERS", 100_000))
    log = EventLog(directory, fresh=FreshEvents(per_user, max_users), auto_compact=False)
    try:
        log.open()  # EventLogError (exit 2) while a server has the folder open
        result = log.compact()
    finally:
        log.close()
    doc: dict[str, Any] = {"directory": str(directory), "compacted": result is not None}
    if result is not None:
        doc.update({"segments": result.segments, "records": result.records, "events": result.events,
                    "archives": list(result.archives), "covered_seq": result.covered_seq,
                    "seconds": round(result.seconds, 3)})
    if as_json:
        typer.echo(json.dumps(doc))
    elif result is None:
        typer.echo(f"{directory}: nothing to compact")
    else:
        typer.echo(f"{directory}: {result.records:,} batches ({result.events:,} events) from {result.segments} "
                   f"segment(s) archived in {', '.join(result.archives) or 'no file'}; snapshot covers seq < "
                   f"{result.covered_seq}")
