"""``drivestack replay BAG``: play a bag through nodes (launch/replay.yaml).

Registered on the app in ``drivestack/cli.py``. With ``--nodes agent`` the agent runs
on the log in lockstep (each frame waits for its control) and its recorded outputs are
not played; ``--record OUT`` writes the replayed topics and the nodes' outputs to a new
bag, for comparison with the original.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

def _node_outputs() -> dict[str, tuple[str, ...]]:
    """What each node publishes (not played from the bag when the node runs live); the
    first is the one a lockstep replay waits for."""
    from ros_nodes import topics
    return {"agent": (topics.CONTROL,),
            "perception": tuple(t.name for t in topics.camera_perception_topics("front")),
            "lidar_obstacles": (topics.OBSTACLES,)}


def _rate(text: str) -> float:
    if text == "max":
        return 0.0
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not rate > 0.0:
        raise typer.BadParameter(f"{text!r}: give a positive factor (1.0 = real time) or 'max'")
    return rate


def _list(values) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]" if values else "['']"


def replay(
    bag: Path = typer.Argument(..., help="A rosbag2 bag: directory, .mcap or .db3 (MCAP or sqlite3)."),
    rate: str = typer.Option("1.0", help="Playback speed: 1.0 = real time, 2.0 = twice, 'max' = as fast as the "
                                         "nodes answer."),
    nodes: Optional[list[str]] = typer.Option(None, "--nodes", help="Nodes to run on the log (repeat for several): "
                                                                     "agent, perception, lidar_obstacles."),
    perception_weights: Optional[Path] = typer.Option(None, help="Weights of the perception node (default: the "
                                                                 "shipped models/weights/perception_multitask.pt)."),
    sensors: str = typer.Option("full", help="Sensor suite the bag was recorded with (camera and LiDAR mounts)."),
    record: Optional[Path] = typer.Option(None, help="Record what is played and the nodes' outputs to this new bag."),
) -> None:
    """Publish a recorded bag with /clock so nodes run on it exactly as live."""
    from drivestack.cli import _fail  # here, not at import: drivestack.cli imports this module
    from drivestack.cli import LAUNCH_DIR
    from ros_nodes.bag.errors import BagError
    from ros_nodes.bag.reader import BagReader
    from ros_nodes.launcher import LaunchError, load_launch, run_launch
    speed = _rate(rate)
    node_outputs = _node_outputs()
    chosen = list(dict.fromkeys(nodes or []))
    unknown = [n for n in chosen if n not in node_outputs]
    if unknown:
        _fail(f"unknown node(s) {', '.join(unknown)} (known: {', '.join(node_outputs)})")
    try:
        with BagReader(bag) as reader:
            bag_topics = set(reader.topics)
    except BagError as exc:
        _fail(str(exc))
    if record is not None and record.exists():
        _fail(f"{record} exists: bags are never overwritten")
    outputs = [t for n in chosen for t in node_outputs[n]]
    played = sorted(bag_topics - set(outputs))
    arguments = {"bag": str(bag), "rate": str(speed), "agent": str("agent" in chosen).lower(),
                 "lockstep_topic": outputs[0] if outputs and speed == 0.0 else "",
                 "exclude_topics": _list(outputs), "record": str(record is not None).lower(),
                 "record_out": str(record or ""), "record_topics": _list(sorted({*played, *outputs, "/clock"})),
                 "wait_for_nodes": _list([*chosen, *(["recorder"] if record is not None else [])]),
                 "perception": str("perception" in chosen).lower(),
                 "lidar_obstacles": str("lidar_obstacles" in chosen).lower(),
                 "perception_weights": str(perception_weights or ""), "sensors": sensors}
    try:
        description = load_launch(LAUNCH_DIR / "replay.yaml", arguments)
    except LaunchError as exc:
        _fail(str(exc))
    logging.getLogger("ros_nodes.launcher").setLevel(logging.INFO)
    exit_code = run_launch(description)
    if exit_code:
        raise typer.Exit(exit_code)
