"""Small real rclpy nodes the launcher tests start (`exec: module:ros_test_nodes.<name>`).

The tests put `tests/` on PYTHONPATH so the launcher and its children can import them.
"""
