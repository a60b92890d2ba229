"""The ``drivestack`` command line: a thin layer over the library.

User mistakes (unknown scenario, malformed map, unreachable goal, bad numbers) end with
one line ``error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="drivestack: drive, record, replay and train on the built-in simulator or CARLA.")
USER_ERROR = 2
LAUNCH_DIR = Path(__file__).resolve().parent.parent / "launch"


class AgentName(str, Enum):
    expert = "expert"
    modular = "modular"
    autopilot = "autopilot"


class ModeName(str, Enum):
    """Who drives the modular agent (planning.inputs.DriveMode)."""

    modular = "modular"
    policy = "policy"
    policy_safety = "policy+safety"


class RouteKind(str, Enum):
    random = "random"


class SimName(str, Enum):
    builtin = "builtin"
    carla = "carla"


def _user_errors() -> tuple[type[Exception], ...]:
    from drivestack.config import ConfigError
    from sim.road_map import MapError
    from sim.route_planner import NoRouteError
    from sim.scenario import ScenarioError
    from sim.video import VideoError
    from models.weights import WeightsError
    from ros_nodes.bag.errors import BagError
    from sim.carla_backend.errors import CarlaError
    return BagError, CarlaError, ConfigError, MapError, NoRouteError, ScenarioError, VideoError, WeightsError


def _fail(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(USER_ERROR)




def _scenarios(scenario: Optional[str], suite: Optional[str], town: Optional[str], route: Optional[RouteKind],
               route_length_m: float, npc_vehicles: Optional[int], pedestrians: Optional[int],
               weather: Optional[str], sensors: Optional[str]):
    from sim.scenario import WEATHER_PRESETS, Scenario, benchmark_suite, load_scenario
    from sim.sensors.suite import SensorConfigError, load_suite
    if sum(x is not None for x in (scenario, suite, town)) > 1:
        _fail("give one of --scenario, --suite or --town")
    if town is None and route is not None:
        _fail("--route random needs --town")
    if suite is not None:
        if suite != "benchmark":
            _fail(f"unknown suite {suite!r} (known: benchmark)")
        chosen = benchmark_suite()
    elif town is not None:
        if route is None:
            route = RouteKind.random
        name = Path(town).stem if town.endswith(".xodr") else town
        chosen = [Scenario(name=f"{name}_random_{route_length_m:.0f}m", town=town, route_length_m=route_length_m)]
    else:
        chosen = [load_scenario(scenario or "default")]
    overrides = {k: v for k, v in (("npc_vehicles", npc_vehicles), ("pedestrians", pedestrians),
                                   ("weather", weather)) if v is not None}
    if weather is not None and weather not in WEATHER_PRESETS:
        _fail(f"unknown weather {weather!r} (one of {', '.join(WEATHER_PRESETS)})")
    if sensors is not None:
        try:
            overrides["sensors"] = load_suite(sensors)
        except SensorConfigError as exc:
            _fail(str(exc))
    return [replace(s, **overrides) for s in chosen]


def _with_video_camera(scenario):
    """The scenario, with a front RGB camera and labels for the video's overlays."""
    from sim.sensors.suite import load_suite
    camera = load_suite("front_rgb").cameras[0]
    sensors = replace(scenario.sensors.with_camera(camera), ground_truth=True)
    return replace(scenario, sensors=sensors)


def _video_path(video: Path, scenario, single: bool) -> Path:
    """The file for one episode: the given name, or with scenario and seed when several."""
    return video if single else video.with_name(f"{video.stem}_{scenario.name}_seed{scenario.seed}{video.suffix}")


