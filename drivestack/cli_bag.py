"""`drivestack bag ...`: look into rosbag2 bags and repair ones whose recorder died."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

bag_app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="Inspect rosbag2 bags (MCAP or sqlite3) and recover interrupted recordings.")


def _fail(message: str) -> None:
    from drivestack.cli import _fail as fail  # the CLI's one-line `error: ...`, exit code 2
    fail(message)


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 160)


@bag_app.command()
def info(bag: Path = typer.Argument(..., help="Bag directory, or an .mcap / .db3 file."),
         as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Topics, message counts, rates, duration and custom metadata of a bag."""
    from ros_nodes.bag.errors import BagError
    from ros_nodes.bag.info import bag_info, info_renderables
    try:
        result = bag_info(bag)
    except BagError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    _console().print(*info_renderables(result))


@bag_app.command()
def recover(bag: Path = typer.Argument(..., help="Bag directory (or .mcap file) whose recorder was killed.")) -> None:
    """Make an interrupted MCAP recording readable again: keep every complete message,
    rebuild the index and metadata.yaml; cut-off bytes are kept in a side file."""
    from ros_nodes.bag.errors import BagError
    from ros_nodes.bag.recover import recover_bag
    try:
        report = recover_bag(bag)
    except BagError as exc:
        _fail(str(exc))
    console = _console()
    if report.was_complete:
        console.print(f"{bag}: complete, nothing to recover ({report.message_count} messages)")
        return
    console.print(f"recovered {bag}: kept {report.message_count} messages, dropped {report.bytes_dropped} "
                  "unreadable bytes")
    for topic, count in sorted(report.messages_per_topic.items()):
        console.print(f"  {topic}: {count}", highlight=False)
    for backup in report.backups:
        console.print(f"original bytes kept in {backup}", highlight=False)
    for problem in report.problems:
        console.print(f"[yellow]problem:[/] {problem}", highlight=False)
