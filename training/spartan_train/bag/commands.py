"""The desk subcommands of ``spartan-bag``: ``write`` (synthetic or recorded drives into a
rosbag2) and ``eval`` (a bag through the node's pipeline offline, scored against captions).

They register with the vehicle's ``spartan-bag`` through the entry-point group
``spartan_ros.bag_commands`` (see ``spartan_ros.bag.cli``).
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from spartan_ros.bag.cli import Command
from spartan_train.bag.write import COMPRESSED_FORMATS, ENCODINGS, STORAGES, WriteConfig, write_bag


def _size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1920x1080, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def _seconds_to_ns(text: str) -> int:
    """Exact ns of a decimal seconds string (a float would lose ~100 ns at 1.7e9 s)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"start time must be a finite number >= 0, got {text}")
    return int((value * 1_000_000_000).to_integral_value())


# --- write ----------------------------------------------------------------------------------


def add_write_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True,
                   help="dataset root (images/, poses/, config/)")
    p.add_argument("--seq", action="append", required=True, dest="seqs", metavar="SEQ",
                   help="sequence to write; repeat for several (played one after another)")
    p.add_argument("--out", type=Path, required=True, help="bag folder to create (must not exist)")
    p.add_argument("--storage", choices=sorted(STORAGES), default="sqlite3")
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--odom-topic", default="/odom")
    p.add_argument("--odom-rate", type=float, default=50.0, help="odometry rate in Hz")
    p.add_argument("--encoding", choices=ENCODINGS, default="rgb8")
    p.add_argument("--start-time", type=_seconds_to_ns, default=_seconds_to_ns("1700000000.0"),
                   metavar="SECONDS", help="stamp of the first frame (Unix seconds)")
    p.add_argument("--gap", type=float, default=5.0, metavar="SECONDS",
                   help="time between the end of one sequence and the start of the next")
    p.add_argument("--compressed", nargs="?", const="png", choices=COMPRESSED_FORMATS,
                   default=None, help="also write sensor_msgs/CompressedImage on "
                   "<image-topic>/compressed (png unless jpeg is given)")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--frame-rate", type=float, default=None, metavar="HZ",
                   help="camera rate (default: one image per data frame, 10 Hz); between two "
                   "data frames the camera repeats the latest")
    p.add_argument("--size", type=_size, default=None, metavar="WxH",
                   help="resize every image to this size, e.g. 1920x1080")
    p.add_argument("--no-raw", dest="raw", action="store_false",
                   help="write only <image-topic>/compressed (needs --compressed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_write(args: argparse.Namespace) -> int:
    cfg = WriteConfig(
        data=args.data,
        seqs=args.seqs,
        out=args.out,
        storage=args.storage,
        image_topic=args.image_topic,
        odom_topic=args.odom_topic,
        odom_rate=args.odom_rate,
        encoding=args.encoding,
        start_time_ns=args.start_time,
        gap_s=args.gap,
        compressed=args.compressed,
        jpeg_quality=args.jpeg_quality,
        frame_rate=args.frame_rate,
        size=args.size,
        raw=args.raw,
        progress=not args.quiet,
    )
    summary = write_bag(cfg)
    span = (summary.end_ns - summary.start_ns) * 1e-9
    print(f"wrote {summary.out} ({summary.storage}, {span:.2f} s):")
    for topic, n in summary.counts.items():
        print(f"  {topic}  {n}")
    print(f"captions: {summary.captions} ({summary.windows} windows)")
    return 0


# --- eval -----------------------------------------------------------------------------------


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", type=Path, help="rosbag2 folder with captions.json (spartan-bag write)")
    p.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR",
                   help="exported model directory (spartan-export)")
    p.add_argument("--split", choices=("val", "train", "all"), default="val",
                   help="annotated windows to query (default val)")
    p.add_argument("--stride-frames", type=int, default=6, metavar="N",
                   help="store a segment every N sampled frames (the node's stride_frames)")
    p.add_argument("--top-k", type=int, default=5,
                   help="results kept per query in the report; ranks go to max(top-k, 10)")
    p.add_argument("--min-overlap", type=float, default=0.5, metavar="F",
                   help="a result is correct when it covers this share of the annotated span")
    p.add_argument("--out", type=Path, default=Path("bag_eval"),
                   help="output directory (default ./bag_eval)")
    p.add_argument("--memory", type=Path, default=None, metavar="PATH",
                   help="build the memory in this new SQLite file (default: RAM only)")
    p.add_argument("--image-topic", default=None,
                   help="sensor_msgs/Image or CompressedImage topic (default: captions.json's)")
    p.add_argument("--odom-topic", default=None,
                   help="nav_msgs/Odometry topic (default: captions.json's)")
    p.add_argument("--examples", type=int, default=4, help="example queries in the report")
    p.add_argument("--batch-size", type=int, default=8, help="frames encoded per inference call")
    p.add_argument("--encode-every", type=int, default=1, metavar="K",
                   help="encode every K-th sampled frame (the node's encode_every)")
    p.add_argument("--providers", nargs="+", default=["cpu"], metavar="PROVIDER",
                   help="ONNX Runtime providers in order of preference (cpu, cuda, tensorrt)")
    p.add_argument("--questions", type=Path, default=None, metavar="FILE",
                   help="free-text questions to score (YAML/JSON list of text, or of text + "
                   "facts); default: the built-in list when the bag carries the drive's facts")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_eval(args: argparse.Namespace) -> int:
    # Imported here: onnxruntime, evo and matplotlib are not needed by the other tools.
    from spartan_ros.memory.store import MemoryFileError
    from spartan_train.bag.evaluate import BagEvalConfig, evaluate_bag, summary_lines
    from spartan_train.evaluate.questions import load_questions

    try:
        questions = None if args.questions is None else tuple(load_questions(args.questions))
    except ValueError as e:
        print(f"spartan-bag eval: error: {e}", file=sys.stderr)
        return 2
    cfg = BagEvalConfig(
        bag=args.bag,
        model=args.model,
        split=args.split,
        stride_frames=args.stride_frames,
        top_k=args.top_k,
        out=args.out,
        memory=args.memory,
        image_topic=args.image_topic,
        odom_topic=args.odom_topic,
        min_overlap=args.min_overlap,
        examples=args.examples,
        providers=tuple(args.providers),
        batch_size=args.batch_size,
        encode_every=args.encode_every,
        progress=not args.quiet,
        questions=questions,
    )
    try:
        results, paths, timings = evaluate_bag(cfg)
    except (ValueError, MemoryFileError, OSError) as e:  # bag, captions, model, memory file
        print(f"spartan-bag eval: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(results, timings)))
    print(f"wrote {paths['results']} and {paths['html']}")
    return 0


WRITE = Command("write", "write dataset sequences into a rosbag2 (images, odometry, "
                "captions.json)", add_write_arguments, run_write)
EVAL = Command("eval", "replay a bag offline into the memory, query its captions, report "
               "recall and trajectory errors", add_eval_arguments, run_eval)
