"""Kinematic driving on the road grid: a lane-following path, then a speed profile over time.

The path is a chain of pieces (straight lane segments, 90-degree arcs at intersections, quintic
S-curves for lane changes). The speed follows a bicycle-model-like envelope: lateral acceleration
at most ``A_LAT`` on curves (so the yaw rate ``v * curvature`` stays under ``YAW_RATE_MAX``),
longitudinal acceleration in ``[-B_MAX, A_MAX]``, speed at most ``V_MAX``, and the car stops at the
stop line when its traffic light is red or turns yellow early enough. Sampled at ``FPS`` Hz.

Pose convention (written to the pose files): camera poses in the world frame (x east, y north,
z up); the camera body frame is x forward (the vehicle heading), y left, z up, so a heading of
``yaw`` radians (0 = east, counter-clockwise) is the quaternion ``[0, 0, sin(yaw/2), cos(yaw/2)]``
(scalar last). The camera sits ``CAM_HEIGHT`` m above the road, level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spartan_train.data.synth.world import LANES, STOP_LINE, Grid

FPS = 10.0
SUBSTEPS = 5
CAM_HEIGHT = 1.5
V_MAX = 14.0  # m/s (about 50 km/h)
A_MAX = 2.5  # m/s^2 speeding up
B_COMF = 2.2  # m/s^2 planned braking
B_STOP = 3.0  # m/s^2 hardest braking the driver accepts for a light turning yellow or red
B_MAX = 4.5  # m/s^2 hardest braking
A_LAT = 3.0  # m/s^2 on curves
YAW_RATE_MAX = 0.8  # rad/s; implied by A_LAT and the tightest curve, checked by the tests
R_LEFT, R_RIGHT = 11.0, 7.0  # turn radii (left turns cross the intersection wider)
YELLOW = 3.0  # s

TURNS = ("left", "straight", "right")


def _right(d: np.ndarray) -> np.ndarray:
    return np.array([d[1], -d[0]])


@dataclass
class Piece:
    kind: str  # straight | turn_left | turn_right | lane_change_left | lane_change_right
    s0: float
    length: float
    p0: np.ndarray  # start point
    d: np.ndarray  # road direction (straight, lane change); start tangent for arcs
    cruise: float  # speed limit on the piece
    lane0: int  # lane at the start (0 inner, 1 outer)
    lane1: int  # lane at the end
    lat: float = 0.0  # lane change: lateral shift, positive to the right
    centre: np.ndarray | None = None  # arcs
    radius: float = 0.0
    ang0: float = 0.0
    sign: int = 0  # arcs: +1 left (counter-clockwise), -1 right
    # lane changes: arc length -> distance along the road, so that speeds are true speeds
    s_tab: np.ndarray | None = None
    u_tab: np.ndarray | None = None


@dataclass
class Stop:
    s: float  # path position of the stop line
    node: tuple[int, int]
    axis: str  # "ns" or "ew": which phase of the node's light applies


@dataclass
class LightSchedule:
    """Fixed-time signals: per node a period, a north-south green time and an offset."""

    period: dict[tuple[int, int], float]
    green_ns: dict[tuple[int, int], float]
    offset: dict[tuple[int, int], float]

    def state(self, node: tuple[int, int], axis: str, t: float) -> str:
        period = self.period[node]
        g_ns = self.green_ns[node]
        tau = (t + self.offset[node]) % period
        if tau < g_ns:
            ns = "green"
        elif tau < g_ns + YELLOW:
            ns = "yellow"
        else:
            ns = "red"
        if axis == "ns":
            return ns
        if tau < g_ns + YELLOW:
            return "red"
        return "green" if tau < period - YELLOW else "yellow"


def make_schedule(grid: Grid, rng: np.random.Generator) -> LightSchedule:
    period, green, offset = {}, {}, {}
    for i in range(len(grid.xs)):
        for j in range(len(grid.ys)):
            p = float(rng.uniform(14.0, 24.0))
            period[(i, j)] = p
            green[(i, j)] = float(rng.uniform(0.35, 0.65) * (p - 2 * YELLOW))
            offset[(i, j)] = float(rng.uniform(0.0, p))
    return LightSchedule(period, green, offset)


@dataclass
class RoutePlan:
    """Where a drive starts and (optionally) what it does at its first intersection."""

    node: tuple[int, int]  # first intersection ahead
    d: tuple[float, float]  # driving direction (a unit axis vector)
    start_dist: float  # metres before the first node's centre
    lane: int  # 0 inner, 1 outer
    first_turn: str | None = None
    v0: float = 0.0  # initial speed


@dataclass
class Path:
    pieces: list[Piece]
    stops: list[Stop] = field(default_factory=list)
    turns: list[tuple[float, str]] = field(default_factory=list)  # (s at the node, turn)

    @property
    def length(self) -> float:
        last = self.pieces[-1]
        return last.s0 + last.length


def _valid_turns(grid: Grid, node: tuple[int, int], d: np.ndarray) -> list[str]:
    out = []
    for turn in TURNS:
        nd = {"left": -_right(d), "straight": d, "right": _right(d)}[turn]
        if grid.has_node(node[0] + int(round(nd[0])), node[1] + int(round(nd[1]))):
            out.append(turn)
    return out


def has_light(grid: Grid, node: tuple[int, int]) -> bool:
    """Lights stand at nodes with at least three roads (see world.build_town)."""
    i, j = node
    return sum(grid.has_node(i + a, j + b) for a, b in ((1, 0), (-1, 0), (0, 1), (0, -1))) >= 3


def build_path(
    grid: Grid,
    plan: RoutePlan,
    shared: np.random.Generator,
    own: np.random.Generator,
    min_length: float,
) -> Path:
    """Lane-level path from ``plan`` until it is at least ``min_length`` metres long.

    ``shared`` drives the first approach (identical for all drives of a family, so they coincide
    until they part), ``own`` everything after the first intersection.
    """
    node = plan.node
    d = np.array(plan.d, dtype=np.float64)
    lane = plan.lane
    pos = grid.node(*node) - d * plan.start_dist + _right(d) * LANES[lane]
    u = -plan.start_dist  # position along d relative to the node ahead
    s = 0.0
    pieces: list[Piece] = []
    path = Path(pieces)
    first = True
    seg_start = u  # where lane changes may begin on this segment

    def add(piece: Piece) -> None:
        nonlocal s
        pieces.append(piece)
        s += piece.length

    while s < min_length:
        rng = shared if first else own
        # draw every random number in a fixed order so that family members stay in step
        draws = rng.random(4)
        cruise = float(6.5 + 6.0 * draws[0])
        options = _valid_turns(grid, node, d)
        if first and plan.first_turn in options:
            turn = plan.first_turn
        else:
            weights = np.array(
                [{"left": 0.27, "straight": 0.46, "right": 0.27}[t] for t in options]
            )
            turn = options[int(np.searchsorted(np.cumsum(weights / weights.sum()), draws[1]))]
        if turn == "left":
            want = 0
        elif turn == "right":
            want = 1
        else:  # straight: sometimes change lane anyway (not on a family's shared approach)
            want = 1 - lane if (draws[2] < 0.3 and not first) else lane
        free_start = max(u, seg_start) + 1.0
        free_end = -STOP_LINE - 3.0
        room = free_end - free_start
        if want != lane and room < 14.0:
            # no room to change lanes: do what the current lane allows
            fits = [t for t in options if t == "straight" or (t == "left") == (lane == 0)]
            if fits:
                turn = "straight" if "straight" in fits else fits[0]
                want = lane
        if want != lane:
            length = float(np.clip(20.0 + 14.0 * draws[3], 14.0, max(14.0, room)))
            lc_start = max(free_start, free_start + (room - length) * (0.5 if first else draws[2]))
            if lc_start > u:
                add(Piece("straight", s, lc_start - u, pos.copy(), d.copy(), cruise, lane, lane))
                pos = pos + d * (lc_start - u)
                u = lc_start
            lat = LANES[want] - LANES[lane]
            kind = "lane_change_right" if lat > 0 else "lane_change_left"
            u_tab = np.linspace(0.0, length, 257)
            slope = lat * _smooth(u_tab / length)[1] / length
            ds = np.sqrt(1.0 + slope**2)
            s_tab = np.concatenate([[0.0], np.cumsum((ds[1:] + ds[:-1]) / 2 * np.diff(u_tab))])
            add(
                Piece(
                    kind,
                    s,
                    float(s_tab[-1]),
                    pos.copy(),
                    d.copy(),
                    cruise,
                    lane,
                    want,
                    lat=lat,
                    s_tab=s_tab,
                    u_tab=u_tab,
                )
            )
            pos = pos + d * length + _right(d) * lat
            u += length
            lane = want
        # up to the turn (or the node centre when going straight)
        u_turn = {"left": LANES[0] - R_LEFT, "right": -LANES[1] - R_RIGHT, "straight": 0.0}[turn]
        if has_light(grid, node):
            axis = "ew" if d[1] == 0 else "ns"
            path.stops.append(Stop(s + (-STOP_LINE - u), node, axis))
        if u_turn > u:
            add(Piece("straight", s, u_turn - u, pos.copy(), d.copy(), cruise, lane, lane))
            pos = pos + d * (u_turn - u)
            u = u_turn
        path.turns.append((s + (0.0 - u), turn))
        n = _right(d)
        if turn == "straight":
            nd = d
            u_exit = 0.0
        else:
            sign = 1 if turn == "left" else -1
            radius = R_LEFT if turn == "left" else R_RIGHT
            centre = pos - n * radius * sign
            ang0 = float(np.arctan2(pos[1] - centre[1], pos[0] - centre[0]))
            length = radius * np.pi / 2
            corner_speed = min(cruise, float(np.sqrt(A_LAT * radius)))
            add(
                Piece(
                    f"turn_{turn}",
                    s,
                    length,
                    pos.copy(),
                    d.copy(),
                    corner_speed,
                    lane,
                    lane,
                    centre=centre,
                    radius=radius,
                    ang0=ang0,
                    sign=sign,
                )
            )
            nd = -n if turn == "left" else n
            ang1 = ang0 + sign * np.pi / 2
            pos = centre + radius * np.array([np.cos(ang1), np.sin(ang1)])
            u_exit = (-LANES[0] if turn == "left" else LANES[1]) + radius
        next_node = (node[0] + int(round(nd[0])), node[1] + int(round(nd[1])))
        seg_len = float(np.abs(np.dot(grid.node(*next_node) - grid.node(*node), nd)))
        d = np.array(nd, dtype=np.float64)
        node = next_node
        u = u_exit - seg_len
        seg_start = -seg_len + STOP_LINE + 1.0
        first = False
    # a last straight so that the path always extends past the final turn
    add(Piece("straight", s, 40.0, pos.copy(), d.copy(), 8.0, lane, lane))
    return path


def _smooth(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quintic smoothstep and its first two derivatives on [0, 1]."""
    f = x**3 * (10 - 15 * x + 6 * x * x)
    f1 = 30 * x * x * (1 - x) ** 2
    f2 = 60 * x * (1 - x) * (1 - 2 * x)
    return f, f1, f2


