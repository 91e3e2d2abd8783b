"""The last query's results as RViz markers: one line per path, coloured by rank, with a label."""

from __future__ import annotations

from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from spartan_ros.memory.service import Match

NAMESPACE = "spartan_matches"


def rank_color(rank: int, count: int) -> ColorRGBA:
    """Best = green, worst = red, blending through yellow."""
    f = rank / max(count - 1, 1)
    return ColorRGBA(r=min(1.0, 2.0 * f), g=min(1.0, 2.0 * (1.0 - f)), b=0.1, a=1.0)


def matches_markers(matches: list[Match], stamp) -> MarkerArray:
    """DELETEALL (clears the previous answer), then a LINE_STRIP and a TEXT label per match."""
    out = MarkerArray()
    clear = Marker(action=Marker.DELETEALL, ns=NAMESPACE)
    out.markers.append(clear)
    for m in matches:
        color = rank_color(m.rank, len(matches))
        line = Marker(ns=NAMESPACE, id=2 * m.rank, type=Marker.LINE_STRIP, action=Marker.ADD,
                      color=color, lifetime=Duration())
        line.header.frame_id = m.frame_id
        line.header.stamp = stamp
        line.pose.orientation.w = 1.0
        line.scale.x = 0.5  # line width, metres
        line.points = [Point(x=float(p[1]), y=float(p[2]), z=float(p[3])) for p in m.poses]
        label = Marker(ns=NAMESPACE, id=2 * m.rank + 1, type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, color=color, lifetime=Duration())
        label.header = line.header
        first = m.poses[0]
        label.pose.position = Point(x=float(first[1]), y=float(first[2]), z=float(first[3]) + 2.0)
        label.pose.orientation.w = 1.0
        label.scale.z = 1.5  # text height, metres
        label.text = f"#{m.rank + 1} {m.score:.2f} (id {m.id})"
        out.markers += [line, label]
    return out
