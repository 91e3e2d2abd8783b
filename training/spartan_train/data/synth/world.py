"""A procedural 3D town: a road grid, a top-down ground texture and flat-shaded primitives.

World frame: x east, y north, z up, metres. Every town of a data set shares one road ``Grid`` (so a
route driven in one town can be driven in another, which makes "moves alike, looks different"
pairs); what stands beside the roads differs per town.

Road cross-section (distances from a road's centre line): two lanes per direction, inner lane
centre 1.75, outer 5.25, a parking strip 7.0..9.2 (curb), sidewalk 9.2..12.0, lots behind. Traffic
drives on the right. Around each grid node: a zebra crossing 9.7..12.7 and a stop line at 13.2.

Geometry kept for rendering (all numpy arrays, built once per town):
- ``ground``: RGB top-down texture of everything flat (asphalt, markings, sidewalks, grass, ...);
- quads: planar 4-vertex faces (boxes, roofs, windows) with a base colour and an owner object;
- circles: screen-facing discs (tree crowns, traffic-light lenses, lamp glows);
- objects: owners with a bounding box, used for culling, painter's ordering and "what is in view".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

# small things vanish beyond these distances (a few pixels at 160x120, mostly hidden anyway)
DRAW_DISTANCE = {"car": 90.0, "street lamp": 90.0, "traffic light": 130.0, "tree": 170.0}
LANES = (1.75, 5.25)  # inner, outer lane centre offsets to the right of the centre line
ROAD_HALF = 9.2  # curb: lanes 0..7, parking strip 7..9.2
SIDEWALK = 12.0  # outer edge of the sidewalk
CROSSWALK = (9.7, 12.7)  # zebra between these distances from the node centre
STOP_LINE = 13.2  # distance of the stop line from the node centre
GROUND_RES = 0.125  # metres per ground-texture pixel
OUTER = 60.0  # depth of the built ring outside the outermost roads

# name -> RGB; names are what captions say.
BUILDING_COLOURS = {
    "glass": [
        ("blue glass", (70, 105, 140)),
        ("dark glass", (55, 62, 75)),
        ("teal glass", (60, 115, 115)),
        ("silver glass", (150, 160, 172)),
    ],
    "office": [
        ("grey concrete", (150, 150, 148)),
        ("beige", (196, 184, 155)),
        ("white", (215, 213, 205)),
        ("sand-coloured", (190, 165, 120)),
    ],
    "brick": [
        ("red brick", (150, 68, 48)),
        ("brown brick", (115, 72, 52)),
        ("dark red brick", (112, 45, 38)),
        ("orange brick", (176, 98, 60)),
    ],
    "house": [
        ("white", (228, 226, 218)),
        ("cream", (226, 211, 170)),
        ("light blue", (165, 185, 205)),
        ("pale yellow", (225, 208, 130)),
        ("light green", (170, 195, 150)),
        ("pink", (220, 170, 165)),
    ],
}
ROOF_COLOURS = [("brown", (95, 60, 45)), ("dark grey", (70, 70, 75)), ("red", (150, 55, 45))]
CAR_COLOURS = [
    ("red", (175, 30, 30)),
    ("white", (225, 225, 225)),
    ("black", (30, 30, 34)),
    ("silver", (165, 168, 172)),
    ("blue", (40, 70, 160)),
    ("yellow", (215, 180, 40)),
    ("green", (45, 110, 60)),
    ("grey", (100, 100, 105)),
    ("orange", (210, 110, 30)),
]
GAS_BRANDS = [
    ("red", (200, 30, 35)),
    ("green", (20, 140, 70)),
    ("yellow", (235, 190, 20)),
    ("blue", (30, 80, 190)),
]
SEASONS = {
    "summer": [(60, 110, 45), (75, 125, 50), (50, 95, 40)],
    "autumn": [(190, 110, 35), (200, 150, 40), (160, 70, 30), (110, 120, 40)],
    "spring": [(110, 160, 70), (95, 150, 60), (215, 170, 190)],
}
STYLES = {  # block type weights per town style
    "downtown": {"glass": 5, "office": 4, "brick": 2, "park": 1, "parking": 1},
    "mixed": {"glass": 1, "office": 3, "brick": 4, "house": 2, "park": 1, "parking": 1},
    "residential": {"house": 6, "brick": 2, "park": 2, "parking": 1},
}


@dataclass(frozen=True)
class Grid:
    """Road centre lines: north-south roads at x = xs, east-west roads at y = ys."""

    xs: np.ndarray
    ys: np.ndarray

    def node(self, i: int, j: int) -> np.ndarray:
        return np.array([self.xs[i], self.ys[j]], dtype=np.float64)

    def has_node(self, i: int, j: int) -> bool:
        return 0 <= i < len(self.xs) and 0 <= j < len(self.ys)


def make_grid(rng: np.random.Generator, nx: int = 6, ny: int = 6) -> Grid:
    """Block lengths of 72..96 m: room for a lane change between two intersections."""
    xs = np.concatenate([[0.0], np.cumsum(np.round(rng.uniform(72, 96, nx - 1) * 2) / 2)])
    ys = np.concatenate([[0.0], np.cumsum(np.round(rng.uniform(72, 96, ny - 1) * 2) / 2)])
    return Grid(xs, ys)


@dataclass
class Town:
    town_id: int
    style: str
    season: str
    grid: Grid
    ground: np.ndarray  # uint8 [Hm, Wm, 3] RGB, row = (y - origin_y) / res
    origin: tuple[float, float]
    grain: np.ndarray  # float32 [512, 512]: ground grain, tiled over the world by the renderer
    # quads
    q_verts: np.ndarray  # float64 [Nq, 4, 3]
    q_normal: np.ndarray  # float64 [Nq, 3]
    q_colour: np.ndarray  # float32 [Nq, 3] base RGB
    q_obj: np.ndarray  # int32 [Nq]
    q_parent: np.ndarray  # int32 [Nq]: face a detail (window) lies on, -1 for faces
    q_glow: np.ndarray  # bool [Nq]: lit at night (windows)
    # circles
    c_centre: np.ndarray  # float64 [Nc, 3]
    c_radius: np.ndarray  # float64 [Nc]
    c_colour: np.ndarray  # float32 [Nc, 3]
    c_obj: np.ndarray  # int32 [Nc]
    c_facing: np.ndarray  # float64 [Nc, 3]; zero = seen from anywhere
    c_light: np.ndarray  # int32 [Nc]: traffic light index, -1 if not a lens
    c_lamp: np.ndarray  # int8 [Nc]: 0 red, 1 yellow, 2 green lens
    c_glow: np.ndarray  # bool [Nc]: lit at night (lamps)
    # objects
    o_min: np.ndarray  # float64 [No, 3]
    o_max: np.ndarray  # float64 [No, 3]
    o_kind: list[str]
    o_desc: list[str]  # singular noun phrase ending in its noun, e.g. "tall glass office tower"
    o_colour: list[str]  # colour word for captions ("" if none)
    o_group: np.ndarray  # int32 [No]: building/gas station id several chunks share
    o_far: np.ndarray  # float64 [No]: not drawn beyond this distance (small things)
    # traffic lights: the grid node and the axis of the approach they control ("ns" / "ew")
    lights: list[tuple[int, int, str]] = field(default_factory=list)
    gas_stations: list[tuple[float, float]] = field(default_factory=list)

    def to_ground_px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x - self.origin[0]) / GROUND_RES, (y - self.origin[1]) / GROUND_RES


class _Builder:
    """Accumulates primitives and objects, then freezes them into a ``Town``."""

    def __init__(self) -> None:
        self.quads: list[tuple[Any, None, tuple, int, int, bool]] = []
        self.circles: list[tuple] = []
        self.objects: list[tuple[np.ndarray, np.ndarray, str, str, int, str]] = []
        self.groups = 0

    def new_group(self) -> int:
        self.groups += 1
        return self.groups - 1

    def new_object(self, lo, hi, kind: str, desc: str, group: int = -1, colour: str = "") -> int:
        if group < 0:
            group = self.new_group()
        self.objects.append(
            (np.asarray(lo, float), np.asarray(hi, float), kind, desc, group, colour)
        )
        return len(self.objects) - 1

    def quad(self, verts, colour, obj: int, parent: int = -1, glow: bool = False) -> int:
        self.quads.append((verts, None, tuple(colour), obj, parent, glow))
        return len(self.quads) - 1

    def circle(self, centre, radius, colour, obj, facing=(0, 0, 0), light=-1, lamp=-1, glow=False):
        self.circles.append(
            (
                np.asarray(centre, float),
                radius,
                tuple(colour),
                obj,
                np.asarray(facing, float),
                light,
                lamp,
                glow,
            )
        )

    def box(self, lo, hi, colour, obj: int, skip=(), top_colour=None) -> dict[str, int]:
        """Axis-aligned box faces (no bottom); ``skip`` names faces to omit (w, e, s, n, top)."""
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        faces = {
            "s": [(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)],
            "e": [(x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)],
            "n": [(x1, y1, z0), (x0, y1, z0), (x0, y1, z1), (x1, y1, z1)],
            "w": [(x0, y1, z0), (x0, y0, z0), (x0, y0, z1), (x0, y1, z1)],
            "top": [(x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)],
        }
        out = {}
        for name, verts in faces.items():
            if name in skip:
                continue
            c = top_colour if (name == "top" and top_colour is not None) else colour
            out[name] = self.quad(verts, c, obj)
        return out

    def freeze(self, **kw) -> Town:
        q = self.quads
        c = self.circles
        o = self.objects
        verts = np.array([x[0] for x in q], dtype=np.float64).reshape(-1, 4, 3)
        normal = np.cross(verts[:, 1] - verts[:, 0], verts[:, 2] - verts[:, 0])
        # a triangle given as a quad may repeat its first two vertices
        other = np.cross(verts[:, 2] - verts[:, 0], verts[:, 3] - verts[:, 0])
        small = np.linalg.norm(normal, axis=1) < 1e-12
        normal[small] = other[small]
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        return Town(
            q_verts=verts,
            q_normal=normal,
            q_colour=np.array([x[2] for x in q], dtype=np.float32).reshape(-1, 3),
            q_obj=np.array([x[3] for x in q], dtype=np.int32),
            q_parent=np.array([x[4] for x in q], dtype=np.int32),
            q_glow=np.array([x[5] for x in q], dtype=bool),
            c_centre=np.array([x[0] for x in c]).reshape(-1, 3),
            c_radius=np.array([x[1] for x in c], dtype=np.float64),
            c_colour=np.array([x[2] for x in c], dtype=np.float32).reshape(-1, 3),
            c_obj=np.array([x[3] for x in c], dtype=np.int32),
            c_facing=np.array([x[4] for x in c]).reshape(-1, 3),
            c_light=np.array([x[5] for x in c], dtype=np.int32),
            c_lamp=np.array([x[6] for x in c], dtype=np.int8),
            c_glow=np.array([x[7] for x in c], dtype=bool),
            o_min=np.array([x[0] for x in o]).reshape(-1, 3),
            o_max=np.array([x[1] for x in o]).reshape(-1, 3),
            o_kind=[x[2] for x in o],
            o_desc=[x[3] for x in o],
            o_colour=[x[5] for x in o],
            o_group=np.array([x[4] for x in o], dtype=np.int32),
            o_far=np.array([DRAW_DISTANCE.get(x[2], 1e9) for x in o], dtype=np.float64),
            **kw,
        )


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _vary(rng: np.random.Generator, colour, amount: float = 12.0) -> tuple[float, ...]:
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in colour)


# ---------------------------------------------------------------------------------------------
# ground texture


GRASS = (82, 122, 58)
ASPHALT = (72, 72, 76)
SIDEWALK_C = (160, 156, 148)
CURB = (185, 182, 175)
WHITE = (228, 228, 222)
YELLOW = (222, 182, 45)
PAVING = (124, 121, 114)


class _Ground:
    """Top-down texture of everything flat, painted in order (later polygons cover earlier)."""

    def __init__(self, grid: Grid, rng: np.random.Generator) -> None:
        margin = ROAD_HALF + OUTER + 8.0  # beyond: the renderer's border colour (grass)
        self.x0 = float(grid.xs[0] - margin)
        self.y0 = float(grid.ys[0] - margin)
        w = int(np.ceil((grid.xs[-1] - grid.xs[0] + 2 * margin) / GROUND_RES))
        h = int(np.ceil((grid.ys[-1] - grid.ys[0] + 2 * margin) / GROUND_RES))
        self.img = np.full((h, w, 3), GRASS, np.uint8)
        self.rng = rng
        self.pending: list[np.ndarray] = []
        self.colour: tuple[int, ...] = ()
        self.k = 16.0 / GROUND_RES

    def poly(self, pts, colour) -> None:
        c = tuple(int(v) for v in colour)
        if c != self.colour:
            self.flush()
            self.colour = c
        p = np.asarray(pts, dtype=np.float64)
        self.pending.append(np.round((p - (self.x0, self.y0)) * self.k).astype(np.int32))

    def flush(self) -> None:
        # one call per polygon: fillPoly with several polygons would XOR their overlaps
        for pts in self.pending:
            cv2.fillConvexPoly(self.img, pts, self.colour, cv2.LINE_8, shift=4)
        self.pending = []

    def rect(self, x0, y0, x1, y1, colour) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour)

    def oriented(self, centre, d, along: tuple[float, float], across: tuple[float, float], colour):
        """Rectangle in a road frame: ``along`` / ``across`` ranges along d and its right normal."""
        cx, cy = float(centre[0]), float(centre[1])
        dx, dy = float(d[0]), float(d[1])
        nx, ny = dy, -dx
        a0, a1 = along
        b0, b1 = across
        self.poly(
            [
                (cx + dx * a0 + nx * b0, cy + dy * a0 + ny * b0),
                (cx + dx * a1 + nx * b0, cy + dy * a1 + ny * b0),
                (cx + dx * a1 + nx * b1, cy + dy * a1 + ny * b1),
                (cx + dx * a0 + nx * b1, cy + dy * a0 + ny * b1),
            ],
            colour,
        )

    def finish(self) -> np.ndarray:
        self.flush()
        return self.img


def _paint_roads(g: _Ground, grid: Grid) -> None:
    xs, ys = grid.xs, grid.ys
    x_lo, x_hi, y_lo, y_hi = xs[0], xs[-1], ys[0], ys[-1]
    # sidewalks first (a wide band), asphalt over them
    for x in xs:
        g.rect(x - SIDEWALK, y_lo - SIDEWALK, x + SIDEWALK, y_hi + SIDEWALK, SIDEWALK_C)
    for y in ys:
        g.rect(x_lo - SIDEWALK, y - SIDEWALK, x_hi + SIDEWALK, y + SIDEWALK, SIDEWALK_C)
    for x in xs:
        g.rect(
            x - ROAD_HALF - 0.15,
            y_lo - ROAD_HALF - 0.15,
            x + ROAD_HALF + 0.15,
            y_hi + ROAD_HALF + 0.15,
            CURB,
        )
    for y in ys:
        g.rect(
            x_lo - ROAD_HALF - 0.15,
            y - ROAD_HALF - 0.15,
            x_hi + ROAD_HALF + 0.15,
            y + ROAD_HALF + 0.15,
            CURB,
        )
    for x in xs:
        g.rect(x - ROAD_HALF, y_lo - ROAD_HALF, x + ROAD_HALF, y_hi + ROAD_HALF, ASPHALT)
    for y in ys:
        g.rect(x_lo - ROAD_HALF, y - ROAD_HALF, x_hi + ROAD_HALF, y + ROAD_HALF, ASPHALT)
    # markings on each segment between two nodes, in both directions
    for axis, lines, cross in (("ns", xs, ys), ("ew", ys, xs)):
        for c in lines:
            for k in range(len(cross) - 1):
                a, b = cross[k], cross[k + 1]
                if axis == "ns":
                    p0, d = np.array([c, a]), np.array([0.0, 1.0])
                else:
                    p0, d = np.array([a, c]), np.array([1.0, 0.0])
                length = b - a
                s0, s1 = STOP_LINE, length - STOP_LINE
                # double yellow centre line
                g.oriented(p0, d, (s0, s1), (-0.22, -0.08), YELLOW)
                g.oriented(p0, d, (s0, s1), (0.08, 0.22), YELLOW)
                # dashed lane dividers at +-3.5 (3 m dash, 6 m gap)
                s = s0 + 2.0
                while s + 3.0 < s1 - 2.0:
                    g.oriented(p0, d, (s, s + 3.0), (3.42, 3.58), WHITE)
                    g.oriented(p0, d, (s, s + 3.0), (-3.58, -3.42), WHITE)
                    s += 9.0
                # solid edge lines between lanes and parking strip
                g.oriented(p0, d, (s0, s1), (6.95, 7.08), WHITE)
                g.oriented(p0, d, (s0, s1), (-7.08, -6.95), WHITE)
    # zebra crossings and stop lines on every approach of every node
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            node = np.array([x, y])
            for step in ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)):
                if not grid.has_node(i + int(step[0]), j + int(step[1])):
                    continue
                dv = np.array(step)
                # the crossing lies on the road leaving the node towards that neighbour
                for k in range(13):
                    b = -ROAD_HALF + 0.35 + k * 1.4
                    g.oriented(node, dv, CROSSWALK, (b, b + 0.7), WHITE)
                # stop line for traffic arriving from there (driving along -step, on its right)
                g.oriented(node, dv, (STOP_LINE - 0.4, STOP_LINE), (-7.0, -0.1), WHITE)


# ---------------------------------------------------------------------------------------------
# buildings and street furniture


@dataclass
class _Lot:
    """A rectangle behind the sidewalks to fill; ``fronts`` are the sides that face a road."""

    x0: float
    y0: float
    x1: float
    y1: float
    fronts: tuple[str, ...]


def _building(b: _Builder, rng, kind: str, x0, y0, x1, y1, height, face: str, group_desc) -> None:
    """A building on footprint [x0,x1]x[y0,y1] whose street face is ``face`` (s/e/n/w).

    Split into chunks of at most ~8 m along the street face so that painter's ordering against
    trees and cars on the sidewalk stays right; faces between chunks are omitted.
    """
    name, colour = group_desc
    colour = _vary(rng, colour, 8)
    group = b.new_group()
    along_x = face in ("s", "n")
    lo_a, hi_a = (x0, x1) if along_x else (y0, y1)
    n_chunks = max(1, int(np.ceil((hi_a - lo_a) / 8.0)))
    edges = np.linspace(lo_a, hi_a, n_chunks + 1)
    desc = _building_phrase(kind, name, height)
    roof = _pick(rng, ROOF_COLOURS) if kind == "house" else None
    floor_h = {"glass": 3.6, "office": 3.4, "brick": 3.2, "house": 2.8}[kind]
    lit = rng.random(200) < 0.45  # which windows are lit at night
    for k in range(n_chunks):
        if along_x:
            lo, hi = (edges[k], y0, 0.0), (edges[k + 1], y1, height)
            skip = {"top"} | ({"w"} if k > 0 else set()) | ({"e"} if k < n_chunks - 1 else set())
        else:
            lo, hi = (x0, edges[k], 0.0), (x1, edges[k + 1], height)
            skip = {"top"} | ({"s"} if k > 0 else set()) | ({"n"} if k < n_chunks - 1 else set())
        zmax = height + (2.2 if roof else 0.0)
        obj = b.new_object(lo, (hi[0], hi[1], zmax), "building", desc, group, name)
        faces = b.box(lo, hi, colour, obj, skip=skip)
        for fname, qi in faces.items():
            _windows(b, rng, kind, qi, fname, lo, hi, floor_h, obj, lit, is_front=fname == face)
        if roof is not None:
            _gable(b, lo, hi, along_x, roof[1], obj)


def _building_phrase(kind: str, colour_name: str, height: float) -> str:
    if kind == "glass":
        return (
            f"tall {colour_name} office tower" if height > 30 else f"modern {colour_name} building"
        )
    if kind == "office":
        size = "high-rise" if height > 22 else "multi-storey"
        return f"{size} {colour_name} building"
    if kind == "brick":
        return f"{colour_name} building" if height > 9 else f"small {colour_name} house"
    return f"{colour_name} house"


def _windows(b: _Builder, rng, kind, qi, fname, lo, hi, floor_h, obj, lit, is_front) -> None:
    """Window details on face ``qi`` (drawn just after it, only when it is seen from near)."""
    if fname == "top":
        return
    (x0, y0, _), (x1, y1, z1) = lo, hi
    eps = 0.06
    if fname == "s":
        p, u, n = np.array([x0, y0 - eps]), np.array([1.0, 0.0]), x1 - x0
    elif fname == "n":
        p, u, n = np.array([x1, y1 + eps]), np.array([-1.0, 0.0]), x1 - x0
    elif fname == "e":
        p, u, n = np.array([x1 + eps, y0]), np.array([0.0, 1.0]), y1 - y0
    else:
        p, u, n = np.array([x0 - eps, y1]), np.array([0.0, -1.0]), y1 - y0
    width = float(n)

    def rect(a0, a1, z0, zt, colour, glow):
        pts = [(*(p + u * a0), z0), (*(p + u * a1), z0), (*(p + u * a1), zt), (*(p + u * a0), zt)]
        b.quad(pts, colour, obj, parent=qi, glow=glow)

    floors = max(1, int(z1 // floor_h))
    win = (40, 48, 58)
    k = 0
    if kind in ("glass", "office"):
        # one horizontal band per floor: spandrels on glass, window strips on concrete
        step = 1 if floors <= 12 else 2
        band = (205, 210, 215) if kind == "glass" else win
        for f in range(0, floors, step):
            z0 = f * floor_h + (0.15 if kind == "glass" else 0.9)
            zt = z0 + (0.55 if kind == "glass" else 1.5)
            rect(0.3, width - 0.3, z0, min(zt, z1 - 0.2), band, kind == "office" and lit[k % 200])
            k += 1
        return
    bays = max(1, int(width // 2.9))
    bay = width / bays
    for f in range(floors):
        for j in range(bays):
            a = j * bay
            if kind == "house" and f == 0 and j == bays // 2 and is_front:
                rect(a + bay * 0.3, a + bay * 0.7, 0.0, 2.1, (95, 60, 40), False)  # door
                continue
            z0 = f * floor_h + 0.9
            rect(a + bay * 0.28, a + bay * 0.72, z0, z0 + 1.3, win, bool(lit[k % 200]))
            k += 1


def _gable(b: _Builder, lo, hi, along_x: bool, colour, obj: int) -> None:
    """A pitched roof whose ridge runs along the street."""
    (x0, y0, _), (x1, y1, z) = lo, hi
    r = 2.2
    if along_x:
        ym = (y0 + y1) / 2
        b.quad([(x0, y0, z), (x1, y0, z), (x1, ym, z + r), (x0, ym, z + r)], colour, obj)
        b.quad([(x1, y1, z), (x0, y1, z), (x0, ym, z + r), (x1, ym, z + r)], colour, obj)
        b.quad([(x0, y1, z), (x0, y0, z), (x0, ym, z + r), (x0, ym, z + r)], colour, obj)
        b.quad([(x1, y0, z), (x1, y1, z), (x1, ym, z + r), (x1, ym, z + r)], colour, obj)
    else:
        xm = (x0 + x1) / 2
        b.quad([(x1, y0, z), (x1, y1, z), (xm, y1, z + r), (xm, y0, z + r)], colour, obj)
        b.quad([(x0, y1, z), (x0, y0, z), (xm, y0, z + r), (xm, y1, z + r)], colour, obj)
        b.quad([(x0, y0, z), (x1, y0, z), (xm, y0, z + r), (xm, y0, z + r)], colour, obj)
        b.quad([(x1, y1, z), (x0, y1, z), (xm, y1, z + r), (xm, y1, z + r)], colour, obj)


def _fill_lot(b: _Builder, g: _Ground, rng, lot: _Lot, kind: str) -> None:
    """Buildings along each road-facing side of a lot (residential lots get front yards)."""
    dx, dy = lot.x1 - lot.x0, lot.y1 - lot.y0
    palette = BUILDING_COLOURS[kind]
    # yards for houses, paving between city buildings
    g.rect(lot.x0, lot.y0, lot.x1, lot.y1, _vary(rng, GRASS if kind == "house" else PAVING, 6))
    heights = {"glass": (24, 70), "office": (12, 32), "brick": (7, 16), "house": (5.5, 7.5)}[kind]
    widths = {"glass": (14, 26), "office": (12, 22), "brick": (8, 16), "house": (8, 12)}[kind]
    setback = {"glass": (0.5, 2.0), "office": (0.5, 2.0), "brick": (0.2, 1.0), "house": (3, 5)}[
        kind
    ]
    max_depth = min(dx, dy) / 2 - 1.0
    # corners: the s/n sides take the full width, the w/e sides only what lies between
    taken = {"s": 0.0, "n": 0.0}
    for face in ("s", "n", "w", "e"):
        if face not in lot.fronts:
            continue
        if face in ("s", "n"):
            a0, a1 = lot.x0, lot.x1
        else:
            a0 = lot.y0 + taken["s"]
            a1 = lot.y1 - taken["n"]
        a = a0 + rng.uniform(0, 3)
        depth_used = 0.0
        while a < a1 - 6:
            w = min(rng.uniform(*widths), a1 - a)
            if w < 6:
                break
            depth = min(rng.uniform(8, 18) if kind != "house" else rng.uniform(7, 10), max_depth)
            sb = rng.uniform(*setback)
            height = rng.uniform(*heights)
            if kind == "glass" and rng.random() < 0.3:
                height = rng.uniform(14, 24)
            desc = _pick(rng, palette)
            if face == "s":
                fp = (a, lot.y0 + sb, a + w, lot.y0 + sb + depth)
            elif face == "n":
                fp = (a, lot.y1 - sb - depth, a + w, lot.y1 - sb)
            elif face == "w":
                fp = (lot.x0 + sb, a, lot.x0 + sb + depth, a + w)
            else:
                fp = (lot.x1 - sb - depth, a, lot.x1 - sb, a + w)
            _building(b, rng, kind, *fp, height, face, desc)
            depth_used = max(depth_used, sb + depth)
            gap = (
                rng.uniform(0.0, 1.0) if kind in ("glass", "office", "brick") else rng.uniform(3, 7)
            )
            a += w + gap
        if face in ("s", "n"):
            taken[face] = depth_used + 1.0


def _tree(b: _Builder, rng, x: float, y: float, season: str, big: bool = False) -> None:
    h = rng.uniform(6.5, 10) if big else rng.uniform(4.5, 8)
    r = rng.uniform(2.2, 3.6) if big else rng.uniform(1.5, 2.6)
    colour = _vary(rng, _pick(rng, SEASONS[season]), 10)
    obj = b.new_object((x - r, y - r, 0.0), (x + r, y + r, h), "tree", "tree")
    t = 0.18 if not big else 0.3
    b.box((x - t, y - t, 0.0), (x + t, y + t, h - r), (92, 68, 48), obj, skip={"top"})
    b.circle((x, y, h - r), r, colour, obj)
    light = tuple(min(255.0, c * 1.18 + 8) for c in colour)
    b.circle((x - r * 0.25, y, h - r * 0.7), r * 0.6, light, obj)


def _parked_car(b: _Builder, rng, centre, d) -> None:
    name, colour = _pick(rng, CAR_COLOURS)
    colour = _vary(rng, colour, 6)
    c = np.asarray(centre)
    half = (2.15, 0.9) if d[0] != 0 else (0.9, 2.15)
    lo = (c[0] - half[0], c[1] - half[1])
    hi = (c[0] + half[0], c[1] + half[1])
    obj = b.new_object((*lo, 0.0), (*hi, 1.45), "car", f"{name} car", colour=name)
    b.box((lo[0] + 0.1, lo[1] + 0.1, 0.0), (hi[0] - 0.1, hi[1] - 0.1, 0.35), (25, 25, 28), obj)
    b.box((*lo, 0.35), (*hi, 0.95), colour, obj)
    cabin = (1.1, 0.8) if d[0] != 0 else (0.8, 1.1)
    glass = (50, 60, 72)
    b.box(
        (c[0] - cabin[0], c[1] - cabin[1], 0.95),
        (c[0] + cabin[0], c[1] + cabin[1], 1.45),
        glass,
        obj,
        top_colour=colour,
    )


def _street_lamp(b: _Builder, x, y, towards) -> None:
    obj = b.new_object(
        (x - 1.8, y - 1.8, 0.0), (x + 1.8, y + 1.8, 7.2), "street lamp", "street lamp"
    )
    grey = (80, 84, 88)
    b.box((x - 0.1, y - 0.1, 0.0), (x + 0.1, y + 0.1, 7.0), grey, obj)
    hx, hy = x + towards[0] * 1.5, y + towards[1] * 1.5
    b.box(
        (min(x, hx) - 0.08, min(y, hy) - 0.08, 6.85),
        (max(x, hx) + 0.08, max(y, hy) + 0.08, 7.0),
        grey,
        obj,
    )
    b.circle((hx, hy, 6.75), 0.28, (235, 225, 190), obj, glow=True)


def _traffic_light(b: _Builder, node, d, light_index: int) -> None:
    """Pole on the far right corner for traffic moving along ``d``; lenses face that traffic."""
    node = np.asarray(node)
    d = np.asarray(d, float)
    n = np.array([d[1], -d[0]])  # right of the approaching traffic
    base = node + d * (CROSSWALK[1] + 1.2) + n * (ROAD_HALF + 1.0)
    head = node + d * (CROSSWALK[1] + 1.2) + n * 4.0
    lo = np.minimum(base, head) - 0.6
    hi = np.maximum(base, head) + 0.6
    obj = b.new_object((*lo, 0.0), (*hi, 6.6), "traffic light", "traffic light")
    dark = (45, 48, 50)
    b.box((base[0] - 0.14, base[1] - 0.14, 0.0), (base[0] + 0.14, base[1] + 0.14, 6.2), dark, obj)
    alo, ahi = np.minimum(base, head) - 0.07, np.maximum(base, head) + 0.07
    b.box((alo[0], alo[1], 5.95), (ahi[0], ahi[1], 6.1), dark, obj)
    t = np.abs(d) * 0.2 + np.abs(n) * 0.22
    b.box(
        (head[0] - t[0], head[1] - t[1], 4.8),
        (head[0] + t[0], head[1] + t[1], 5.95),
        (40, 40, 30),
        obj,
    )
    for lamp, z in enumerate((5.62, 5.37, 5.12)):
        p = head - d * 0.23
        b.circle(
            (p[0], p[1], z), 0.11, (0, 0, 0), obj, facing=(*(-d), 0.0), light=light_index, lamp=lamp
        )


def _gas_station(b: _Builder, g: _Ground, rng, lot: _Lot, face: str) -> tuple[float, float]:
    """Forecourt, canopy on pillars, pumps, a shop and a price sign on one side of a lot."""
    brand_name, brand = _pick(rng, GAS_BRANDS)
    desc = "gas station"
    group = b.new_group()
    w, dep = 30.0, 26.0
    if face in ("s", "n"):
        cx = rng.uniform(lot.x0 + w / 2 + 1, max(lot.x0 + w / 2 + 1, lot.x1 - w / 2 - 1))
        y_edge = lot.y0 if face == "s" else lot.y1
        sgn = 1 if face == "s" else -1
        fx0, fx1 = cx - w / 2, cx + w / 2
        fy0, fy1 = sorted((y_edge, y_edge + sgn * dep))
        centre = np.array([cx, y_edge + sgn * 10.0])
        along = np.array([1.0, 0.0])
    else:
        cy = rng.uniform(lot.y0 + w / 2 + 1, max(lot.y0 + w / 2 + 1, lot.y1 - w / 2 - 1))
        x_edge = lot.x0 if face == "w" else lot.x1
        sgn = 1 if face == "w" else -1
        fy0, fy1 = cy - w / 2, cy + w / 2
        fx0, fx1 = sorted((x_edge, x_edge + sgn * dep))
        centre = np.array([x_edge + sgn * 10.0, cy])
        along = np.array([0.0, 1.0])
    g.rect(fx0, fy0, fx1, fy1, (150, 150, 146))
    across = np.array([along[1], along[0]])
    half_a, half_c = 8.0, 5.0
    lo = centre - along * half_a - across * half_c
    hi = centre + along * half_a + across * half_c
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    obj = b.new_object((*lo, 4.6), (*hi, 5.6), "gas station", desc, group, brand_name)
    b.box((*lo, 4.6), (*hi, 5.6), brand, obj, top_colour=(220, 220, 220))
    b.quad(
        [(lo[0], lo[1], 4.6), (lo[0], hi[1], 4.6), (hi[0], hi[1], 4.6), (hi[0], lo[1], 4.6)],
        (235, 235, 230),
        obj,
        glow=True,
    )
    for sa in (-6.0, 6.0):
        for sc in (-3.0, 3.0):
            p = centre + along * sa + across * sc
            o = b.new_object(
                (p[0] - 0.3, p[1] - 0.3, 0),
                (p[0] + 0.3, p[1] + 0.3, 4.6),
                "gas station",
                desc,
                group,
                brand_name,
            )
            b.box(
                (p[0] - 0.25, p[1] - 0.25, 0.0), (p[0] + 0.25, p[1] + 0.25, 4.6), (225, 225, 225), o
            )
    for sa in (-3.0, 3.0):
        p = centre + along * sa
        o = b.new_object(
            (p[0] - 0.5, p[1] - 0.5, 0),
            (p[0] + 0.5, p[1] + 0.5, 1.7),
            "gas station",
            desc,
            group,
            brand_name,
        )
        t = along * 0.45 + across * 0.3
        b.box(
            (p[0] - t[0], p[1] - t[1], 0.0),
            (p[0] + t[0], p[1] + t[1], 1.7),
            brand,
            o,
            top_colour=(230, 230, 230),
        )
    shop_c = centre + across * (sgn * 0 + 11.0) * (1 if face in ("s", "w") else -1)
    s_lo = shop_c - along * 7 - across * 3.5
    s_hi = shop_c + along * 7 + across * 3.5
    s_lo, s_hi = np.minimum(s_lo, s_hi), np.maximum(s_lo, s_hi)
    o = b.new_object((*s_lo, 0), (*s_hi, 4.0), "gas station", desc, group, brand_name)
    faces = b.box((*s_lo, 0.0), (*s_hi, 4.0), (232, 230, 225), o, skip={"top"})
    for fname, qi in faces.items():
        _windows(
            b,
            rng,
            "office",
            qi,
            fname,
            (*s_lo, 0.0),
            (*s_hi, 4.0),
            4.0,
            o,
            np.ones(200, bool),
            False,
        )
    # tall price sign at the road
    sp = centre - across * (7.5 if face in ("s", "w") else -7.5) + along * (half_a + 3)
    o = b.new_object(
        (sp[0] - 1.2, sp[1] - 1.2, 0),
        (sp[0] + 1.2, sp[1] + 1.2, 8.0),
        "gas station",
        desc,
        group,
        brand_name,
    )
    b.box((sp[0] - 0.15, sp[1] - 0.15, 0.0), (sp[0] + 0.15, sp[1] + 0.15, 5.5), (90, 90, 95), o)
    b.box((sp[0] - 1.1, sp[1] - 1.1, 5.5), (sp[0] + 1.1, sp[1] + 1.1, 8.0), brand, o)
    return float(centre[0]), float(centre[1])


def _parking_lot(b: _Builder, g: _Ground, rng, lot: _Lot) -> None:
    g.rect(lot.x0, lot.y0, lot.x1, lot.y1, (88, 88, 92))
    # stalls in rows along x
    y = lot.y0 + 3.0
    while y + 5.5 < lot.y1 - 3.0:
        x = lot.x0 + 3.0
        while x + 2.6 < lot.x1 - 3.0:
            g.rect(x, y, x + 0.12, y + 5.0, WHITE)
            if rng.random() < 0.55:
                _parked_car(b, rng, (x + 1.3, y + 2.5), (0.0, 1.0))
            x += 2.6
        y += 12.0


def _park(b: _Builder, g: _Ground, rng, lot: _Lot, season: str) -> None:
    g.rect(lot.x0, lot.y0, lot.x1, lot.y1, _vary(rng, (70, 125, 55), 6))
    if rng.random() < 0.5:  # a pond
        cx, cy = (lot.x0 + lot.x1) / 2, (lot.y0 + lot.y1) / 2
        ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        rx, ry = (lot.x1 - lot.x0) * 0.2, (lot.y1 - lot.y0) * 0.15
        g.poly(np.stack([cx + rx * np.cos(ang), cy + ry * np.sin(ang)], 1), (60, 95, 130))
    for _ in range(int(rng.integers(10, 22))):
        x = rng.uniform(lot.x0 + 3, lot.x1 - 3)
        y = rng.uniform(lot.y0 + 3, lot.y1 - 3)
        _tree(b, rng, x, y, season, big=True)


GAS_STATIONS = 2  # per town, by default


def build_town(town_id: int, grid: Grid, rng: np.random.Generator,
               gas_stations: int = GAS_STATIONS) -> Town:
    """Everything beside the roads of ``grid``; deterministic given ``rng``'s state.
    ``gas_stations`` inner lots (at most as many as there are) hold a gas station."""
    style = _pick(rng, sorted(STYLES))
    season = _pick(rng, ["summer", "summer", "autumn", "spring"])
    b = _Builder()
    g = _Ground(grid, rng)
    xs, ys = grid.xs, grid.ys
    _paint_roads(g, grid)

    # lots: the blocks between roads plus a ring outside the outermost roads
    lots: list[tuple[_Lot, bool]] = []
    for i in range(len(xs) - 1):
        for j in range(len(ys) - 1):
            lots.append(
                (
                    _Lot(
                        xs[i] + SIDEWALK,
                        ys[j] + SIDEWALK,
                        xs[i + 1] - SIDEWALK,
                        ys[j + 1] - SIDEWALK,
                        ("s", "n", "w", "e"),
                    ),
                    True,
                )
            )
    e = SIDEWALK + OUTER
    lots.append((_Lot(xs[0] - e, ys[0] - e, xs[-1] + e, ys[0] - SIDEWALK, ("n",)), False))
    lots.append((_Lot(xs[0] - e, ys[-1] + SIDEWALK, xs[-1] + e, ys[-1] + e, ("s",)), False))
    lots.append(
        (_Lot(xs[0] - e, ys[0] - SIDEWALK, xs[0] - SIDEWALK, ys[-1] + SIDEWALK, ("e",)), False)
    )
    lots.append(
        (_Lot(xs[-1] + SIDEWALK, ys[0] - SIDEWALK, xs[-1] + e, ys[-1] + SIDEWALK, ("w",)), False)
    )

    weights = STYLES[style]
    kinds = sorted(weights)
    p = np.array([weights[k] for k in kinds], float)
    p /= p.sum()
    inner = [k for k, (_, is_inner) in enumerate(lots) if is_inner]
    gas_lots = set(rng.choice(inner, size=min(gas_stations, len(inner)), replace=False).tolist())
    stations = []
    for k, (lot, is_inner) in enumerate(lots):
        kind = (
            kinds[int(rng.choice(len(kinds), p=p))]
            if is_inner
            else _pick(rng, [x for x in kinds if x in BUILDING_COLOURS])
        )
        if k in gas_lots:
            face = _pick(rng, list(lot.fronts))
            stations.append(_gas_station(b, g, rng, lot, face))
            # the rest of the lot, behind the forecourt
            rest = tuple(f for f in lot.fronts if f != face)
            cut = {"s": (0, 27, 0, 0), "n": (0, 0, 0, 27), "w": (27, 0, 0, 0), "e": (0, 0, 27, 0)}
            c0, c1, c2, c3 = cut[face]
            kind = kind if kind in BUILDING_COLOURS else "brick"
            _fill_lot(
                b, g, rng, _Lot(lot.x0 + c0, lot.y0 + c1, lot.x1 - c2, lot.y1 - c3, rest), kind
            )
        elif kind == "park":
            _park(b, g, rng, lot, season)
        elif kind == "parking":
            _parking_lot(b, g, rng, lot)
        else:
            _fill_lot(b, g, rng, lot, kind)
        if not is_inner:  # a tree line behind the outer ring closes the horizon
            _outer_trees(b, rng, lot, season)

    _street_furniture(b, rng, grid, style, season)
    lights: list[tuple[int, int, str]] = []
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            for d in ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)):
                # traffic arriving from the opposite neighbour, moving along d
                if not grid.has_node(i - int(d[0]), j - int(d[1])):
                    continue
                if (
                    sum(grid.has_node(i + a, j + c) for a, c in ((1, 0), (-1, 0), (0, 1), (0, -1)))
                    < 3
                ):
                    continue  # corners have no lights
                _traffic_light(b, (x, y), d, len(lights))
                lights.append((i, j, "ew" if d[1] == 0 else "ns"))
    return b.freeze(
        town_id=town_id,
        style=style,
        season=season,
        grid=grid,
        ground=g.finish(),
        origin=(g.x0, g.y0),
        lights=lights,
        gas_stations=stations,
        grain=rng.integers(-7, 8, size=(512, 512)).astype(np.float32),
    )


def _outer_trees(b: _Builder, rng, lot: _Lot, season: str) -> None:
    """Big trees along the far edge of an outer lot."""
    dx, dy = lot.x1 - lot.x0, lot.y1 - lot.y0
    front = lot.fronts[0]
    n = int(max(dx, dy) // 9)
    for k in range(n):
        t = (k + rng.uniform(0.2, 0.8)) / n
        depth = rng.uniform(2, 8)
        if front == "n":
            x, y = lot.x0 + t * dx, lot.y0 + depth
        elif front == "s":
            x, y = lot.x0 + t * dx, lot.y1 - depth
        elif front == "e":
            x, y = lot.x0 + depth, lot.y0 + t * dy
        else:
            x, y = lot.x1 - depth, lot.y0 + t * dy
        _tree(b, rng, x, y, season, big=True)


def _street_furniture(b: _Builder, rng, grid: Grid, style: str, season: str) -> None:
    """Trees and lamps on sidewalks, cars in parking strips, along every road segment."""
    xs, ys = grid.xs, grid.ys
    tree_p = {"downtown": 0.35, "mixed": 0.6, "residential": 0.85}[style]
    car_p = {"downtown": 0.45, "mixed": 0.55, "residential": 0.45}[style]
    for axis, lines, cross in (("ns", xs, ys), ("ew", ys, xs)):
        for c in lines:
            for k in range(len(cross) - 1):
                a, bnd = cross[k], cross[k + 1]
                for side in (-1.0, 1.0):
                    d = (0.0, 1.0) if axis == "ns" else (1.0, 0.0)

                    def at(s: float, lat: float, c=c, side=side, axis=axis) -> tuple[float, float]:
                        off = c + side * lat
                        return (off, s) if axis == "ns" else (s, off)

                    if rng.random() < tree_p:
                        s = a + SIDEWALK + 4 + rng.uniform(0, 4)
                        while s < bnd - SIDEWALK - 4:
                            _tree(b, rng, *at(s, 10.6), season)
                            s += rng.uniform(8, 13)
                    if rng.random() < 0.6:
                        s = a + 20 + rng.uniform(0, 10)
                        while s < bnd - 20:
                            x, y = at(s, 9.7)
                            tw = (-side, 0.0) if axis == "ns" else (0.0, -side)
                            _street_lamp(b, x, y, tw)
                            s += 30
                    if rng.random() < car_p:
                        s = a + 17 + rng.uniform(0, 5)
                        while s < bnd - 19:
                            if rng.random() < 0.7:
                                _parked_car(b, rng, at(s, 8.1), d)
                            s += rng.uniform(5.8, 8.0)
