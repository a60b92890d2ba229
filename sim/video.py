"""Episode video: the front camera with label overlays beside a bird's-eye view.

Each frame is ``[camera panel | bird's-eye panel]``, drawn with opencv so that writing
costs a few milliseconds a frame (``sim.birdseye`` is the slow, one-off matplotlib
summary of a finished episode). The camera panel shows the camera image letterboxed,
the ground-truth 2D boxes (coloured by class; traffic lights by state), the lane
boundaries when the labels have them, and the route command, speed and time. The
bird's-eye panel is ego-centred with the heading up: lanes, route, other actors and
the state of each traffic light drawn on its stop lines.

Colours are BGR (opencv's order); observation images are RGB and get converted.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import cv2
import numpy as np

from drivestack.schema import (
    ActorKind,
    ActorState,
    CameraImage,
    EgoState,
    LaneBoundary,
    ObjectClass,
    Observation,
    RoadOption,
    Route,
    TrafficLight,
    TrafficLightState,
)
from sim.route_progress import RouteProgress
from sim.sensors.ground_truth import map_to_ego

if TYPE_CHECKING:
    from sim.road_map import RoadMap

log = logging.getLogger(__name__)

# Codec per container: mp4v is in every opencv build (no licence-encumbered H.264).
FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".avi": "MJPG"}

_BACKGROUND = (200, 214, 204)
_ROAD = (110, 110, 110)
_JUNCTION_ROAD = (135, 135, 135)
_LANE_EDGE = (225, 225, 225)
_ROUTE = (235, 140, 60)
_EGO = (60, 180, 60)
_ACTOR_COLOUR = {ActorKind.VEHICLE: (200, 110, 20), ActorKind.PEDESTRIAN: (60, 20, 220),
                 ActorKind.STATIC: (100, 160, 110)}
_CLASS_COLOUR = {ObjectClass.VEHICLE: (255, 150, 30), ObjectClass.PEDESTRIAN: (60, 20, 220),
                 ObjectClass.TRAFFIC_LIGHT: (30, 170, 250)}
_CLASS_TAG = {ObjectClass.VEHICLE: "car", ObjectClass.PEDESTRIAN: "ped", ObjectClass.TRAFFIC_LIGHT: "TL"}
_LIGHT_COLOUR = {TrafficLightState.RED: (0, 0, 255), TrafficLightState.YELLOW: (0, 215, 255),
                 TrafficLightState.GREEN: (0, 200, 0), TrafficLightState.OFF: (90, 90, 90)}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class VideoError(RuntimeError):
    """The video cannot be written (bad path, codec missing, writer closed)."""


def _even(n: int) -> int:
    # Most encoders (yuv420) need even frame sides.
    return max(2, int(n) + (int(n) % 2))


class BirdseyeView:
    """Ego-centred, heading-up top-down view of the map, route and actors."""

    def __init__(self, road_map: RoadMap, route: Route | None, size_px: int, window_m: float = 60.0) -> None:
        self.size_px = size_px
        self.px_per_m = size_px / window_m
        self.window_m = window_m
        self._road_polygons, self._edges, self._in_junction = [], [], []
        for lane in road_map.lanes:
            normal = np.column_stack([-np.sin(lane.yaw_rad), np.cos(lane.yaw_rad)]) * (lane.width_m / 2.0)
            left, right = lane.points_xy + normal, lane.points_xy - normal
            self._road_polygons.append(np.concatenate([left, right[::-1]]))
            self._edges.append((left, right))
            self._in_junction.append(lane.in_junction)
        self._lane_lo = np.array([p.min(axis=0) for p in self._road_polygons])
        self._lane_hi = np.array([p.max(axis=0) for p in self._road_polygons])
        self._route_xy = (np.array([(w.x_m, w.y_m) for w in route.waypoints]) if route is not None
                          else np.zeros((0, 2)))

    def _to_px(self, ego: EgoState, xy: np.ndarray) -> np.ndarray:
        x, y = map_to_ego(ego, xy[:, 0], xy[:, 1])
        half = self.size_px / 2.0
        return np.column_stack([half - y * self.px_per_m, half - x * self.px_per_m])

    def _visible_lanes(self, ego: EgoState) -> np.ndarray:
        # The window turns with the ego: any lane within its circumscribed circle may show.
        reach = self.window_m / math.sqrt(2.0) + 1.0
        lo, hi = self._lane_lo - (ego.x_m, ego.y_m), self._lane_hi - (ego.x_m, ego.y_m)
        return np.flatnonzero((lo < reach).all(axis=1) & (hi > -reach).all(axis=1))

    def render(self, ego: EgoState, actors: tuple[ActorState, ...],
               lights: tuple[TrafficLight, ...]) -> np.ndarray:
        image = np.full((self.size_px, self.size_px, 3), _BACKGROUND, dtype=np.uint8)
        lanes = self._visible_lanes(ego)
        # Junction surface first, roads and marks on top. One polygon per call: cv2 fills
        # several by the even-odd rule, which would cut holes where connectors overlap.
        for junction in (True, False):
            for i in lanes:
                if self._in_junction[i] == junction:
                    polygon = _int_px(self._to_px(ego, self._road_polygons[i]))
                    cv2.fillPoly(image, [polygon], _JUNCTION_ROAD if junction else _ROAD, cv2.LINE_AA)
        edges = [_int_px(self._to_px(ego, edge)) for i in lanes if not self._in_junction[i] for edge in self._edges[i]]
        cv2.polylines(image, edges, False, _LANE_EDGE, 1, cv2.LINE_AA)
        if len(self._route_xy) > 1:
            cv2.polylines(image, [_int_px(self._to_px(ego, self._route_xy))], False, _ROUTE, 3, cv2.LINE_AA)
        for light in lights:
            for p0, p1 in light.stop_lines:
                line = _int_px(self._to_px(ego, np.array([p0, p1], dtype=float)))
                cv2.line(image, tuple(line[0]), tuple(line[1]), _LIGHT_COLOUR[light.state], 3, cv2.LINE_AA)
        for actor in actors:
            self._draw_box(image, ego, actor.x_m, actor.y_m, actor.yaw_rad, actor.length_m, actor.width_m,
                           _ACTOR_COLOUR.get(actor.kind, (0, 0, 0)))
        self._draw_box(image, ego, ego.x_m, ego.y_m, ego.yaw_rad, ego.length_m, ego.width_m, _EGO)
        half = self.size_px // 2
        cv2.line(image, (half, half), (half, half - int(ego.length_m * self.px_per_m * 0.6)), (255, 255, 255), 2)
        return image

    def _draw_box(self, image: np.ndarray, ego: EgoState, x_m: float, y_m: float, yaw_rad: float,
                  length_m: float, width_m: float, colour: tuple[int, int, int]) -> None:
        c, s = math.cos(yaw_rad), math.sin(yaw_rad)
        local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * (length_m / 2.0, width_m / 2.0)
        corners = np.column_stack([x_m + local[:, 0] * c - local[:, 1] * s, y_m + local[:, 0] * s + local[:, 1] * c])
        cv2.fillConvexPoly(image, _int_px(self._to_px(ego, corners)), colour, cv2.LINE_AA)


def _int_px(points: np.ndarray) -> np.ndarray:
    # Far-away points would overflow cv2's fixed-point drawing; clip well outside any panel.
    return np.round(np.clip(points, -1e5, 1e5)).astype(np.int32)


def _label(image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int],
           scale: float = 0.45) -> None:
    """Text on a dark box so it reads on any background."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
    x, y = origin
    cv2.rectangle(image, (x, y - h - 3), (x + w + 4, y + base), (0, 0, 0), -1)
    cv2.putText(image, text, (x + 2, y - 1), _FONT, scale, colour, 1, cv2.LINE_AA)


