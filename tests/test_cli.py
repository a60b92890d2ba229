"""The drivestack command line, end to end, including the errors users see."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def drivestack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drivestack.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_drive_json_reports_episode_results(tmp_path):
    out = tmp_path / "out"
    proc = drivestack("drive", "--scenario", "default", "--npc-vehicles", "5", "--pedestrians", "5",
                      "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    (route,) = payload["routes"]
    assert route["scenario"] == "default" and route["status"] == "Completed"
    assert route["driving_score"] == pytest.approx(route["route_completion_pct"] * route["infraction_penalty"])
    assert len(route["trajectory_digest"]) == 16
    assert payload["global"]["driving_score"] == route["driving_score"]
    assert (out / "results.json").exists()
    png = out / "default_seed7.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_route_on_a_foreign_xodr_with_episodes_and_seed(tmp_path):
    proc = drivestack("drive", "--town", str(DATA / "foreign_ring.xodr"), "--route", "random",
                      "--route-length-m", "200", "--episodes", "2", "--seed", "5", "--no-png",
                      "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    routes = json.loads(proc.stdout)["routes"]
    assert [r["seed"] for r in routes] == [5, 6]
    assert all(r["route_completion_pct"] == 100.0 for r in routes)


def test_routes_lists_the_benchmark():
    proc = drivestack("routes")
    assert proc.returncode == 0
    assert "bench_holdout_town_31" in proc.stdout and "default" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--scenario", "no_such_scenario"], "unknown scenario 'no_such_scenario'"),
    (["--town", "{bad}"], "malformed OpenDRIVE XML"),
    (["--town", "{far}"], "no drivable lane within 10 m of goal"),
    (["--scenario", "{nan}"], "non-finite"),
    (["--suite", "everything"], "unknown suite 'everything'"),
    (["--town", "atlantis"], "unknown town 'atlantis'"),
    (["--town", "{missing}"], "no such map file"),
    (["--scenario", "{lidar}"], "sensors.lidar: LidarConfig.channels=200 is outside [1, 128]"),
    (["--scenario", "default", "--sensors", "everything"], "unknown sensor suite 'everything'"),
    (["--scenario", "default", "--weather", "snow"], "unknown weather 'snow'"),
    (["--scenario", "default", "--video", "/proc/no/such/dir/v.mp4"], "cannot write the video"),
    (["--scenario", "default", "--video", "{lidar}"], "give a .mp4 or .avi file name"),
])
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    bad = tmp_path / "bad.xodr"
    bad.write_text("<OpenDRIVE><road")
    far = tmp_path / "far.yaml"
    far.write_text("town: grid_town\nstart: [-98.25, 50.0, 1.5708]\ngoal: [5000.0, 5000.0]\n")
    nan = tmp_path / "nan.yaml"
    nan.write_text("town: grid_town\nstart: [.nan, 50.0, 1.5708]\ngoal: [0.0, 0.0]\n")
    lidar = tmp_path / "lidar.yaml"
    lidar.write_text("town: grid_town\nroute_length_m: 100\nsensors:\n  lidar: {channels: 200}\n")
    args = [a.format(bad=bad, far=far, nan=nan, lidar=lidar, missing=tmp_path / 'missing.xodr') for a in args]
    if args[0] == "--town" and args[1] == str(far):
        args = ["--scenario", str(far)]
    proc = drivestack("drive", *args, "--out", str(tmp_path / "o"), "--no-png")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_drive_writes_a_video_of_the_front_camera(tmp_path):
    import cv2
    video = tmp_path / "v" / "drive.mp4"
    proc = drivestack("drive", "--town", "grid_town", "--route", "random", "--route-length-m", "60",
                      "--npc-vehicles", "3", "--pedestrians", "2", "--weather", "sunset", "--video", str(video),
                      "--no-png", "--out", str(tmp_path / "o"), "--json")
    assert proc.returncode == 0, proc.stderr
    capture = cv2.VideoCapture(str(video))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = capture.read()
    capture.release()
    duration_s = json.loads(proc.stdout)["routes"][0]["duration_s"]
    # One frame per observation: the reset's and one per step (the referee's clock starts
    # at the first step, so the steps are one more than its duration / dt).
    assert ok and frames == round(duration_s / 0.05) + 2
    assert frame.shape[1] > frame.shape[0] and frame.std() > 10  # camera beside the bird's-eye view
