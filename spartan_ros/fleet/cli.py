"""spartan-fleet: every vehicle's memory in one Milvus store.

spartan-fleet push car7.db --uri http://fleet:19530 --vehicle car7
spartan-fleet query "a fallen tree by a crossing" --uri http://fleet:19530 --model MODEL_DIR
spartan-fleet query "the gas station" --uri fleet.db --model MODEL_DIR --vehicle car7 \\
    --since 1700000000 --near 120,-40 --radius 50
spartan-fleet query "turning left at the lights" --uri fleet.db --model MODEL_DIR \\
    --trajectory planned_path.tum
spartan-fleet status --uri http://fleet:19530

--uri is a Milvus server or cluster (http://host:19530) or a local file (Milvus Lite).
--trajectory reads a TUM file (one pose per line: t x y z qx qy qz qw; # starts a comment), as
spartan_query does; a path without timing (every t equal) is timed at --trajectory-speed m/s.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from spartan_ros.answers import format_answer, match_dict, read_tum
from spartan_ros.memory.milvus_store import (
    Connection,
    FleetUnavailable,
    MilvusSegmentStore,
    connect,
    read_meta,
)
from spartan_ros.memory.store import MemoryFileError, SegmentStore


def _connection(args: argparse.Namespace) -> Connection:
    return Connection(uri=args.uri, token=args.token, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                      tls_key=args.tls_key, tls_server_name=args.tls_server_name)


def _push(args: argparse.Namespace) -> int:
    from spartan_ros.fleet.sync import push

    conn = _connection(args)
    conn.check()  # settings that cannot work fail before the memory file is read
    report = push(args.memory, conn, args.vehicle, batch_size=args.batch_size,
                  progress=not args.quiet)
    print(f"{args.memory}: {report.total} segments, {report.already} already in the fleet, "
          f"{report.sent} sent to {report.collection} as vehicle {args.vehicle!r}")
    return 0


def _near(text: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--near wants x,y or x,y,z, got {text!r}") from exc
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--near wants x,y or x,y,z, got {text!r}")
    return (values[0], values[1], values[2] if len(values) == 3 else 0.0)


def _query(args: argparse.Namespace) -> int:
    from spartan_ros.memory.service import MemoryService, ServiceConfig
    from spartan_ros.query import Query, QueryError, validate_query
    from spartan_ros.runtime.engine import Engine

    query = Query(text=args.text, top_k=args.top_k, since_ns=int(args.since * 1e9),
                  until_ns=int(args.until * 1e9), near=args.near or (0.0, 0.0, 0.0),
                  radius=args.radius, min_score=args.min_score, scope="fleet",
                  vehicle_id=args.vehicle, trajectory=args.trajectory,
                  trajectory_speed=args.trajectory_speed)
    conn = _connection(args)
    conn.check()  # before loading the model: settings that cannot work fail at once
    try:
        validate_query(query)
        engine = Engine(args.model, providers=tuple(args.providers))
        with MilvusSegmentStore(conn, engine.model_hash, engine.embed_dim,
                                head=engine.fusion_head) as fleet:
            # The node's own query path (text or trajectory encoding, untimed paths timed at
            # the trajectory speed, filters) with the fleet store as its fleet scope; its own
            # memory is an empty one in RAM, never asked.
            own = SegmentStore(None, engine.model_hash, engine.embed_dim,
                               head=engine.fusion_head)
            with own:
                result = MemoryService(engine, own, ServiceConfig(), fleet=fleet).query(query)
    except QueryError as exc:
        answer: dict[str, Any] = {"success": False, "message": str(exc), "candidates": 0,
                                  "segments": []}
        print(json.dumps(answer) if args.json else format_answer(answer, args.text))
        return 1
    message = "; ".join([f"{len(result.matches)} of {result.candidates} candidates",
                         *result.notes])
    answer = {"success": True, "message": message, "candidates": result.candidates,
              "segments": [match_dict(m) for m in result.matches]}
    print(json.dumps(answer) if args.json else format_answer(answer, args.text))
    return 0


def _status(args: argparse.Namespace) -> int:
    client = connect(_connection(args))  # checks the TLS settings; errors name the URI
    try:
        names = sorted(n for n in client.list_collections() if n.startswith("spartan_"))
        if not names:
            print(f"{args.uri}: no spartan_ros collections")
        for name in names:
            meta = read_meta(client.describe_collection(name))
            client.load_collection(name)
            per: dict[str, int] = {}
            it = client.query_iterator(name, batch_size=2000, filter="",
                                       output_fields=["vehicle_id"])
            while page := it.next():
                for row in page:
                    per[row["vehicle_id"]] = per.get(row["vehicle_id"], 0) + 1
            it.close()
            print(f"{name}: model {meta.get('model_hash', '?')} (embed_dim "
                  f"{meta.get('embed_dim', '?')}), {sum(per.values())} segments")
            for vehicle, n in sorted(per.items()):
                print(f"  {vehicle or '(no vehicle id)'}: {n}")
    finally:
        client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spartan-fleet", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--uri", required=True,
                        help="http(s)://host:19530 (server or cluster) or a file (Milvus Lite)")
    common.add_argument("--token", default="", help="'user:password' or an API key")
    common.add_argument("--tls-ca", default="", help="CA certificate (PEM); set = use TLS")
    common.add_argument("--tls-cert", default="", help="client certificate, mutual TLS")
    common.add_argument("--tls-key", default="", help="client key, mutual TLS")
    common.add_argument("--tls-server-name", default="")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("push", parents=[common], help="copy a vehicle's memory file")
    p.add_argument("memory", help="the vehicle's SQLite memory file")
    p.add_argument("--vehicle", required=True, help="the vehicle's id (its segments' key)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    q = sub.add_parser("query", parents=[common], help="ask every vehicle's memory")
    q.add_argument("text")
    q.add_argument("--model", required=True, help="exported model directory (encodes the text)")
    q.add_argument("--providers", nargs="+", default=["cuda", "cpu"])
    q.add_argument("--top-k", type=int, default=5)
    q.add_argument("--vehicle", default="", help="only this vehicle's segments")
    q.add_argument("--since", type=float, default=0.0, help="seconds (stamp), 0 = unbounded")
    q.add_argument("--until", type=float, default=0.0, help="seconds (stamp), 0 = unbounded")
    q.add_argument("--near", type=_near, default=None, metavar="X,Y")
    q.add_argument("--radius", type=float, default=0.0, help="metres around --near")
    q.add_argument("--min-score", type=float, default=0.0)
    q.add_argument("--trajectory", type=read_tum, default=None, metavar="TUM_FILE",
                   help="motion to match (>= 2 poses, TUM rows 't x y z qx qy qz qw'); "
                        "default: each segment's own")
    q.add_argument("--trajectory-speed", type=float, default=0.0, metavar="M_PER_S",
                   help="speed for a trajectory without stamps (0 = 5 m/s, the node's default)")
    q.add_argument("--json", action="store_true", help="print the answer as JSON")
    sub.add_parser("status", parents=[common], help="collections and segments per vehicle")
    args = parser.parse_args(argv)
    try:
        return {"push": _push, "query": _query, "status": _status}[args.command](args)
    except (FleetUnavailable, MemoryFileError, ValueError) as exc:
        print(f"spartan-fleet {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
