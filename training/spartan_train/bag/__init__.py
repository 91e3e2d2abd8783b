"""Desk bag tools: write drives into a rosbag2 and evaluate a bag offline through the node's
pipeline. They plug into the vehicle's ``spartan-bag`` command (see ``commands.py``)."""

from spartan_train.bag.write import (
    CAPTIONS_FILE,
    WriteConfig,
    WriteSummary,
    plan_bag,
    read_captions,
    write_bag,
)

__all__ = ["CAPTIONS_FILE", "WriteConfig", "WriteSummary", "plan_bag", "read_captions", "write_bag"]