@app.command()
def drive(
    scenario: Optional[str] = typer.Option(None, help="Scenario name (see `drivestack routes`) or YAML file."),
    suite: Optional[str] = typer.Option(None, help="Run a whole suite: 'benchmark'."),
    town: Optional[str] = typer.Option(None, help="Town name or path to any .xodr file (with --route random)."),
    route: Optional[RouteKind] = typer.Option(None, help="'random': a seeded random feasible route on --town."),
    route_length_m: float = typer.Option(500.0, min=20.0, help="Length of a random route in metres."),
    agent: AgentName = typer.Option(AgentName.expert, help="Who drives: the privileged expert, the modular agent "
                                                           "(perception + planner, from sensors only), or with "
                                                           "--sim carla CARLA's Traffic Manager (autopilot)."),
    mode: Optional[ModeName] = typer.Option(None, help="With --agent modular: the modular planner drives "
                                                       "(default), the learned policy, or the policy with the "
                                                       "safety supervisor."),
    episodes: int = typer.Option(1, min=1, help="Episodes per scenario; episode k uses seed S + k."),
    seed: Optional[int] = typer.Option(None, min=0, help="Seed (default: the scenario's own)."),
    npc_vehicles: Optional[int] = typer.Option(None, min=0, help="Override the scenario's NPC vehicle count."),
    pedestrians: Optional[int] = typer.Option(None, min=0, help="Override the scenario's pedestrian count."),
    out: Path = typer.Option(Path("out/drive"), help="Directory for results.json and bird's-eye PNGs."),
    png: bool = typer.Option(True, help="Write a bird's-eye PNG per episode."),
    as_json: bool = typer.Option(False, "--json", help="Print the episode results as JSON on stdout."),
    weather: Optional[str] = typer.Option(None, help="Override the scenario's weather: clear_noon, overcast, "
                                                     "sunset, night, rain, fog."),
    sensors: Optional[str] = typer.Option(None, help="Override the scenario's sensors with a shipped suite "
                                                     "(sim/config/sensors): full, front_rgb."),
    video: Optional[Path] = typer.Option(None, help="Write an MP4 of the front camera with overlays beside a "
                                                    "bird's-eye view (one file per episode)."),
    record: Optional[Path] = typer.Option(None, help="Record each episode as a rosbag2 (MCAP) bag, the topics the "
                                                     "ROS 2 graph records (a new path; one bag per episode)."),
    ros: bool = typer.Option(False, "--ros", help="Drive through the ROS 2 graph (launch/drive.yaml: bridge, "
                                                  "agent and recorder as processes; with --agent modular the "
                                                  "mission, perception and planner nodes, with the policy "
                                                  "modes the policy node); the bag goes to OUT/bag."),
    foxglove: bool = typer.Option(False, "--foxglove", help="With --ros: serve camera, LiDAR and trajectory on a local "
                                                            "Foxglove WebSocket (ws://127.0.0.1:8765); open it in "
                                                            "Foxglove (Open connection -> Foxglove WebSocket)."),
    perception: bool = typer.Option(False, "--perception", help="With --ros: run the camera perception node on the "
                                                                "front camera (detections, semantic mask, lanes, "
                                                                "overlay), recorded and shown in the live view."),
    perception_weights: Optional[Path] = typer.Option(None, help="The camera net's weights for --perception or "
                                                                 "--agent modular (default: the shipped "
                                                                 "models/weights/perception_multitask.pt)."),
    lidar_obstacles: bool = typer.Option(False, "--lidar-obstacles", help="With --ros: run the LiDAR obstacle node "
                                                                          "(needs a LiDAR, e.g. --sensors full), "
                                                                          "recorded and shown in the live view."),
    policy_weights: Optional[Path] = typer.Option(None, help="The driving policy's weights for --mode policy or "
                                                             "policy+safety (default: the shipped "
                                                             "models/weights/policy_cilrs.pt)."),
    sim_name: SimName = typer.Option(SimName.builtin, "--sim", help="The simulator: the built-in one, or a CARLA "
                                                                    "0.9.15/0.9.16 server at --host/--port."),
    host: str = typer.Option("127.0.0.1", help="--sim carla: the CARLA server's host."),
    port: int = typer.Option(2000, min=1, max=65535, help="--sim carla: the CARLA server's RPC port."),
    tm_port: int = typer.Option(8000, min=1, max=65535, help="--sim carla: the Traffic Manager's port."),
    carla_timeout_s: float = typer.Option(10.0, min=0.1, help="--sim carla: seconds to wait for the server per "
                                                              "call and for each sensor per tick."),
) -> None:
    """Drive closed-loop episodes on the built-in simulator or a CARLA server and score them (CARLA
    Leaderboard 2.0 rules)."""
    carla = CarlaArgs(sim_name.value, host, port, tm_port, carla_timeout_s)
    if ros and record is not None:
        _fail("with --ros the bag is always recorded, to OUT/bag; --record is for in-process runs")
    if agent == AgentName.autopilot and (sim_name != SimName.carla or ros):
        _fail("--agent autopilot is CARLA's Traffic Manager driving the ego: use it with --sim carla, in-process "
              "(on the built-in simulator, and in the ROS 2 graph's autopilot:=true, the expert is the autopilot)")
    if mode is not None and agent != AgentName.modular:
        _fail("--mode is for --agent modular")
    if policy_weights is not None and mode in (None, ModeName.modular):
        _fail("--policy-weights is for --mode policy or policy+safety")
    if video is not None:
        _check_video_path(video)
    if ros:
        _drive_ros(scenario, suite, town, episodes, seed, npc_vehicles, pedestrians, out, weather, sensors, video,
                   as_json, foxglove, perception, perception_weights, lidar_obstacles, agent,
                   mode or ModeName.modular, policy_weights, carla)
        return
    if foxglove:
        _fail("--foxglove needs --ros (the live view is a node of the ROS 2 graph)")
    if perception or lidar_obstacles:
        _fail("--perception and --lidar-obstacles need --ros (they run nodes of the ROS 2 graph; the modular agent "
              "runs its own perception in-process)")
    if perception_weights is not None and agent != AgentName.modular:
        _fail("--perception-weights is for --agent modular (or --perception with --ros)")
    # In-process, the policy modes are the agents of that name (drivestack.agents).
    agent_name = agent.value if mode in (None, ModeName.modular) else mode.value
    if agent == AgentName.modular:
        from perception.camera_pipeline import DEFAULT_WEIGHTS  # torch: the agent loads it anyway
        if not (perception_weights or DEFAULT_WEIGHTS).is_file():
            _fail(f"no perception weights at {perception_weights or DEFAULT_WEIGHTS}: train and ship them (README: "
                  "Perception) or give --perception-weights")
    if agent_name.startswith("policy"):
        _require_policy_weights(policy_weights)
    from drivestack.agents import agent_factory, scenario_for_agent
    from sim.backends import make_simulator
    from sim.birdseye import save_birdseye
    from sim.driving_score import format_results_table, global_score, results_to_json
    from sim.episode import run_episode

    console = Console(stderr=as_json)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot write results to {out}: {exc.strerror or exc}")
    try:
        chosen = _scenarios(scenario, suite, town, route, route_length_m, npc_vehicles, pedestrians, weather,
                            sensors)
        runs_todo = [scenario_for_agent(agent_name, s.with_seed((s.seed if seed is None else seed) + k))
                     for s in chosen for k in range(episodes)]
        if video is not None:
            runs_todo = [_with_video_camera(s) for s in runs_todo]
        bags = [_video_path(record, s, len(runs_todo) == 1) for s in runs_todo] if record is not None else []
        taken = [str(b) for b in bags if b.exists()]
        if taken:
            _fail(f"{', '.join(taken)} exists: bags are never overwritten")
        sim = make_simulator(carla.sim, host=carla.host, port=carla.port, traffic_manager_port=carla.tm_port,
                             timeout_s=carla.timeout_s)
    except _user_errors() as exc:
        _fail(str(exc))
    # The simulator is closed however the loop ends: a CARLA server gets its actors
    # destroyed and its settings back on errors and Ctrl-C too.
    try:
        results = []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rc]}"), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            overall = progress.add_task("episodes", total=len(runs_todo), rc="")
            for sc in runs_todo:
                task = progress.add_task(f"{sc.name} seed {sc.seed}", total=100, rc="route   0.0 %")
                observers = []
                if video is not None:
                    from sim.video import VideoObserver
                    observers.append(VideoObserver(_video_path(video, sc, len(runs_todo) == 1), sim.dt_s))
                if record is not None:
                    from ros_nodes.bag_observer import BagObserver
                    observers.append(BagObserver(bags[len(results)], sc, sim.dt_s))
                make_agent = agent_factory(agent_name, sc, perception_weights=perception_weights,
                                           policy_weights=policy_weights)
                run = run_episode(sim, sc, make_agent, on_step=lambda pct, t=task: progress.update(
                    t, completed=pct, rc=f"route {pct:5.1f} %"), observers=observers)
                progress.update(task, completed=100)
                progress.update(overall, advance=1)
                results.append(run.result)
                if png:
                    save_birdseye(out / f"{sc.name}_seed{sc.seed}.png", run.road_map, run.route, run.trajectory,
                                  run.result)
    except _user_errors() as exc:
        _fail(str(exc))
    finally:
        sim.close()
    summary = global_score(results)
    payload = results_to_json(results, summary)
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        console.print(format_results_table(results, summary))
        console.print(f"results: {out / 'results.json'}" + (f", bird's-eye PNGs in {out}/" if png else ""))


