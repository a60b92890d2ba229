"""Episode video: frames written with opencv read back with the right count and size."""

import math

import cv2
import numpy as np
import pytest

from drivestack.schema import (
    ActorKind,
    ActorState,
    Box2D,
    CameraImage,
    EgoState,
    GroundTruth,
    LaneBoundary,
    ObjectClass,
    Observation,
    RoadOption,
    Route,
    RouteWaypoint,
    TrafficLight,
    TrafficLightState,
)
from sim.builtin import load_town
from sim.video import EpisodeVideo, FrameRenderer, VideoError


@pytest.fixture(scope="module")
def grid_town():
    return load_town("grid_town")[0]


def route() -> Route:
    return Route(tuple(RouteWaypoint(1.75, y, math.pi / 2, RoadOption.LANEFOLLOW) for y in (12.0, 50.0, 88.0)), 76.0)


def observation(i: int, rng: np.random.Generator, with_camera: bool = True) -> Observation:
    ego = EgoState(i * 50_000_000, 1.75, 20.0 + i, math.pi / 2, 8.0)
    boxes = (
        Box2D("front", 2, ObjectClass.VEHICLE, 100.0, 60.0, 140.0, 90.0, 0.9, 0.0, 18.0, 900),
        Box2D("front", 9, ObjectClass.PEDESTRIAN, 200.0, 70.0, 210.0, 100.0, 0.2, 0.1, 12.0, 40),
        Box2D("front", 1 << 20, ObjectClass.TRAFFIC_LIGHT, 150.0, 10.0, 156.0, 30.0, 1.0, 0.0, 30.0, 60,
              TrafficLightState.RED),
        Box2D("rear", 3, ObjectClass.VEHICLE, 0.0, 0.0, 10.0, 10.0, 1.0, 0.0, 5.0, 100),
    )
    lane = LaneBoundary(-1, "Solid", np.zeros((2, 3)), {"front": np.array([[60.0, 159.0], [150.0, 85.0]])})
    cameras = ()
    if with_camera:
        rgb = rng.integers(0, 256, size=(160, 320, 3), dtype=np.uint8)
        cameras = (CameraImage("front", ego.stamp_ns, np.eye(3), rgb=rgb),)
    actors = (ActorState(1, ActorKind.VEHICLE, 1.75, 40.0, math.pi / 2, 5.0, 4.5, 1.9),
              ActorState(8, ActorKind.PEDESTRIAN, 5.0, 30.0, 0.0, 1.0, 0.5, 0.5))
    lights = (TrafficLight(0, 0.0, 88.0, TrafficLightState.RED, 0, (((0.0, 83.0), (3.5, 83.0)),)),)
    return Observation(ego.stamp_ns, ego, actors, lights, 20, cameras=cameras,
                       ground_truth=GroundTruth(boxes_2d=boxes, lanes=(lane,)))


def read_back(path) -> tuple[int, tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, frame.shape[:2]
    capture.release()
    return count, size


def test_twenty_frames_read_back(tmp_path, grid_town):
    rng = np.random.default_rng(0)
    path = tmp_path / "out" / "episode.mp4"
    with EpisodeVideo(path, grid_town, route(), fps=20.0, panel_height_px=181) as video:
        for i in range(20):
            # Some frames have no camera image: a placeholder panel keeps the size.
            video.add_frame(observation(i, rng, with_camera=i % 5 != 4), RoadOption.LANEFOLLOW if i else None)
        assert video.frames_written == 20
        width, height = video.frame_size_px
    assert (width, height) == (3 * 182, 182)  # sides rounded up to even
    assert read_back(path) == (20, (height, width))


def test_frame_shows_camera_overlays_and_birdseye(grid_town):
    rng = np.random.default_rng(1)
    renderer = FrameRenderer(grid_town, route(), "front", panel_height_px=320)
    assert renderer.size_px == (960, 320)
    frame = renderer.render(observation(0, rng), RoadOption.LEFT)
    assert frame.shape == (320, 960, 3)
    # The camera image fills the panel (2:1 into 2:1), scaled by 2: the vehicle box's
    # edge is drawn in its class colour over the random pixels.
    assert tuple(frame[150, 200]) == (255, 150, 30)
    blank = renderer.render(observation(0, rng, with_camera=False), None)
    assert blank[:, :640].std() < 40  # a flat placeholder with one line of text
    # Bird's eye: the ego (green) at the centre, the road around it grey.
    assert tuple(frame[170, 800]) == (60, 180, 60)
    assert tuple(frame[120, 806]) == (110, 110, 110)


def test_unwritable_path_raises_a_clear_error(tmp_path, grid_town):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the folder should be")
    path = blocker / "episode.mp4"
    with pytest.raises(VideoError, match="episode.mp4"):
        EpisodeVideo(path, grid_town, route(), fps=20.0)
    with pytest.raises(VideoError, match="unknown container"):
        EpisodeVideo(tmp_path / "episode.gif", grid_town, route(), fps=20.0)


def test_closed_video_refuses_frames(tmp_path, grid_town):
    video = EpisodeVideo(tmp_path / "episode.avi", grid_town, None, fps=10.0)
    video.close()
    video.close()  # idempotent
    with pytest.raises(VideoError, match="closed"):
        video.add_frame(observation(0, np.random.default_rng(2)))
