"""rclpy nodes, message conversions, the topic table, bag recorder and replayer, and the launcher."""