def evaluate(path: Path, s: np.ndarray) -> dict[str, np.ndarray]:
    """Position, heading, curvature, piece index and cruise speed at path positions ``s``."""
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, path.length)
    starts = np.array([p.s0 for p in path.pieces])
    idx = np.clip(np.searchsorted(starts, s, side="right") - 1, 0, len(path.pieces) - 1)
    x = np.zeros_like(s)
    y = np.zeros_like(s)
    yaw = np.zeros_like(s)
    kappa = np.zeros_like(s)
    cruise = np.zeros_like(s)
    for k in np.unique(idx):
        p = path.pieces[int(k)]
        m = idx == k
        u = np.clip(s[m] - p.s0, 0.0, p.length)
        heading = float(np.arctan2(p.d[1], p.d[0]))
        cruise[m] = p.cruise
        if p.kind == "straight":
            x[m], y[m] = p.p0[0] + p.d[0] * u, p.p0[1] + p.d[1] * u
            yaw[m] = heading
        elif p.kind.startswith("lane_change"):
            assert p.s_tab is not None and p.u_tab is not None
            u = np.interp(u, p.s_tab, p.u_tab)  # along the road
            along = float(p.u_tab[-1])
            f, f1, f2 = _smooth(u / along)
            n = _right(p.d)
            x[m] = p.p0[0] + p.d[0] * u + n[0] * p.lat * f
            y[m] = p.p0[1] + p.d[1] * u + n[1] * p.lat * f
            slope = p.lat * f1 / along
            yaw[m] = heading - np.arctan(slope)  # a shift to the right turns clockwise
            kappa[m] = -(p.lat * f2 / along**2) / (1 + slope**2) ** 1.5
        else:
            assert p.centre is not None
            ang = p.ang0 + p.sign * u / p.radius
            x[m] = p.centre[0] + p.radius * np.cos(ang)
            y[m] = p.centre[1] + p.radius * np.sin(ang)
            yaw[m] = ang + p.sign * np.pi / 2
            kappa[m] = p.sign / p.radius
    return {"x": x, "y": y, "yaw": yaw, "kappa": kappa, "piece": idx, "cruise": cruise}


