"""``drivestack launch FILE [ARG:=VALUE ...]``: start a ROS 2 graph from a launch file.

Registered on the app in ``drivestack/cli.py``. The launcher and its YAML subset live in
``ros_nodes/launcher.py``; this module only turns its errors into the CLI's one-line form.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer


def launch(
    file: Path = typer.Argument(..., metavar="FILE",
                                help="Launch file (ROS 2 YAML launch format), e.g. launch/drive.yaml."),
    launch_arguments: Optional[list[str]] = typer.Argument(
        None, metavar="ARG:=VALUE", help="Override the file's launch arguments, as with `ros2 launch`."),
) -> None:
    """Start every node of a launch file as its own process; Ctrl-C stops them all."""
    from drivestack.cli import _fail  # here, not at import: drivestack.cli imports this module
    from ros_nodes.launcher import LaunchError, load_launch, parse_launch_arguments, run_launch
    try:
        description = load_launch(file, parse_launch_arguments(launch_arguments or []))
    except LaunchError as exc:
        _fail(str(exc))
    # Which node started with which pid, and any escalation to SIGTERM/SIGKILL, as ros2 launch shows.
    logging.getLogger("ros_nodes.launcher").setLevel(logging.INFO)
    exit_code = run_launch(description)
    if exit_code:
        raise typer.Exit(exit_code)
