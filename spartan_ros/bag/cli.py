"""``spartan-bag``: one command line for the bag tools, one subcommand per tool.

```
spartan-bag play BAG [--rate 1.0] [--clock [HZ]] [--loop] [--start-offset S] [--topics T ...] ...
spartan-bag write ...   # with the desk tools installed (spartan_train)
spartan-bag eval ...    # with the desk tools installed (spartan_train)
```

``play`` is part of the vehicle runtime. Other packages add subcommands through the entry-point
group ``spartan_ros.bag_commands``: each entry names a ``Command`` (name, help, add-arguments,
run). The desk tools register ``write`` and ``eval`` that way, so a vehicle install has one
``spartan-bag`` that simply lists fewer tools. Errors in the input print one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import NamedTuple

from spartan_ros import dds
from spartan_ros.bag.play import CLOCK_TOPIC, QOS_CHOICES, PlayConfig, play_bag

ENTRY_POINT_GROUP = "spartan_ros.bag_commands"


class Command(NamedTuple):
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --- play -----------------------------------------------------------------------------------


def add_play_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or mcap)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    p.add_argument("--clock", nargs="?", type=float, const=40.0, default=0.0, metavar="HZ",
                   help=f"publish {CLOCK_TOPIC} (40 Hz unless given) for nodes with use_sim_time")
    p.add_argument("--loop", action="store_true", help="play again from the start until SIGINT")
    p.add_argument("--restamp", action="store_true",
                   help="with --loop: shift the header stamps of every pass by the bag's length, "
                   "so a short bag plays as one continuous stream")
    p.add_argument("--start-offset", type=float, default=0.0, metavar="S",
                   help="skip the first S seconds of the bag")
    p.add_argument("--topics", nargs="+", default=None, metavar="TOPIC",
                   help="play only these topics")
    p.add_argument("--qos", choices=QOS_CHOICES, default="reliable",
                   help="reliable (default; matches reliable and best-effort subscribers) or "
                   "sensor (best effort, like a camera driver)")
    p.add_argument("--depth", type=int, default=100,
                   help="least publisher history depth per topic (the player keeps at least 5 s "
                        "of each topic at the playback rate, up to 256 MB)")
    p.add_argument("--wait-for-subscribers", type=int, default=1, metavar="N",
                   help="before playing, wait until every topic has N matched subscribers (0: no)")
    p.add_argument("--wait-timeout", type=float, default=5.0, metavar="S",
                   help="give up waiting for subscribers after S seconds and play anyway")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")


def run_play(args: argparse.Namespace) -> int:
    cfg = PlayConfig(
        bag=args.bag,
        rate=args.rate,
        clock_hz=args.clock,
        loop=args.loop,
        restamp=args.restamp,
        start_offset_s=args.start_offset,
        topics=args.topics,
        qos=args.qos,
        depth=args.depth,
        wait_for_subscribers=args.wait_for_subscribers,
        wait_timeout_s=args.wait_timeout,
        ros_args=args.ros_args,
    )
    # Images larger than Fast DDS's default shared-memory segment need the package's profile
    # in the publishing process (see spartan_ros.dds); a user's own set-up stays in charge.
    # Fast DDS reads it when the first participant is created; taken back afterwards, so a
    # process that plays a bag and then starts others does not hand it on unasked.
    profile = dds.profile_env()
    for path in profile.values():
        print(f"Fast DDS transport profile: {path} (set {dds.PROFILE_VARIABLE} to use your "
              "own)", file=sys.stderr, flush=True)
    doc_profile = os.environ.get(dds.PROFILE_VARIABLE) or profile.get(dds.PROFILE_VARIABLE)
    os.environ.update(profile)
    try:
        summary = play_bag(cfg)
    finally:
        for name in profile:
            os.environ.pop(name, None)
    doc = {**summary.as_dict(), "dds_profile": doc_profile or None}
    print(json.dumps(doc) if args.json else summary.table(), flush=True)
    return 0


# --- dispatch -------------------------------------------------------------------------------

PLAY = Command("play", "replay a rosbag2 into the live ROS graph", add_play_arguments, run_play)

# Tools that live in other packages, so `spartan-bag --help` can say how to get them.
OPTIONAL_COMMANDS = {
    "write": "spartan_train (the desk tools)",
    "eval": "spartan_train (the desk tools)",
}


def installed_commands() -> list[Command]:
    """``play`` plus every subcommand another installed package registers."""
    commands = [PLAY]
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        command = ep.load()
        if not isinstance(command, Command):
            raise TypeError(f"entry point {ep.value} is not a spartan_ros.bag.cli.Command")
        commands.append(command)
    return commands


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    commands = installed_commands() if commands is None else commands
    missing = sorted(set(OPTIONAL_COMMANDS) - {c.name for c in commands})
    epilog = "".join(f"'{name}' comes with {OPTIONAL_COMMANDS[name]}. " for name in missing)
    parser = argparse.ArgumentParser(
        prog="spartan-bag", description="rosbag2 tools of spartan_ros (no ros2 bag needed)",
        epilog=epilog or None,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything from --ros-args on belongs to rclpy (remappings, parameters, log levels).
    ros_args: list[str] = []
    if "--ros-args" in argv:
        cut = argv.index("--ros-args")
        argv, ros_args = argv[:cut], argv[cut + 1 :]
    commands = installed_commands()
    if argv and argv[0] in OPTIONAL_COMMANDS and argv[0] not in {c.name for c in commands}:
        print(f"spartan-bag: '{argv[0]}' is not installed here; it comes with "
              f"{OPTIONAL_COMMANDS[argv[0]]}", file=sys.stderr)
        return 1
    args = build_parser(commands).parse_args(argv)
    args.ros_args = ros_args
    try:
        return int(args.run(args))
    except ValueError as e:  # DatasetError, BagError and bad settings: a clear one-line message
        print(f"spartan-bag {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
