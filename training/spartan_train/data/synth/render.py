"""A small pinhole renderer for ``world.Town`` (numpy + OpenCV, no GPU, no depth buffer).

Per frame: a sky gradient with sun and clouds; the ground by casting each pixel row onto the
plane z = 0 and sampling the town's top-down texture (a mip level per row keeps far zebra
stripes from aliasing); then boxes and discs back to front (painter's algorithm over objects
sorted by the distance to their footprint), flat shaded, faded into the fog by distance.

The frame buffer is uint16 with 4 channels: RGB scaled by 257 and the id (object index + 1) of
the object drawn last at each pixel, so one fill call draws both the image and the "what is
where" buffer used to write captions. The camera is level (no pitch or roll), so the horizon is
the middle row and each ground row lies at one depth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from spartan_train.data.synth.world import GROUND_RES, Town

NEAR = 0.3
LOD = 70.0  # windows are drawn on faces nearer than this
SHIFT = 4  # sub-pixel bits for OpenCV's fill functions
SCALE = float(1 << SHIFT)


@dataclass(frozen=True)
class Camera:
    width: int = 160
    height: int = 120
    hfov_deg: float = 90.0
    cam_height: float = 1.5

    @property
    def fx(self) -> float:
        return self.width / 2 / np.tan(np.radians(self.hfov_deg) / 2)

    def scaled(self, k: int) -> Camera:
        return Camera(self.width * k, self.height * k, self.hfov_deg, self.cam_height)


@dataclass(frozen=True)
class Weather:
    name: str  # clear, overcast, dusk, night, fog, rain
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    fog: tuple[float, float, float]
    fog_dist: float  # metres at which 63% of a colour is fog
    ambient: float
    sun: float  # strength of directional light
    sun_az: float  # radians, 0 = east, counter-clockwise
    sun_el: float
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    night: bool = False
    rain: bool = False
    wet: float = 0.0  # darkens the road
    clouds: tuple[tuple[float, float, float, float], ...] = field(default_factory=tuple)


WEATHERS = ("clear", "overcast", "dusk", "night", "fog", "rain")


def make_weather(name: str, rng: np.random.Generator) -> Weather:
    """A weather preset with small random variations (sun direction, clouds, fog)."""
    az = float(rng.uniform(-np.pi, np.pi))

    def clouds(n: int, el=(0.04, 0.35)) -> tuple[tuple[float, float, float, float], ...]:
        out = []
        for _ in range(n):
            out.append(
                (
                    float(rng.uniform(-np.pi, np.pi)),
                    float(rng.uniform(*el)),
                    float(rng.uniform(0.08, 0.25)),
                    float(rng.uniform(0.3, 0.6)),
                )
            )
        return tuple(out)

    if name == "clear":
        return Weather(
            name,
            (55, 115, 200),
            (175, 205, 232),
            (185, 202, 220),
            float(rng.uniform(320, 480)),
            0.58,
            0.55,
            az,
            float(rng.uniform(0.5, 1.0)),
            clouds=clouds(int(rng.integers(0, 6))),
        )
    if name == "overcast":
        return Weather(
            name,
            (128, 134, 146),
            (186, 189, 195),
            (178, 181, 187),
            float(rng.uniform(200, 300)),
            0.80,
            0.12,
            az,
            0.8,
            (0.97, 0.98, 1.0),
            clouds=clouds(8, (0.05, 0.5)),
        )
    if name == "dusk":
        return Weather(
            name,
            (48, 58, 112),
            (238, 150, 92),
            (128, 104, 112),
            float(rng.uniform(220, 320)),
            0.36,
            0.40,
            az,
            float(rng.uniform(0.05, 0.15)),
            (1.08, 0.86, 0.74),
            night=True,
            clouds=clouds(int(rng.integers(2, 7))),
        )
    if name == "night":
        return Weather(
            name,
            (6, 9, 22),
            (28, 34, 56),
            (20, 24, 38),
            float(rng.uniform(110, 160)),
            0.20,
            0.05,
            az,
            0.6,
            (0.75, 0.82, 1.05),
            night=True,
        )
    if name == "fog":
        return Weather(
            name,
            (196, 198, 200),
            (206, 207, 208),
            (200, 201, 203),
            float(rng.uniform(32, 55)),
            0.78,
            0.1,
            az,
            0.6,
        )
    if name == "rain":
        return Weather(
            name,
            (96, 102, 112),
            (146, 150, 156),
            (138, 142, 148),
            float(rng.uniform(100, 150)),
            0.62,
            0.06,
            az,
            0.6,
            (0.92, 0.95, 1.0),
            rain=True,
            wet=0.22,
            clouds=clouds(6, (0.04, 0.4)),
        )
    raise ValueError(f"unknown weather {name!r}; expected one of {WEATHERS}")


LENS_ON = {0: (255, 40, 30), 1: (255, 190, 20), 2: (40, 240, 110)}
LENS_OFF = (38, 38, 36)
STATE_LAMP = {"red": 0, "yellow": 1, "green": 2}


def _clip_near(poly: np.ndarray) -> np.ndarray | None:
    """Clip a camera-space polygon ``[k, 3]`` to z >= NEAR (Sutherland-Hodgman, one plane)."""
    out = []
    k = len(poly)
    for i in range(k):
        a, b = poly[i], poly[(i + 1) % k]
        ina, inb = a[2] >= NEAR, b[2] >= NEAR
        if ina:
            out.append(a)
        if ina != inb:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if len(out) >= 3 else None


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[k], ends[k])`` over k, without a Python loop."""
    counts = ends - starts
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.cumsum(counts) + counts, counts)
    return np.arange(total, dtype=np.int64) + offsets


