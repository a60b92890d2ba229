"""Record an in-process episode as the bag the ROS 2 graph would record.

An episode observer (``sim.episode.EpisodeObserver``) that writes, per frame, ``/clock``
and every message the bridge would publish (ros_nodes.frame_messages), and the agent's
control stamped with the frame it answers, through the same conversions and the same
crash-safe BagWriter; map and route at the start, the episode result in the metadata
at the end. With ``label`` (noise injection, DAgger) it also records the expert's
label of each frame on ``/drivestack/expert/control``. No rclpy: `drivestack drive
--record` and data collection run without a graph and many episodes can record in
parallel processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from drivestack.schema import EpisodeResult, Observation, Route, VehicleControl
from ros_nodes import topics
from ros_nodes.bag.writer import BagWriter
from ros_nodes.convert_sensors import msg_class, time_msg
from ros_nodes.convert_world import control_msg, route_msg
from ros_nodes.frame_messages import observation_messages
from ros_nodes.graph import encode
from sim.road_map import RoadMap
from sim.scenario import Scenario


class BagObserver:
    def __init__(self, path: str | Path, scenario: Scenario, dt_s: float, compression: str = "",
                 chunk_size_bytes: int = 1 << 20, label: Callable[[], VehicleControl | None] | None = None) -> None:
        self.path, self.scenario, self.compression = Path(path), scenario, compression
        self.chunk_size_bytes = chunk_size_bytes
        self.table = {t.name: t for t in topics.recorded_topics(topics.topic_table(scenario.sensors, dt_s))}
        self.label = label
        if label is not None:
            self.table[topics.EXPERT_CONTROL] = topics.EXPERT_CONTROL_TOPIC
        self._writer: BagWriter | None = None

    def start(self, road_map: RoadMap, route: Route) -> None:
        s = self.scenario
        self._writer = BagWriter(self.path, {"scenario": s.name, "town": s.town, "seed": s.seed, "weather": s.weather,
                                             "runner": "in-process"}, compression=self.compression,
                                 chunk_size_bytes=self.chunk_size_bytes)
        for topic in self.table.values():
            self._writer.add_topic(topic.name, topic.msgtype)
        self._write(topics.MAP, 0, msg_class("std_msgs/msg/String")(data=road_map.xodr_text))
        self._write(topics.ROUTE, 0, route_msg(route, 0))

    def observe(self, obs: Observation) -> None:
        self._write(topics.CLOCK, obs.stamp_ns, msg_class("rosgraph_msgs/msg/Clock")(clock=time_msg(obs.stamp_ns)))
        for topic, msg in observation_messages(obs, self.scenario.sensors):
            self._write(topic, obs.stamp_ns, msg)

    def act(self, stamp_ns: int, control: VehicleControl) -> None:
        self._write(topics.CONTROL, stamp_ns, control_msg(control, stamp_ns))
        label = self.label() if self.label is not None else None
        if label is not None:
            self._write(topics.EXPERT_CONTROL, stamp_ns, control_msg(label, stamp_ns))

    def finish(self, result: EpisodeResult | None) -> None:
        if self._writer is None:
            return
        extra = {}
        if result is not None:
            from sim.driving_score import global_score, results_to_json
            extra["episode_result"] = json.dumps(results_to_json([result], global_score([result])))
        self._writer.close(extra)
        self._writer = None

    def _write(self, topic: str, stamp_ns: int, msg: object) -> None:
        self._writer.write(topic, stamp_ns, encode(msg, self.table[topic].msgtype))