@dataclass(frozen=True)
class CarlaArgs:
    """``--sim`` and the CARLA server's address, for in-process runs and the launch file."""

    sim: str = "builtin"
    host: str = "127.0.0.1"
    port: int = 2000
    tm_port: int = 8000
    timeout_s: float = 10.0

    def launch_arguments(self) -> dict[str, str]:
        return {"sim": self.sim, "carla_host": self.host, "carla_port": str(self.port),
                "carla_tm_port": str(self.tm_port), "carla_timeout_s": str(self.timeout_s)}


def _require_policy_weights(policy_weights: Optional[Path]) -> None:
    from models.driving_policy import DEFAULT_POLICY_WEIGHTS
    if not (policy_weights or DEFAULT_POLICY_WEIGHTS).is_file():
        _fail(f"no policy weights at {policy_weights or DEFAULT_POLICY_WEIGHTS}: train them (README: Behaviour "
              "cloning) or give --policy-weights")


def _check_video_path(video: Path) -> None:
    if video.suffix not in (".mp4", ".avi"):
        _fail(f"--video {video}: give a .mp4 or .avi file name")
    try:
        video.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot write the video to {video}: {exc.strerror or exc}")


def _drive_ros(scenario, suite, town, episodes, seed, npc_vehicles, pedestrians, out: Path, weather, sensors,
               video, as_json: bool, foxglove: bool = False, perception: bool = False,
               perception_weights: Optional[Path] = None, lidar_obstacles: bool = False,
               agent: AgentName = AgentName.expert, mode: ModeName = ModeName.modular,
               policy_weights: Optional[Path] = None, carla: Optional[CarlaArgs] = None) -> None:
    """One episode through launch/drive.yaml; the bridge writes results.json, the PNG, the
    video and the bag. The modular agent drives from the `drive` sensor suite (--mode
    policy: `front_rgb`, the policy needs only the camera) unless --sensors names another."""
    from ros_nodes.launcher import LaunchError, load_launch, run_launch
    from sim.driving_score import format_results_table, global_score
    from sim.scenario import resolve_scenario
    if suite is not None or town is not None or episodes != 1:
        _fail("--ros drives one episode of one --scenario; --suite, --town and --episodes run in-process "
              "(without --ros)")
    name = scenario or "default"
    modular = agent == AgentName.modular
    policy = modular and mode != ModeName.modular  # the policy node runs
    perceives = modular and mode != ModeName.policy  # the perception nodes run
    if modular and sensors is None:
        from drivestack.agents import MODULAR_SENSOR_SUITE, POLICY_SENSOR_SUITE
        # what launch/drive.yaml picks for agent:=modular
        sensors_used = MODULAR_SENSOR_SUITE if perceives else POLICY_SENSOR_SUITE
    else:
        sensors_used = sensors
    try:  # fail here, with the CLI's message, rather than in a node
        chosen = resolve_scenario(name, seed=seed, sensors=sensors_used, weather=weather, npc_vehicles=npc_vehicles,
                                  pedestrians=pedestrians)
    except _user_errors() as exc:
        _fail(str(exc))
    if perception_weights is not None and not (perception or modular):
        _fail("--perception-weights is for --perception or --agent modular")
    has_camera = any(c.name == "front" and "rgb" in c.kinds for c in chosen.sensors.cameras)
    if perceives and not (has_camera and chosen.sensors.lidar is not None):
        _fail("--agent modular drives from a front RGB camera and a LiDAR: choose --sensors drive or full")
    if policy and not has_camera:
        _fail("--mode policy drives from the front RGB camera: choose --sensors front_rgb, drive or full")
    if perception and not has_camera:
        _fail("--perception needs a front RGB camera: choose --sensors full or front_rgb")
    if lidar_obstacles and chosen.sensors.lidar is None:
        _fail("--lidar-obstacles needs a LiDAR: choose --sensors full")
    perception = perception or perceives
    if perception:
        from perception.camera_pipeline import DEFAULT_WEIGHTS  # torch: only when the node will run anyway
        if not (perception_weights or DEFAULT_WEIGHTS).is_file():
            _fail(f"no perception weights at {perception_weights or DEFAULT_WEIGHTS}: train and ship them (README: "
                  "Perception) or give --perception-weights")
    if policy:
        _require_policy_weights(policy_weights)
    if (out / "bag").exists():
        _fail(f"{out / 'bag'} exists: give a new --out (bags are never overwritten)")
    (out / "results.json").unlink(missing_ok=True)
    arguments = {"scenario": name, "out": str(out), "seed": str(-1 if seed is None else seed),
                 "sensors": sensors or "", "weather": weather or "",
                 "npc_vehicles": str(-1 if npc_vehicles is None else npc_vehicles),
                 "pedestrians": str(-1 if pedestrians is None else pedestrians),
                 "foxglove": "true" if foxglove else "false", "perception": "true" if perception else "false",
                 "perception_weights": str(perception_weights or ""),
                 "lidar_obstacles": "true" if lidar_obstacles else "false", "agent": agent.value,
                 "mode": mode.value, "policy_weights": str(policy_weights or ""), "video": str(video or ""),
                 **(carla or CarlaArgs()).launch_arguments()}
    try:
        description = load_launch(LAUNCH_DIR / "drive.yaml", arguments)
    except LaunchError as exc:
        _fail(str(exc))
    exit_code = run_launch(description, stdout=sys.stderr if as_json else None)
    results_path = out / "results.json"
    if exit_code or not results_path.exists():
        _fail(f"the ROS 2 graph stopped before the episode ended (exit code {exit_code})")
    payload = json.loads(results_path.read_text())
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    from sim.driving_score import results_from_json
    results = results_from_json(payload)
    console = Console()
    console.print(format_results_table(results, global_score(results)))
    console.print(f"results: {results_path}, bag: {out / 'bag'}, bird's-eye PNG in {out}/"
                  + (f", video: {video}" if video is not None else ""))


