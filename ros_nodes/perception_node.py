"""perception: the camera models as a ROS 2 node.

Subscribes to a camera's RGB image (and its camera_info for the intrinsics) and, per
image, publishes the detections, the predicted semantic mask, the lanes (image pixels
and base_link ground points) and an overlay image for viewing, all stamped with the
image's stamp. An image that cannot be decoded (unsupported encoding, wrong size
for its data) is logged and skipped; the node never dies of one.

Run: ``python -m ros_nodes.perception_node --ros-args -p weights:=models/weights/perception_multitask.pt``
"""

from __future__ import annotations

import sys

import numpy as np
from rclpy.node import Node

from ros_nodes import topics
from ros_nodes.convert_labels import lanes_msg
from ros_nodes.convert_perception import detections_msg
from ros_nodes.convert_sensors import MessageError, image_msg, intrinsics_of, rgb_array, stamp_ns_of
from ros_nodes.graph import Publishers, announce_ready, spin_main, subscribe
from ros_nodes.scenario_params import declare_scenario_parameters, scenario_from_params
from ros_nodes.topics import Qos, Topic


class PerceptionNode(Node):
    def __init__(self) -> None:
        super().__init__("perception")
        from drivestack.frames import CameraMount
        from perception.camera_pipeline import DEFAULT_WEIGHTS, CameraPerception
        from models.engine import TrainingError, resolve_device
        weights = str(self.declare_parameter("weights", "").value) or str(DEFAULT_WEIGHTS)
        self.camera = str(self.declare_parameter("camera", "front").value)
        device = str(self.declare_parameter("device", "cpu").value)
        threshold = float(self.declare_parameter("score_threshold", 0.3).value)
        self.publish_overlay = bool(self.declare_parameter("overlay", True).value)
        # One thread by default: the node shares the cores with the bridge and the other
        # nodes, and torch's thread pool spinning against them cost 10x in measurements.
        import torch
        torch.set_num_threads(max(1, int(self.declare_parameter("threads", 1).value)))
        scenario = scenario_from_params(declare_scenario_parameters(self))
        config = next((c for c in scenario.sensors.cameras if c.name == self.camera), None)
        mount = CameraMount(config.x_m, config.y_m, config.z_m, config.roll_rad, config.pitch_rad, config.yaw_rad) \
            if config is not None else CameraMount()
        try:
            self.pipeline = CameraPerception.from_weights(weights, camera=self.camera, mount=mount,
                                                          device=resolve_device(device), score_threshold=threshold)
        except TrainingError as exc:
            raise ValueError(str(exc)) from None
        self.info_size: tuple[int, int] | None = None
        self.frame_id = topics.optical_frame(self.camera)
        self.pubs = Publishers(self, topics.camera_perception_topics(self.camera))
        subscribe(self, Topic(topics.camera_info_topic(self.camera, "rgb"), "sensor_msgs/msg/CameraInfo", Qos.SENSOR,
                              None), self._on_info)
        subscribe(self, Topic(topics.camera_image_topic(self.camera, "rgb"), "sensor_msgs/msg/Image", Qos.SENSOR,
                              None), self._on_image)
        self._ready_pub = announce_ready(self)

    def _on_info(self, msg) -> None:
        try:
            self.pipeline.intrinsics = intrinsics_of(msg)
            self.info_size = (int(msg.width), int(msg.height))
        except MessageError as exc:
            self.get_logger().error(f"camera_info: {exc}")

    def _on_image(self, msg) -> None:
        stamp = stamp_ns_of(msg.header.stamp)
        try:
            image = rgb_array(msg)
        except MessageError as exc:
            self.get_logger().error(f"image t={stamp * 1e-9:.2f} s skipped: {exc}")
            return
        if self.info_size is not None and self.info_size != (image.shape[1], image.shape[0]):
            self.get_logger().warning(f"image {image.shape[1]}x{image.shape[0]} does not match camera_info "
                                      f"{self.info_size[0]}x{self.info_size[1]}: lanes are not placed on the ground",
                                      throttle_duration_sec=10.0)
            self.pipeline.intrinsics = None
        result = self.pipeline(image, stamp)
        self.pubs.publish(topics.detections_topic(self.camera), detections_msg(result.detections, stamp,
                                                                               self.frame_id))
        self.pubs.publish(topics.semantic_topic(self.camera), image_msg(result.semantic, "mono8", stamp,
                                                                        self.frame_id))
        self.pubs.publish(topics.PERCEPTION_LANES, lanes_msg(result.lanes, stamp))
        if self.publish_overlay:
            from perception.overlay import draw_overlay
            self.pubs.publish(topics.overlay_topic(self.camera),
                              image_msg(np.ascontiguousarray(draw_overlay(image, result)), "rgb8", stamp,
                                        self.frame_id))


def main(args: list[str] | None = None) -> int:
    return spin_main("perception", PerceptionNode, args)


if __name__ == "__main__":
    sys.exit(main())
