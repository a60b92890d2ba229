"""Perception inference: camera detection, segmentation and lane pipelines, LiDAR obstacles (Open3D), perception metrics."""