class Renderer:
    """Renders frames of one town under one weather (precomputes what does not move)."""

    def __init__(
        self, town: Town, weather: Weather, camera: Camera, supersample: int = 1, seed: int = 0
    ) -> None:
        self.town = town
        self.weather = weather
        self.out_camera = camera
        self.ss = max(1, int(supersample))
        self.cam = camera.scaled(self.ss)
        self.rng = np.random.default_rng(seed)  # rain streaks
        w, h = self.cam.width, self.cam.height
        self.fx = self.cam.fx
        self.cx, self.cy = w / 2, h / 2
        self.tan_half = np.tan(np.radians(self.cam.hfov_deg) / 2)
        tint = np.array(weather.tint, np.float32)
        sun = np.array(
            [
                np.cos(weather.sun_el) * np.cos(weather.sun_az),
                np.cos(weather.sun_el) * np.sin(weather.sun_az),
                np.sin(weather.sun_el),
            ]
        )
        # flat shading of every face, done once
        lam = weather.ambient + weather.sun * np.clip(town.q_normal @ sun, 0, None)
        # vertical faces facing away from the sun still get some sky light
        lam += 0.12 * (1 - np.abs(town.q_normal[:, 2]))
        q_col = town.q_colour * lam[:, None].astype(np.float32) * tint
        if weather.night:
            lit = town.q_glow
            glow = np.array((255, 214, 140) if weather.name == "night" else (250, 200, 130))
            q_col[lit] = glow * (0.85 if weather.name == "night" else 0.7)
        self.q_col = np.clip(q_col, 0, 255)
        c_col = town.c_colour * (weather.ambient + 0.55 * weather.sun) * tint
        if weather.night:
            c_col[town.c_glow] = (255, 236, 180)
        self.c_col = np.clip(c_col, 0, 255)
        self.fog = np.array(weather.fog, np.float32)
        self.far = min(420.0, weather.fog_dist * 4.0)
        n_obj = len(town.o_kind)
        self.q_start = np.searchsorted(town.q_obj, np.arange(n_obj), "left")
        self.q_end = np.searchsorted(town.q_obj, np.arange(n_obj), "right")
        self.c_start = np.searchsorted(town.c_obj, np.arange(n_obj), "left")
        self.c_end = np.searchsorted(town.c_obj, np.arange(n_obj), "right")
        self._build_sky()
        self._build_ground()

    # -- static parts ----------------------------------------------------------------------

    def _build_sky(self) -> None:
        w, h = self.cam.width, self.cam.height
        rows = np.arange(h, dtype=np.float32) + 0.5
        el = np.arctan2(self.cy - rows, self.fx)  # elevation of each row's centre
        a = np.clip(el / np.radians(40), 0, 1) ** 0.7
        top, hor = np.array(self.weather.sky_top), np.array(self.weather.sky_horizon)
        col = hor[None, :] * (1 - a[:, None]) + top[None, :] * a[:, None]
        self.sky = np.repeat(col[:, None, :], w, axis=1).astype(np.float32)

    def _build_ground(self) -> None:
        w, h = self.cam.width, self.cam.height
        first = int(np.floor(self.cy)) + 1 if self.cy == int(self.cy) else int(np.ceil(self.cy))
        self.g_row0 = first
        rows = np.arange(first, h, dtype=np.float64) + 0.5
        self.g_depth = self.cam.cam_height * self.fx / (rows - self.cy)
        self.g_ucoef = ((np.arange(w) + 0.5 - self.cx) / self.fx).astype(np.float64)
        # mip level per row from the pixel footprint (geometric mean of across and along)
        across = self.g_depth / self.fx
        along = self.g_depth**2 / (self.cam.cam_height * self.fx)
        foot = np.sqrt(across * along) / GROUND_RES
        self.g_level = np.clip(np.floor(np.log2(np.maximum(foot, 1e-6))), 0, 6).astype(int)
        self.g_grain = np.clip(1.5 - foot, 0.0, 1.0).astype(np.float32)[:, None]
        fog = 1 - np.exp(-self.g_depth / self.weather.fog_dist)
        self.g_fog = fog.astype(np.float32)[:, None, None]
        wet = 1.0 - self.weather.wet
        light = (self.weather.ambient + self.weather.sun * np.sin(self.weather.sun_el) + 0.1) * wet
        shade = np.full((len(rows), w, 1), light, np.float32)
        if self.weather.name == "night":  # headlights: a bright fan on the road ahead
            lateral = np.abs(self.g_ucoef[None, :] * self.g_depth[:, None])
            fan = np.exp(-((lateral / 3.0) ** 2)) * np.exp(-self.g_depth[:, None] / 22.0)
            shade[..., 0] += 0.9 * fan.astype(np.float32)
        shade = shade * np.array(self.weather.tint, np.float32)
        self.g_mul = (shade * (1 - self.g_fog)).astype(np.float32)  # colour = tex * mul + add
        self.g_add = (self.fog * self.g_fog).astype(np.float32)
        pyr = [self.town.ground]
        for _ in range(6):
            pyr.append(cv2.pyrDown(pyr[-1]))
        self.pyr = pyr
        self.border = tuple(int(c) for c in self.town.ground[0, 0])

    # -- per frame -------------------------------------------------------------------------

    def _sky(self, yaw: float) -> np.ndarray:
        sky = self.sky.copy()
        wth = self.weather
        fwd = np.array([np.cos(yaw), np.sin(yaw)])
        right = np.array([np.sin(yaw), -np.cos(yaw)])

        def project(az: float, el: float) -> tuple[float, float] | None:
            v = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az)])
            z = float(v @ fwd)
            if z <= 0.05:
                return None
            x = float(v @ right)
            return self.cx + self.fx * x / z, self.cy - self.fx * np.sin(el) / z

        if wth.clouds:
            layer = sky.copy()
            colour = (np.array(wth.sky_horizon) * 0.3 + 235 * 0.7) * np.array(wth.tint)
            if wth.night:
                colour = np.array(wth.sky_horizon) * 1.3
            drawn = False
            for az, el, size, flat in wth.clouds:
                p = project(az, el)
                if p is None:
                    continue
                axes = (max(1, int(self.fx * size * 1.6)), max(1, int(self.fx * size * flat)))
                cv2.ellipse(layer, (int(p[0]), int(p[1])), axes, 0, 0, 360, colour.tolist(), -1)
                drawn = True
            if drawn:
                cv2.addWeighted(layer, 0.45, sky, 0.55, 0, dst=sky)
        if wth.sun > 0.3 and not wth.night or wth.name == "dusk":
            p = project(wth.sun_az, wth.sun_el)
            if p is not None:
                r = max(2, int(self.fx * 0.04))
                centre = (int(p[0]), int(p[1]))
                layer = sky.copy()
                cv2.circle(layer, centre, r * 3, (255, 236, 200), -1)
                cv2.addWeighted(layer, 0.35, sky, 0.65, 0, dst=sky)
                cv2.circle(sky, centre, r, (255, 252, 235), -1)
        return sky

    def _ground(self, x: float, y: float, yaw: float) -> np.ndarray:
        c, s = np.cos(yaw), np.sin(yaw)
        # world point of each ground pixel: cam + depth * forward + lateral * right
        depth = self.g_depth[:, None]
        lateral = depth * self.g_ucoef[None, :]
        wx = x + c * depth + s * lateral
        wy = y + s * depth - c * lateral
        ox, oy = self.town.origin
        mx = ((wx - ox) / GROUND_RES).astype(np.float32)
        my = ((wy - oy) / GROUND_RES).astype(np.float32)
        out = np.empty((len(self.g_depth), self.cam.width, 3), np.uint8)
        levels = self.g_level
        start = 0
        while start < len(levels):
            end = start
            while end < len(levels) and levels[end] == levels[start]:
                end += 1
            k = int(levels[start])
            f = 1.0 / (1 << k)
            out[start:end] = cv2.remap(
                self.pyr[k],
                mx[start:end] * f,
                my[start:end] * f,
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=self.border,
            )
            start = end
        # fine grain in world coordinates (tiled), faded out where texels shrink below a pixel
        grain = cv2.remap(self.town.grain, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_WRAP)
        tex = out + (grain * self.g_grain)[..., None]
        return np.clip(tex * self.g_mul + self.g_add, 0.0, 255.0)

    def render(
        self, x: float, y: float, yaw: float, light_states: list[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """RGB ``uint8 [H, W, 3]`` and object ids ``uint16 [H*ss, W*ss]`` (0 = sky/ground).

        ``light_states[k]`` is "red" / "yellow" / "green" for traffic light ``k`` of the town.
        """
        town = self.town
        w, h = self.cam.width, self.cam.height
        zc = self.cam.cam_height
        img = np.empty((h, w, 3), np.float32)
        img[:] = self._sky(yaw)
        img[self.g_row0 :] = self._ground(x, y, yaw)
        buf = np.zeros((h, w, 4), np.uint16)
        buf[..., :3] = img * 257.0

        c, s = np.cos(yaw), np.sin(yaw)
        # objects: cull by footprint against the horizontal field of view
        lo, hi = town.o_min, town.o_max
        corners_x = np.stack([lo[:, 0], hi[:, 0], hi[:, 0], lo[:, 0]], 1) - x
        corners_y = np.stack([lo[:, 1], lo[:, 1], hi[:, 1], hi[:, 1]], 1) - y
        fz = c * corners_x + s * corners_y  # forward
        rx = s * corners_x - c * corners_y  # right
        margin = 1.0
        dx = np.maximum(np.maximum(lo[:, 0] - x, x - hi[:, 0]), 0)
        dy = np.maximum(np.maximum(lo[:, 1] - y, y - hi[:, 1]), 0)
        dist = np.hypot(dx, dy)
        visible = (
            (fz.max(1) > NEAR)
            & ~(rx > fz * self.tan_half + margin).all(1)
            & ~(rx < -fz * self.tan_half - margin).all(1)
            & (dist < np.minimum(self.far, town.o_far))
        )
        # primitives of visible objects (each object's quads and discs are contiguous)
        vis_obj = np.flatnonzero(visible)
        q_idx = _ranges(self.q_start[vis_obj], self.q_end[vis_obj])
        c_idx = _ranges(self.c_start[vis_obj], self.c_end[vis_obj])
        cam_pos = np.array([x, y, zc])
        q_obj = town.q_obj[q_idx]
        facing = np.einsum("ij,ij->i", town.q_normal[q_idx], cam_pos - town.q_verts[q_idx, 0])
        face_ok = np.zeros(len(town.q_obj), bool)
        face_ok[q_idx] = facing > 0
        parent = town.q_parent[q_idx]
        is_face = parent < 0
        parent_ok = np.where(is_face, True, face_ok[np.maximum(parent, 0)])
        near_obj = dist[q_obj] < LOD
        q_sel = q_idx[face_ok[q_idx] & parent_ok & (is_face | near_obj)]
        to_cam = cam_pos - town.c_centre[c_idx]
        facing_c = town.c_facing[c_idx]
        c_face = (np.einsum("ij,ij->i", facing_c, to_cam) > 0) | ~facing_c.any(1)
        c_sel = c_idx[c_face]

        rot = np.array([[s, -c, 0.0], [0.0, 0.0, -1.0], [c, s, 0.0]])  # world -> camera axes
        qv = (town.q_verts[q_sel] - cam_pos) @ rot.T  # [M, 4, 3]
        cv_ = (town.c_centre[c_sel] - cam_pos) @ rot.T

        # colours with fog by object distance
        q_d = dist[town.q_obj[q_sel]]
        q_f = (1 - np.exp(-q_d / self.weather.fog_dist))[:, None]
        q_col = self.q_col[q_sel] * (1 - q_f) + self.fog * q_f
        c_col = self.c_col[c_sel].copy()
        lens = town.c_light[c_sel] >= 0
        if lens.any() and light_states is not None:
            for k in np.flatnonzero(lens):
                ci = c_sel[k]
                on = STATE_LAMP[light_states[town.c_light[ci]]] == town.c_lamp[ci]
                c_col[k] = LENS_ON[int(town.c_lamp[ci])] if on else LENS_OFF
        c_d = dist[town.c_obj[c_sel]]
        c_f = (1 - np.exp(-c_d / self.weather.fog_dist))[:, None]
        glow = town.c_glow[c_sel] & self.weather.night
        c_f[glow | lens] *= 0.4  # lamps shine through the fog
        c_col = c_col * (1 - c_f) + self.fog * c_f

        # painter's order: far objects first; within an object faces, then windows, then discs
        n_q = len(q_sel)
        obj = np.concatenate([town.q_obj[q_sel], town.c_obj[c_sel]])
        order = np.concatenate([np.where(town.q_parent[q_sel] < 0, 0, 1), np.full(len(c_sel), 2)])
        key_d = dist[obj]
        idx = np.arange(len(obj))
        draw = np.lexsort((idx, order, -key_d))

        front = (qv[..., 2] >= NEAR).all(1)
        behind = (qv[..., 2] < NEAR).all(1)
        zq = np.where(front[:, None], qv[..., 2], 1.0)[..., None]
        pq = qv[..., :2] / zq * self.fx + (self.cx, self.cy)
        # drop slivers (far poles, faces seen edge-on): thinner than half a pixel either way
        ext = pq.max(1) - pq.min(1)
        q_mode = np.where(behind, -1, np.where(front, 0, 1))
        q_mode[front & ((ext < 0.5).any(1))] = -1
        pq_i = np.round(pq * SCALE).astype(np.int32)
        cz = np.maximum(cv_[:, 2], NEAR)
        c_r = self.fx * town.c_radius[c_sel] / cz
        c_mode = np.where((cv_[:, 2] < NEAR) | (c_r < 0.35) | (c_r > 4 * w), -1, 2)
        c_u = np.round((cv_[:, 0] / cz * self.fx + self.cx) * SCALE).astype(np.int64).tolist()
        c_v = np.round((cv_[:, 1] / cz * self.fx + self.cy) * SCALE).astype(np.int64).tolist()
        c_ri = np.round(c_r * SCALE).astype(np.int64).tolist()
        mode = np.concatenate([q_mode, c_mode])
        draw = draw[mode[draw] >= 0]
        colours = np.concatenate([q_col, c_col]) * 257.0
        col_list = colours.tolist()
        ids = (obj + 1).tolist()
        mode_list = mode.tolist()
        fill = cv2.fillConvexPoly
        circle = cv2.circle
        for p in draw.tolist():
            m = mode_list[p]
            colour = (*col_list[p], ids[p])
            if m == 0:
                fill(buf, pq_i[p], colour, cv2.LINE_8, SHIFT)
            elif m == 1:
                poly = _clip_near(qv[p])
                if poly is None:
                    continue
                pp = poly[:, :2] / poly[:, 2:3] * self.fx + (self.cx, self.cy)
                pts = np.clip(np.round(pp * SCALE), -(2**26), 2**26).astype(np.int32)
                fill(buf, pts, colour, cv2.LINE_8, SHIFT)
            else:
                k = p - n_q
                circle(buf, (c_u[k], c_v[k]), c_ri[k], colour, -1, cv2.LINE_8, SHIFT)

        rgb: np.ndarray = (buf[..., :3] >> 8).astype(np.uint8)
        if self.weather.rain:
            rgb = self._rain(rgb)
        if self.ss > 1:
            rgb = cv2.resize(
                rgb, (self.out_camera.width, self.out_camera.height), interpolation=cv2.INTER_AREA
            )
        return rgb, buf[..., 3]

    def _rain(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        layer = rgb.copy()
        n = int(w * h / 90)
        xs = self.rng.integers(0, w, n)
        ys = self.rng.integers(0, h, n)
        length = max(2, h // 14)
        for x0, y0 in zip(xs.tolist(), ys.tolist(), strict=True):
            cv2.line(layer, (x0, y0), (x0 - length // 4, y0 + length), (200, 205, 210), 1)
        return cv2.addWeighted(layer, 0.35, rgb, 0.65, 0)
