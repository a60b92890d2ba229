"""rosbag2 bags (MCAP storage): writing that survives a crash, recovery, info, reading."""
