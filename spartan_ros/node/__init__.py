"""The ROS 2 node: a thin shell that wires topics and services to the spartan_ros library."""
