"""The launcher: the YAML subset, the command lines it builds, and real rclpy graphs it supervises.

Graph tests start the small nodes of `tests/ros_test_nodes` (`exec: module:ros_test_nodes.X`)
with short `sigterm_timeout`/`sigkill_timeout` so that escalation takes well under a second.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ros_nodes.launcher import (LaunchError, NodeSpec, Parameter, ParameterFile, load_launch, node_command,
                                parse_launch_arguments, ros_value_text, run_launch)

TESTS = Path(__file__).parent
STARTED = re.compile(r"started '([^']+)' \(pid (\d+)\)")


@pytest.fixture
def test_nodes(monkeypatch):
    """Make `ros_test_nodes` importable here (the launcher checks modules) and in the children."""
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


def write(tmp_path: Path, text: str, name: str = "graph.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def started_pids(text: str) -> dict[str, int]:
    return {label: int(pid) for label, pid in STARTED.findall(text)}


# --- parsing -------------------------------------------------------------------------------------------------


GRAPH = """\
    launch:
    - arg: {name: scenario, default: default}
    - arg: {name: out, default: out/ros, description: where bags go}
    - let: {name: topic, value: /carla/$(var scenario)/control}
    - node:
        pkg: drivestack
        exec: module:ros_test_nodes.talker
        name: sim_bridge
        namespace: carla
        output: screen
        on_exit: shutdown
        sigterm_timeout: 2
        param:
        - {name: scenario, value: $(var scenario)}
        - {name: use_sim_time, value: true}
        - {name: dt_s, value: 0.05}
        - {name: steps, value: "$(var out)"}
        remap:
        - {from: /in, to: $(var topic)}
    - node:
        exec: module:ros_test_nodes.listener
        name: recorder
        required: true
        args: --fast
        ros_args: --log-level warn
    - node: {exec: module:ros_test_nodes.listener, name: skipped, if: "false"}
    """


def test_args_defaults_overrides_let_and_substitution(tmp_path, test_nodes):
    description = load_launch(write(tmp_path, GRAPH), {"scenario": "town"})
    assert description.arguments == {"scenario": "town", "out": "out/ros"}
    bridge, recorder = description.nodes  # `if: false` dropped the third
    assert bridge.module == "ros_test_nodes.talker" and bridge.label == "carla/sim_bridge"
    assert bridge.namespace == "/carla" and bridge.output == "screen" and bridge.required
    assert bridge.sigterm_timeout_s == 2.0 and bridge.sigkill_timeout_s is None
    assert bridge.parameters == (Parameter("scenario", "town"), Parameter("use_sim_time", True),
                                 Parameter("dt_s", 0.05), Parameter("steps", "out/ros"))
    assert bridge.remappings == (("/in", "/carla/town/control"),)
    assert recorder.required and recorder.output == "log"  # `required: true` is an alias of on_exit: shutdown
    assert recorder.arguments == ("--fast",) and recorder.ros_arguments == ("--log-level", "warn")


def test_parameter_values_keep_their_types(tmp_path, test_nodes):
    (node,) = load_launch(write(tmp_path, """\
        launch:
        - arg: {name: n, default: "7"}
        - node:
            exec: module:ros_test_nodes.param_dump
            param:
            - {name: from_var, value: $(var n)}          # strings are read as YAML, like launch_ros
            - {name: text, value: $(var n), type: str}
            - {name: ratio, value: 2, type: float}
            - {name: names, value: [a, $(var n)], type: list_of_str}
            - {name: gains, value: "[1, 2]", type: list_of_float}
            - {name: flags, value: [true, false]}
            - {name: empty, value: ""}
            - name: limits
              param:
              - {name: speed_mps, value: 13.9}
        """), {}).nodes
    assert dict((p.name, p.value) for p in node.parameters) == {
        "from_var": 7, "text": "7", "ratio": 2.0, "names": ("a", "7"), "gains": (1.0, 2.0),
        "flags": (True, False), "empty": "", "limits.speed_mps": 13.9}
    assert [type(p.value) for p in node.parameters][:3] == [int, str, float]


def test_params_file_and_dirname(tmp_path, test_nodes):
    (tmp_path / "params.yaml").write_text("/**:\n  ros__parameters:\n    a: 1\n")
    (node,) = load_launch(write(tmp_path, """\
        launch:
        - node:
            exec: module:ros_test_nodes.talker
            param: [{from: $(dirname)/params.yaml}]
        """)).nodes
    assert node.parameters == (ParameterFile((tmp_path / "params.yaml").resolve()),)


@pytest.mark.parametrize("body, message", [
    ("- node: {exec: module:ros_test_nodes.talker, colour: red}", "unknown key 'colour'"),
    ("- node: {exec: module:ros_test_nodes.talker, param: [{name: a, value: 1, unit: m}]}", "unknown key 'unit'"),
    ("- group: {}", "unsupported action 'group'"),
    ("- arg: {name: scenario}", "launch argument 'scenario' has no default: give scenario:=VALUE"),
    ("- node: {exec: no_such}", "unknown exec 'no_such'"),
    ("- node: {exec: 'module:ros_test_nodes.nope'}", "no Python module 'ros_test_nodes.nope'"),
    ("- node: {pkg: demo_nodes_cpp, exec: talker}", "unknown pkg 'demo_nodes_cpp'"),
    ("- node: {exec: module:ros_test_nodes.talker, name: $(var x)}", "$(var x) is not defined"),
    ("- node: {exec: module:ros_test_nodes.talker, name: $(find-pkg-share x)}", "unsupported substitution"),
    ("- node: {exec: module:ros_test_nodes.talker, name: bad-name}", "bad node name 'bad-name'"),
    ("- node: {exec: module:ros_test_nodes.talker, on_exit: restart}", "on_exit supports only 'shutdown'"),
    ("- node: {exec: module:ros_test_nodes.talker, output: file}", "expected one of log, screen, both"),
    ("- node: {exec: module:ros_test_nodes.talker, param: [{name: a, value: [1, 2.5]}]}", "all of one type"),
    ("- node: {exec: module:ros_test_nodes.talker, param: [{name: a, value: []}]}", "at least one item"),
    ("- node: {exec: module:ros_test_nodes.talker, param: [{name: a, value: 'x: 1'}]}", "add type: str"),
    ("- node: {exec: module:ros_test_nodes.talker, param: [{name: a, value: x, type: int}]}", "not of type int"),
    ("- node: {exec: module:ros_test_nodes.talker, param: [{from: missing.yaml}]}", "does not exist"),
    ("- node: {exec: module:ros_test_nodes.talker, sigterm_timeout: -1}", "sigterm_timeout must be"),
    ("- node: {exec: module:ros_test_nodes.talker, name: a}\n- node: {exec: module:ros_test_nodes.talker, name: a}",
     "two nodes named 'a'"),
])
def test_mistakes_are_one_line_errors(tmp_path, test_nodes, body, message):
    with pytest.raises(LaunchError) as error:
        load_launch(write(tmp_path, "launch:\n" + body + "\n"))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_file_and_argument_errors(tmp_path, test_nodes):
    with pytest.raises(LaunchError, match="cannot read .*missing.yaml"):
        load_launch(tmp_path / "missing.yaml")
    with pytest.raises(LaunchError, match="not valid YAML"):
        load_launch(write(tmp_path, "launch: [node: {exec: x}\n"))
    with pytest.raises(LaunchError, match="top-level 'launch:' list"):
        load_launch(write(tmp_path, "nodes: []\n"))
    with pytest.raises(LaunchError, match="unknown launch argument 'scenari' \\(declared: scenario, out\\)"):
        load_launch(write(tmp_path, GRAPH), {"scenari": "x"})
    assert parse_launch_arguments(["a:=1", "b:=x:=y", "c:="]) == {"a": "1", "b": "x:=y", "c": ""}
    with pytest.raises(LaunchError, match="NAME:=VALUE"):
        parse_launch_arguments(["scenario=town"])


@pytest.mark.parametrize("launch_file", ["drive.yaml", "collect.yaml"])
def test_perception_args_start_the_nodes_in_the_loop_and_record_their_topics(launch_file):
    """perception:=true / lidar_obstacles:=true start the nodes; the bridge waits for them
    (at start-up and per frame) and the recorder records their outputs."""
    path = TESTS.parent / "launch" / launch_file

    def by_name(overrides: dict[str, str]) -> dict[str, dict[str, object]]:
        return {n.name: {p.name: p.value for p in n.parameters} for n in load_launch(path, overrides).nodes}

    plain = by_name({})
    assert "perception" not in plain and "lidar_obstacles" not in plain
    assert plain["sim_bridge"]["perception"] is False and plain["sim_bridge"]["lidar_obstacles"] is False
    assert plain["recorder"]["record_perception"] is False and plain["recorder"]["record_obstacles"] is False
    nodes = by_name({"perception": "true", "perception_weights": "w/p.pt", "lidar_obstacles": "true",
                     "sensors": "full", "scenario": "town_loop"})
    assert nodes["sim_bridge"]["perception"] is True and nodes["sim_bridge"]["lidar_obstacles"] is True
    assert nodes["recorder"]["record_perception"] is True and nodes["recorder"]["record_obstacles"] is True
    assert nodes["perception"]["weights"] == "w/p.pt"
    for name in ("perception", "lidar_obstacles"):  # the same scenario and sensors as the bridge
        assert {k: nodes[name][k] for k in ("scenario", "sensors", "use_sim_time")} == {
            "scenario": "town_loop", "sensors": "full", "use_sim_time": True}
    only_lidar = by_name({"lidar_obstacles": "true"})
    assert "perception" not in only_lidar and only_lidar["recorder"]["record_perception"] is False


# --- command lines -------------------------------------------------------------------------------------------


def test_node_command_is_a_ros_args_command_line():
    spec = NodeSpec(exec="sim_bridge", module="ros_nodes.sim_bridge_node", name="sim_bridge", namespace="/carla",
                    parameters=(Parameter("scenario", "default"), Parameter("use_sim_time", True),
                                Parameter("steps", 100), Parameter("dt_s", 2.0), Parameter("id", "123"),
                                Parameter("names", ("a", "it's")), ParameterFile(Path("/p.yaml"))),
                    remappings=(("/in", "/out"),), arguments=("--fast",), ros_arguments=("--log-level", "warn"))
    assert node_command(spec) == [
        sys.executable, "-m", "ros_nodes.sim_bridge_node", "--fast", "--ros-args",
        "-r", "__node:=sim_bridge", "-r", "__ns:=/carla",
        "-p", "scenario:='default'", "-p", "use_sim_time:=true", "-p", "steps:=100", "-p", "dt_s:=2.0",
        "-p", "id:='123'", "-p", "names:=['a', 'it''s']", "--params-file", "/p.yaml",
        "-r", "/in:=/out", "--log-level", "warn"]
    assert node_command(NodeSpec(exec="x", module="m")) == [sys.executable, "-m", "m", "--ros-args"]


def test_float_text_always_reads_back_as_a_double():
    assert [ros_value_text(v) for v in (1e20, -3.0, float("inf"), float("-inf"), float("nan"), (1.5, 2.0))] == [
        "1e+20", "-3.0", ".inf", "-.inf", ".nan", "[1.5, 2.0]"]


# --- supervision ---------------------------------------------------------------------------------------------


def run(description, **kwargs) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_launch(description, stdout=out, stderr=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


def test_required_listener_finishing_ends_the_graph_cleanly(tmp_path, test_nodes, caplog):
    caplog.set_level(logging.INFO, logger="ros_nodes.launcher")
    path = write(tmp_path, """\
        launch:
        - arg: {name: greeting, default: hello}
        - let: {name: topic, value: /launcher_test/chat}
        - node:
            exec: module:ros_test_nodes.talker
            name: talker
            param: [{name: message, value: $(var greeting)}]
            remap: [{from: chatter, to: $(var topic)}]
        - node:
            exec: module:ros_test_nodes.listener
            name: listener
            namespace: demo
            on_exit: shutdown
            param: [{name: count, value: 3}]
            remap: [{from: heard, to: $(var topic)}]
        - node:
            exec: module:ros_test_nodes.param_dump
            name: dump
            output: screen
            param:
            - {name: flag, value: true}
            - {name: steps, value: 3}
            - {name: dt_s, value: 2.0}
            - {name: id, value: "123", type: str}
            - {name: names, value: [a, b]}
            - {name: gains, value: [1.0, 2.5]}
        """)
    code, out, err = run(load_launch(path, {"greeting": "bonjour"}))
    assert code == 0, err
    assert re.search(r"^\[demo/listener\] \[INFO\] .*heard on /launcher_test/chat: bonjour \d+$", err, re.M), err
    (dump_line,) = [line for line in out.splitlines() if line.startswith("[dump] ")]
    dumped = json.loads(dump_line.removeprefix("[dump] "))
    assert {k: dumped[k] for k in ("flag", "steps", "dt_s", "id", "names", "gains")} == {
        "flag": ["BOOL", True], "steps": ["INTEGER", 3], "dt_s": ["DOUBLE", 2.0], "id": ["STRING", "123"],
        "names": ["STRING_ARRAY", ["a", "b"]], "gains": ["DOUBLE_ARRAY", [1.0, 2.5]]}
    pids = started_pids(caplog.text)
    assert set(pids) == {"talker", "demo/listener", "dump"}
    assert not any(alive(pid) for pid in pids.values())
    assert "SIGTERM" not in caplog.text  # the talker stopped on SIGINT


def test_a_crashing_node_brings_the_graph_down_and_is_named(tmp_path, test_nodes, caplog):
    caplog.set_level(logging.INFO, logger="ros_nodes.launcher")
    path = write(tmp_path, """\
        launch:
        - node: {exec: module:ros_test_nodes.talker, name: talker}
        - node:
            exec: module:ros_test_nodes.crasher
            name: crasher
            param: [{name: delay_s, value: 0.5}, {name: exit_code, value: 3}]
        """)
    code, _, err = run(load_launch(path))
    assert code != 0
    assert "error: node 'crasher' exited with code 3" in err
    assert "[crasher] [ERROR]" in err  # its own log line came through, named
    pids = started_pids(caplog.text)
    assert set(pids) == {"talker", "crasher"} and not any(alive(pid) for pid in pids.values())


def test_nodes_ignoring_sigint_are_escalated_to_sigterm_then_sigkill(tmp_path, test_nodes, caplog):
    caplog.set_level(logging.INFO, logger="ros_nodes.launcher")
    path = write(tmp_path, """\
        launch:
        - node: {exec: module:ros_test_nodes.stubborn, name: deaf_to_int, args: SIGINT}
        - node: {exec: module:ros_test_nodes.stubborn, name: deaf_to_both, args: SIGINT SIGTERM,
                 sigkill_timeout: 0.2}
        - node:
            exec: module:ros_test_nodes.crasher
            name: episode
            on_exit: shutdown
            param: [{name: delay_s, value: 0.8}, {name: exit_code, value: 0}]
        """)
    start = time.monotonic()
    code, _, err = run(load_launch(path), sigterm_timeout_s=0.3, sigkill_timeout_s=60.0)
    assert code == 0, err  # a required node finishing with 0 is a normal end
    assert time.monotonic() - start < 30.0  # deaf_to_both's own sigkill_timeout (0.2 s) beat the default
    assert "'deaf_to_int' still running after SIGINT: sending SIGTERM" in caplog.text
    assert "'deaf_to_int' still running after SIGTERM" not in caplog.text
    assert "'deaf_to_both' still running after SIGTERM: sending SIGKILL" in caplog.text
    assert "'deaf_to_both' exited with code -9 (killed by SIGKILL)" in caplog.text
    assert not any(alive(pid) for pid in started_pids(caplog.text).values())


def test_sigint_to_the_launcher_command_stops_every_node(tmp_path, test_nodes):
    path = write(tmp_path, """\
        launch:
        - node: {exec: module:ros_test_nodes.talker, name: talker}
        - node: {exec: module:ros_test_nodes.listener, name: listener, param: [{name: count, value: 100000}],
                 remap: [{from: heard, to: chatter}]}
        """)
    launcher = subprocess.Popen([sys.executable, "-m", "drivestack.cli", "launch", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in launcher.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 20.0
        while not any("[listener]" in line and "heard" in line for line in seen):  # the graph is up
            assert time.monotonic() < deadline, "".join(seen)
            try:
                seen.append(lines.get(timeout=0.2))
            except queue.Empty:
                assert launcher.poll() is None, "".join(seen)
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=10.0) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    time.sleep(0.1)  # the reader thread drains the rest
    while not lines.empty():
        seen.append(lines.get())
    output = "".join(seen)
    pids = started_pids(output)
    assert set(pids) == {"talker", "listener"}, output
    assert not any(alive(pid) for pid in pids.values())
    assert "SIGINT: shutting down" in output and "SIGTERM" not in output


def test_cli_reports_launch_file_mistakes_in_one_line(tmp_path, test_nodes):
    path = write(tmp_path, "launch:\n- arg: {name: scenario}\n")
    proc = subprocess.run([sys.executable, "-m", "drivestack.cli", "launch", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}: launch argument 'scenario' has no default: give scenario:=VALUE"
    proc = subprocess.run([sys.executable, "-m", "drivestack.cli", "launch", str(path), "scenario"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: launch arguments are NAME:=VALUE")
