"""Process replay, after openpilot's: a reference bag recorded through the ROS 2 graph is
replayed through the agent node in lockstep, and its controls must equal the recorded
ones within explicit tolerances.

The reference (tests/data/replay/expert_short/) changes only on purpose:
``pytest tests/test_process_replay.py --update-refs`` records it again through
launch/drive.yaml; review the difference and commit it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


from ros_nodes import topics
from ros_nodes.bag.reader import iter_messages

DATA = Path(__file__).parent / "data" / "replay"
REFERENCE = DATA / "expert_short"
SCENARIO = DATA / "expert_short.yaml"
# The expert is deterministic and the values travel as float32 both times: exact.
TOLERANCE = {"throttle": 0.0, "steer": 0.0, "brake": 0.0}


def cli(*args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drivestack.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=Path(__file__).parent.parent)


def controls(bag: Path) -> dict[int, object]:
    return {m.stamp_ns: m.data for m in iter_messages(bag, [topics.CONTROL], deserialize=True)}


def record_reference(tmp_path: Path) -> None:
    out = tmp_path / "drive"
    done = cli("launch", "launch/drive.yaml", f"scenario:={SCENARIO}", f"out:={out}", "compression:=zstd")
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(REFERENCE, ignore_errors=True)
    shutil.copytree(out / "bag", REFERENCE)


def test_agent_replays_its_recorded_controls(tmp_path, request):
    if request.config.getoption("--update-refs"):
        record_reference(tmp_path)
    assert REFERENCE.exists(), "no reference bag: run pytest tests/test_process_replay.py --update-refs"
    replayed = tmp_path / "replayed"
    done = cli("replay", str(REFERENCE), "--rate", "max", "--nodes", "agent", "--record", str(replayed))
    assert done.returncode == 0, done.stdout + done.stderr
    expected, got = controls(REFERENCE), controls(replayed)
    assert len(expected) > 100
    missing = sorted(set(expected) - set(got))
    assert not missing, f"no control replayed for t = {[s * 1e-9 for s in missing[:5]]} s"
    for stamp, reference in expected.items():
        for field, tolerance in TOLERANCE.items():
            assert abs(getattr(got[stamp], field) - getattr(reference, field)) <= tolerance, \
                f"{field} at t={stamp * 1e-9:.2f} s: replayed {getattr(got[stamp], field)}, " \
                f"reference {getattr(reference, field)}"
