"""The ego's exteroceptive sensors on the built-in simulator: cameras, LiDAR, labels.

One rig per simulator. It holds what is expensive to make (the renderer's offscreen
buffers, the town's meshes) across episodes and rebuilds only what a new scenario
changes. Random streams are the sensors' own (seeded from the scenario), so switching
a sensor on never changes the traffic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from drivestack.schema import (
    ActorKind, ActorState, Box3D, CameraImage, EgoState, GroundTruth, LidarScan, ObjectClass, Route, TrafficLight)
from sim.road_map import RoadMap
from sim.sensors.lidar import OrientedBoxes, RayCastLidar, mount_pose_world
from sim.sensors.suite import SensorSuite

# Sub-streams of the scenario seed: [seed, k]. 1 is the IMU/GNSS noise (builtin.py).
_LIDAR_STREAM, _CAMERA_STREAM, _LOOK_STREAM = 3, 4, 5


class SensorRig:
    def __init__(self) -> None:
        self._renderer = None
        self._cameras: tuple = ()
        self.suite = SensorSuite()
        self.world = None
        self.lidar: RayCastLidar | None = None

    def reset(self, suite: SensorSuite, road_map: RoadMap, route: Route, weather: str, seed: int,
              ego_height_m: float) -> None:
        self.suite = suite
        # Lane labels follow the route through junctions, as a driver's lane model would.
        self._route_lanes = [w.lane_segment_id for w in route.waypoints if w.lane_segment_id >= 0]
        needs_world = bool(suite.cameras or suite.lidar or suite.ground_truth)
        self.world = None
        if needs_world:
            from sim.render.world import build_world
            # Without randomisation every episode of a town shares one look (and one cache entry).
            self.world = build_world(road_map, seed=seed if suite.randomize else 0, randomize=suite.randomize)
        self._static_boxes = self.world.static_boxes if self.world is not None else OrientedBoxes.empty()
        self.lidar = RayCastLidar(suite.lidar, np.random.default_rng([seed, _LIDAR_STREAM])) if suite.lidar else None
        self.road_map = road_map
        if suite.cameras:
            self._reset_renderer(suite, weather, seed, ego_height_m)
        elif self._renderer is not None:
            self.close()

    def _reset_renderer(self, suite: SensorSuite, weather: str, seed: int, ego_height_m: float) -> None:
        from sim.render.panda_renderer import CameraRenderer
        from sim.render.weather import weather_preset
        if self._renderer is None or self._cameras != suite.cameras:
            self.close()
            self._renderer = CameraRenderer(suite.cameras, ego_height_m=ego_height_m)
            self._cameras = suite.cameras
        look_rng = np.random.default_rng([seed, _LOOK_STREAM])
        self._renderer.reset(seed=int(np.random.default_rng([seed, _CAMERA_STREAM]).integers(2**31)))
        self._renderer.set_world(self.world, self.world.textures)
        self._renderer.set_weather(weather_preset(weather, look_rng, suite.randomize))

    def observe(self, stamp_ns: int, dt_s: float, ego: EgoState, ego_height_m: float,
                actors: Sequence[ActorState], lights: Sequence[TrafficLight], ego_lane_segment_id: int,
                ) -> tuple[tuple[CameraImage, ...], LidarScan | None, GroundTruth | None]:
        if self.world is None:
            return (), None, None
        ego_actor = ActorState(ego.actor_id, ActorKind.VEHICLE, ego.x_m, ego.y_m, ego.yaw_rad, ego.speed_mps,
                               ego.length_m, ego.width_m, ego_height_m)
        everyone = (ego_actor, *actors)
        images = self._renderer.render(stamp_ns, ego, everyone, lights) if self._renderer is not None else ()
        scan = None
        if self.lidar is not None:
            pose = mount_pose_world(self.lidar.config, ego.x_m, ego.y_m, ego.yaw_rad)
            boxes = OrientedBoxes.concatenate([OrientedBoxes.from_actors(everyone), self._static_boxes])
            points = self.lidar.scan(pose, dt_s, boxes, exclude_actor_id=ego.actor_id,
                                     ground_tag=self.world.ground_tag)
            scan = LidarScan(stamp_ns, points)
        truth = None
        if self.suite.ground_truth:
            from sim.sensors.ground_truth import frame_ground_truth
            truth = frame_ground_truth(
                ego=ego, actors=actors, lights=lights, ego_lane_segment_id=ego_lane_segment_id,
                road_map=self.road_map, cameras=self.suite.cameras, images=images,
                light_heads=self.world.light_heads, silhouettes=self._silhouette,
                lane_sequence=self._route_lanes)
        return images, scan, truth

    def _silhouette(self, box: Box3D) -> list | None:
        """The rendered model of a labelled actor, for its unoccluded pixel count."""
        if self._renderer is None or box.object_class == ObjectClass.TRAFFIC_LIGHT:
            return None  # a light housing is its box
        from sim.render.actors import actor_mesh
        kind = ActorKind.VEHICLE if box.object_class == ObjectClass.VEHICLE else ActorKind.PEDESTRIAN
        # Instance ids of actors are 1 + actor_id (drivestack.schema.instance_id_of_actor).
        actor = ActorState(box.instance_id - 1, kind, 0.0, 0.0, 0.0, 0.0, box.length_m, box.width_m, box.height_m)
        return actor_mesh(actor, self._renderer.seed)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
        self._renderer, self._cameras = None, ()