class CameraPanel:
    """The camera image letterboxed into a fixed panel, with boxes, lanes and the HUD."""

    def __init__(self, camera_name: str, width_px: int, height_px: int) -> None:
        self.camera_name = camera_name
        self.width_px, self.height_px = width_px, height_px

    def render(self, observation: Observation, command: RoadOption | None) -> np.ndarray:
        panel = np.zeros((self.height_px, self.width_px, 3), dtype=np.uint8)
        image = next((c for c in observation.cameras if c.name == self.camera_name and c.rgb is not None), None)
        if image is None:
            panel[:] = (40, 40, 40)
            text = f"no camera '{self.camera_name}'"
            (w, _), _ = cv2.getTextSize(text, _FONT, 0.8, 2)
            cv2.putText(panel, text, ((self.width_px - w) // 2, self.height_px // 2), _FONT, 0.8,
                        (200, 200, 200), 2, cv2.LINE_AA)
        else:
            scale, offset = self._letterbox(panel, image)
            truth = observation.ground_truth
            if truth is not None:
                self._draw_lanes(panel, truth.lanes, scale, offset)
                self._draw_boxes(panel, truth.boxes_2d, scale, offset)
        name = command.name if command is not None else "-"
        _label(panel, f"{name}  {observation.ego.speed_mps * 3.6:5.1f} km/h  t={observation.stamp_ns / 1e9:6.2f} s",
               (6, 20), (255, 255, 255), 0.55)
        return panel

    def _letterbox(self, panel: np.ndarray, image: CameraImage) -> tuple[float, tuple[float, float]]:
        h, w = image.rgb.shape[:2]
        scale = min(self.width_px / w, self.height_px / h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        ox, oy = (self.width_px - new_w) // 2, (self.height_px - new_h) // 2
        resized = cv2.resize(np.ascontiguousarray(image.rgb[..., ::-1]), (new_w, new_h),
                             interpolation=cv2.INTER_LINEAR if scale >= 1 else cv2.INTER_AREA)
        panel[oy:oy + new_h, ox:ox + new_w] = resized
        return scale, (ox, oy)

    def _draw_lanes(self, panel: np.ndarray, lanes: tuple[LaneBoundary, ...], scale: float,
                    offset: tuple[float, float]) -> None:
        for lane in lanes:
            px = lane.image_px.get(self.camera_name)
            if px is None or len(px) < 2:
                continue
            double = lane.marking.count("Solid") + lane.marking.count("Broken") > 1
            colour = (0, 220, 255) if double else (255, 255, 255) if lane.marking != "NONE" else (160, 160, 160)
            cv2.polylines(panel, [_int_px(px * scale + offset)], False, colour, 2 if abs(lane.position) == 1 else 1,
                          cv2.LINE_AA)

    def _draw_boxes(self, panel: np.ndarray, boxes, scale: float, offset: tuple[float, float]) -> None:
        for box in boxes:
            if box.camera != self.camera_name:
                continue
            if box.light_state is not None:
                colour = _LIGHT_COLOUR[box.light_state]
                text = f"TL {box.light_state.name}"
            else:
                colour = _CLASS_COLOUR[box.object_class]
                text = f"{_CLASS_TAG[box.object_class]} {box.distance_m:.0f}m"
            p0 = _int_px(np.array([box.u_min_px, box.v_min_px]) * scale + offset)
            p1 = _int_px(np.array([box.u_max_px, box.v_max_px]) * scale + offset)
            # Mostly hidden objects get a thin box: labelled, but not what the camera sees.
            thickness = 2 if box.visible_fraction >= 0.5 else 1
            cv2.rectangle(panel, tuple(p0), tuple(p1), colour, thickness, cv2.LINE_AA)
            _label(panel, text, (int(p0[0]), max(int(p0[1]), 12)), colour, 0.35)


class FrameRenderer:
    """One video frame: the camera panel (``2 * panel_height_px`` wide) beside the
    bird's-eye panel (square), sides rounded up to even numbers."""

    def __init__(self, road_map: RoadMap, route: Route | None, camera_name: str = "front",
                 panel_height_px: int = 360) -> None:
        height = _even(panel_height_px)
        self.camera = CameraPanel(camera_name, 2 * height, height)
        self.birdseye = BirdseyeView(road_map, route, height)
        self.size_px = (3 * height, height)  # (width, height), as opencv wants it

    def render(self, observation: Observation, command: RoadOption | None = None) -> np.ndarray:
        """The BGR frame of one observation."""
        frame = np.zeros((self.size_px[1], self.size_px[0], 3), dtype=np.uint8)
        camera_width = self.camera.width_px
        frame[:, :camera_width] = self.camera.render(observation, command)
        frame[:, camera_width:] = self.birdseye.render(observation.ego, observation.actors,
                                                       observation.traffic_lights)
        return frame


class EpisodeVideo:
    """Writes one frame per :meth:`add_frame`; use as a context manager or call :meth:`close`.

    Frames are :class:`FrameRenderer`'s. ``.mp4`` is written with the ``mp4v`` codec
    and ``.avi`` with MJPG; with ``avi_fallback`` an ``.mp4`` whose codec opencv lacks
    is written as ``.avi`` beside it (see :attr:`path`). Errors opening the file are
    raised here, before the episode runs.
    """

    def __init__(self, path: str | Path, road_map: RoadMap, route: Route | None, fps: float,
                 camera_name: str = "front", panel_height_px: int = 360, avi_fallback: bool = False) -> None:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"video fps={fps} must be a finite number > 0")
        self.renderer = FrameRenderer(road_map, route, camera_name, panel_height_px)
        self.frames_written = 0
        self.path = Path(path)
        self._writer = self._open(self.path, fps, avi_fallback)

    @property
    def frame_size_px(self) -> tuple[int, int]:
        """(width, height) of every frame."""
        return self.renderer.size_px

    def _open(self, path: Path, fps: float, avi_fallback: bool) -> cv2.VideoWriter:
        fourcc = FOURCC_BY_SUFFIX.get(path.suffix.lower())
        if fourcc is None:
            raise VideoError(f"cannot write video {path}: unknown container {path.suffix!r} "
                             f"(use {' or '.join(FOURCC_BY_SUFFIX)})")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VideoError(f"cannot write video {path}: cannot create its folder ({exc})") from None
        if not os.access(path.parent, os.W_OK):
            raise VideoError(f"cannot write video {path}: its folder is not writable")
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), self.frame_size_px)
        if writer.isOpened():
            return writer
        writer.release()
        if avi_fallback and path.suffix.lower() == ".mp4":
            fallback = path.with_suffix(".avi")
            log.warning("opencv cannot write %s with %s; writing %s (MJPG) instead", path, fourcc, fallback)
            self.path = fallback
            return self._open(fallback, fps, avi_fallback=False)
        raise VideoError(f"cannot write video {path}: opencv could not open a {fourcc!r} writer "
                         f"(codec missing from this opencv build, or the file cannot be created)")

    def add_frame(self, observation: Observation, command: RoadOption | None = None) -> None:
        if self._writer is None:
            raise VideoError(f"video {self.path} is closed")
        self._writer.write(self.renderer.render(observation, command))
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            log.info("wrote %d frames to %s", self.frames_written, self.path)

    def __enter__(self) -> EpisodeVideo:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class VideoObserver:
    """An episode observer (``sim.episode.EpisodeObserver``) writing one video per episode,
    with the route command at the ego's position in the overlay."""

    def __init__(self, path: str | Path, dt_s: float, camera_name: str = "front") -> None:
        self.path, self.fps, self.camera_name = Path(path), 1.0 / dt_s, camera_name
        self._video: EpisodeVideo | None = None

    def start(self, road_map: RoadMap, route: Route) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VideoError(f"cannot write the video to {self.path}: {exc.strerror or exc}") from None
        self._video = EpisodeVideo(self.path, road_map, route, self.fps, self.camera_name)
        self._progress = RouteProgress(route)

    def observe(self, obs: Observation) -> None:
        self._progress.update(obs.ego.x_m, obs.ego.y_m)
        self._video.add_frame(obs, self._progress.command)

    def act(self, stamp_ns: int, control) -> None:
        pass  # the overlay shows the observation, not the command

    def finish(self, result=None) -> None:
        if self._video is not None:
            self._video.close()