@dataclass
class Drive:
    """A sampled drive: ``n`` frames at ``FPS``."""

    t: np.ndarray  # [n] seconds
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray  # unwrapped, radians
    speed: np.ndarray  # m/s
    accel: np.ndarray  # m/s^2
    s: np.ndarray  # path position
    label: list[str]  # per-frame manoeuvre (piece kind, or "stopped")
    light: list[str | None]  # state of the light the car is heading for, if within 60 m
    stop_node: list[tuple[int, int] | None]
    lane: np.ndarray  # 0 inner, 1 outer (nearest)

    def poses(self) -> np.ndarray:
        """TUM rows ``[t, x, y, z, qx, qy, qz, qw]`` float64."""
        n = len(self.t)
        out = np.zeros((n, 8), dtype=np.float64)
        out[:, 0] = self.t
        out[:, 1] = self.x
        out[:, 2] = self.y
        out[:, 3] = CAM_HEIGHT
        out[:, 6] = np.sin(self.yaw / 2)
        out[:, 7] = np.cos(self.yaw / 2)
        return out


def drive(path: Path, schedule: LightSchedule, n_frames: int, v0: float) -> Drive:
    """Simulate the speed along ``path`` for ``n_frames`` frames (see the module docstring)."""
    ds = 0.25
    grid_s = np.arange(0.0, path.length + ds, ds)
    geo = evaluate(path, grid_s)
    v_curve = np.sqrt(A_LAT / np.maximum(np.abs(geo["kappa"]), 1e-6))
    v_lim = np.minimum(np.minimum(geo["cruise"], v_curve), V_MAX)
    for i in range(len(v_lim) - 2, -1, -1):  # brake ahead of curves
        v_lim[i] = min(v_lim[i], np.sqrt(v_lim[i + 1] ** 2 + 2 * B_COMF * ds))
    dt = 1.0 / FPS / SUBSTEPS
    s, v, t = 0.0, float(min(v0, v_lim[0])), 0.0
    k = 0
    stops = path.stops
    decision: dict[int, str] = {}
    rec_s, rec_v, rec_light, rec_node = [], [], [], []
    for _ in range(n_frames):
        while k < len(stops) and s > stops[k].s + 0.5:
            k += 1
        light = None
        node = None
        if k < len(stops) and stops[k].s - s < 60.0:
            light = schedule.state(stops[k].node, stops[k].axis, t)
            node = stops[k].node
        rec_s.append(s)
        rec_v.append(v)
        rec_light.append(light)
        rec_node.append(node)
        for _ in range(SUBSTEPS):
            while k < len(stops) and s > stops[k].s + 0.5:
                k += 1
            target = float(np.interp(s, grid_s, v_lim))
            if k < len(stops):
                dist = stops[k].s - 1.0 - s  # stop a metre before the line
                state = schedule.state(stops[k].node, stops[k].axis, t)
                if state == "green":
                    decision[k] = ""
                elif not decision.get(k):
                    # stop if that takes no harder braking than B_STOP, else drive on; keep the
                    # decision until the light turns green (no dithering on the stop line)
                    decision[k] = "stop" if v * v <= 2 * B_STOP * max(dist, 0.0) + 0.01 else "go"
                if decision.get(k) == "stop":
                    target = min(target, float(np.sqrt(2 * B_COMF * max(dist, 0.0))))
                    if dist <= 0.05:
                        target = 0.0
            dv = float(np.clip(8.0 * (target - v) * dt, -B_MAX * dt, A_MAX * dt))
            v = max(0.0, v + dv)
            s += v * dt
            t += dt
    s_arr = np.array(rec_s)
    v_arr = np.array(rec_v)
    geo_f = evaluate(path, s_arr)
    yaw = np.unwrap(geo_f["yaw"])
    accel = np.gradient(v_arr, 1.0 / FPS) if len(v_arr) > 1 else np.zeros_like(v_arr)
    labels = []
    for i, piece in enumerate(geo_f["piece"]):
        kind = path.pieces[int(piece)].kind
        labels.append("stopped" if v_arr[i] < 0.2 and kind == "straight" else kind)
    lane = np.zeros(len(s_arr), dtype=np.int64)
    for i, piece in enumerate(geo_f["piece"]):
        p = path.pieces[int(piece)]
        lane[i] = p.lane0 if s_arr[i] - p.s0 < p.length / 2 else p.lane1
    return Drive(
        t=np.arange(n_frames, dtype=np.float64) / FPS,
        x=geo_f["x"],
        y=geo_f["y"],
        yaw=yaw,
        speed=v_arr,
        accel=accel,
        s=s_arr,
        label=labels,
        light=rec_light,
        stop_node=rec_node,
        lane=lane,
    )