@app.command()
def routes() -> None:
    """List the shipped scenarios; those marked benchmark form the benchmark suite."""
    from sim.scenario import shipped_scenarios
    try:
        scenarios = shipped_scenarios()
    except _user_errors() as exc:
        _fail(str(exc))
    table = Table(title="Scenarios (sim/scenarios)")
    table.add_column("name", no_wrap=True)
    for column in ("town", "split", "bench", "route", "NPCs", "peds", "weather", "seed"):
        table.add_column(column)
    for s in scenarios:
        route = f"random {s.route_length_m:.0f} m" if s.start is None else \
            f"({s.start[0]:.0f},{s.start[1]:.0f})->({s.goal[0]:.0f},{s.goal[1]:.0f})"
        table.add_row(s.name, s.town, s.split, "yes" if s.benchmark else "", route, str(s.npc_vehicles),
                      str(s.pedestrians), s.weather, str(s.seed))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


from drivestack.cli_launch import launch as launch_command  # noqa: E402
app.command(name="launch")(launch_command)


from drivestack.cli_bag import bag_app  # noqa: E402
app.add_typer(bag_app, name="bag")


from drivestack.cli_replay import replay as replay_command  # noqa: E402
app.command(name="replay")(replay_command)

from drivestack.cli_collect import collect as collect_command  # noqa: E402
app.command(name="collect")(collect_command)
from drivestack.cli_dagger import dagger as dagger_command  # noqa: E402
app.command(name="dagger")(dagger_command)

from drivestack.cli_train import eval_app, export_app, train_app  # noqa: E402
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(export_app, name="export")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
