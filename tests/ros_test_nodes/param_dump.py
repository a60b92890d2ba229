"""Prints every parameter it was given as one JSON line on stdout, then exits 0."""

from __future__ import annotations

import json

import rclpy
from rclpy.node import Node


def main() -> None:
    rclpy.init()
    node = Node("param_dump", automatically_declare_parameters_from_overrides=True)
    dump = {name: [parameter.type_.name, parameter.value] for name, parameter in node._parameters.items()}
    dump["__fully_qualified_name"] = ["STRING", node.get_fully_qualified_name()]
    print(json.dumps(dump, sort_keys=True), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
