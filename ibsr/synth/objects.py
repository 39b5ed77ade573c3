"""Other everyday objects: storage and hall furniture, clocks, luggage, instruments, vehicles.

Same conventions as `furniture.py`: one generator per category, `(rng) -> (Parts, params)`,
metres, +y up, floor at y=0, front towards +z (a car's and an airplane's nose, a clock's
face, a guitar's top). Vehicles are at real size, so a catalog mixes a 0.1 m mug with a 60 m
airliner: the index renderer scales every shape to its bounding sphere anyway.
"""

from __future__ import annotations

import math

import numpy as np

from .furniture import _pick, _u, add_fronts, add_four_legs
from .primitives import (Parts, box, box_between, circle, disk, rect, revolve, rod, rotation_x,
                         rotation_y, rotation_z, rounded_rect, scaling, smooth_path, sphere, sweep,
                         torus, translation, y_axis_to)


def _books(parts, rng, x0, x1, y, max_h, z0, z1, fill):
    """Books standing on a shelf from x0 towards x1, filling about `fill` of it; the last one
    may lean on its neighbour. Returns how many."""
    x, n = x0 + 0.005, 0
    stop = x0 + fill * (x1 - x0)
    while x < stop:
        t, h = _u(rng, 0.015, 0.05), min(max_h, _u(rng, 0.17, 0.32))
        if x + t > x1 - 0.005:
            break
        d = (z1 - z0) * _u(rng, 0.65, 0.95)
        parts.add("book", box_between((x, y, z0), (x + t, y + h, z0 + d)))
        x, n = x + t, n + 1
    if n and x1 - x > 0.15 and rng.random() < 0.5:  # a leaning book at the end of the row
        t, h = 0.03, min(max_h, 0.24)
        lean = rotation_z(-math.radians(_u(rng, 15.0, 35.0)), pivot=(x, y, 0))
        parts.add("book", box_between((x, y, z0), (x + t, y + h, z0 + (z1 - z0) * 0.8)), lean)
        n += 1
    return n


def bookshelf(rng):
    style = _pick(rng, ("closed", "open_frame", "ladder", "cube"))
    W, H, D = _u(rng, 0.6, 1.4), _u(rng, 0.8, 2.1), _u(rng, 0.24, 0.4)
    levels = max(2, int(round(H / _u(rng, 0.3, 0.42))))
    fill = _u(rng, 0.3, 1.0)
    params = dict(style=style, width=W, height=H, depth=D, levels=levels, fill=fill)
    parts = Parts()
    t = _u(rng, 0.018, 0.03)
    ys = np.linspace(0.05 if style != "ladder" else 0.15, H - t, levels + 1)
    depths = np.full(levels + 1, D)
    if style == "ladder":  # leaning: shelves get shallower towards the top, rails lean back
        depths = D * np.linspace(1.0, 0.4, levels + 1)
        for sx in (-1, 1):
            x = sx * W / 2
            parts.add("frame", rod((x, 0, D / 2), (x, H, D / 2 - D * 0.75), 0.022, sections=6, square=True))
    elif style == "open_frame":
        for sx in (-1, 1):
            for sz in (-1, 1):
                x, z = sx * (W / 2 - 0.02), sz * (D / 2 - 0.02)
                parts.add("frame", rod((x, 0, z), (x, H, z), 0.018, sections=6, square=True))
    else:
        for sx in (-1, 1):
            x0, x1 = sorted((sx * W / 2, sx * (W / 2 - t)))
            parts.add("frame", box_between((x0, 0, -D / 2), (x1, H, D / 2)))
        parts.add("frame", box_between((-W / 2, 0, -D / 2), (W / 2, H, -D / 2 + 0.008)))
        parts.add("frame", box_between((-W / 2, 0, D / 2 - 0.03), (W / 2, 0.05, D / 2)))
    cols = int(rng.integers(2, 5)) if style == "cube" else 1
    params["columns"] = cols
    xs = np.linspace(-W / 2 + t, W / 2 - t, cols + 1)
    if cols > 1:
        for x in xs[1:-1]:
            parts.add("frame", box_between((x - t / 2, 0.05, -D / 2), (x + t / 2, H, D / 2)))
    books = 0
    for k, y in enumerate(ys):
        z1 = D / 2 if style != "ladder" else D / 2 - D * 0.75 * (y / H)
        z0 = z1 - depths[k]
        parts.add("shelf", box_between((-W / 2, y, z0), (W / 2, y + t, z1)))
        if k < levels:
            gap = ys[k + 1] - y - t
            for a, b in zip(xs[:-1], xs[1:]):
                if rng.random() < 0.85:
                    books += _books(parts, rng, a + t / 2, b - t / 2, y + t, gap - 0.02, z0 + 0.01, z1 - 0.01, fill)
    params["books"] = books
    return parts, params


def bench(rng):
    style = _pick(rng, ("park", "plank", "slatted", "storage", "hall"))
    W, D, h = _u(rng, 1.0, 1.8), _u(rng, 0.35, 0.5), _u(rng, 0.42, 0.48)
    params = dict(style=style, width=W, depth=D, seat_height=h)
    parts = Parts()
    slats = int(rng.integers(3, 7))
    if style in ("park", "slatted"):
        gap = 0.012
        sd = (D - gap * (slats - 1)) / slats
        for k in range(slats):
            z = -D / 2 + k * (sd + gap)
            parts.add("seat", box_between((-W / 2, h - 0.03, z), (W / 2, h, z + sd)))
        params["slats"] = slats
        for sx in (-1, 1):  # cast side frames: a foot rail and two posts
            x = sx * (W / 2 - 0.12)
            parts.add("leg", box_between((x - 0.025, 0, -D / 2), (x + 0.025, 0.05, D / 2)))
            for sz in (-1, 1):
                parts.add("leg",
                          box_between((x - 0.025, 0, sz * D * 0.4 - 0.025),
                                      (x + 0.025, h - 0.03, sz * D * 0.4 + 0.025)))
            parts.add("leg", box_between((x - 0.025, h - 0.08, -D / 2), (x + 0.025, h - 0.03, D / 2)))
        if style == "park":
            back_h, tilt = _u(rng, 0.3, 0.45), _u(rng, 8.0, 20.0, 1)
            back = Parts()
            for k in range(int(rng.integers(2, 5))):
                y = h + 0.06 + k * 0.1
                if y + 0.07 < h + back_h:
                    back.add("back", box_between((-W / 2, y, -D / 2 - 0.03), (W / 2, y + 0.07, -D / 2)))
            for sx in (-1, 1):
                x = sx * (W / 2 - 0.12)
                back.add("back",
                         box_between((x - 0.025, h - 0.08, -D / 2 - 0.05), (x + 0.025, h + back_h, -D / 2 - 0.02)))
            parts.merge(back, rotation_x(-math.radians(tilt), pivot=(0, h, -D / 2)))
            params.update(back_height=back_h, back_tilt_deg=tilt)
            if rng.random() < 0.6:
                for sx in (-1, 1):
                    x = sx * (W / 2 - 0.12)
                    parts.add("arm", box_between((x - 0.03, h + 0.2, -D / 2), (x + 0.03, h + 0.24, D * 0.45)))
                    parts.add("arm", box_between((x - 0.02, h - 0.03, D * 0.38), (x + 0.02, h + 0.2, D * 0.45)))
                params["arms"] = True
    elif style == "storage":
        parts.add("body", box_between((-W / 2, 0.0, -D / 2), (W / 2, h - 0.06, D / 2)))
        parts.add("cushion", box_between((-W / 2 + 0.01, h - 0.06, -D / 2 + 0.01), (W / 2 - 0.01, h, D / 2 - 0.01)))
        cols = max(1, int(round(W / 0.45)))
        add_fronts(parts, -W / 2 + 0.02, W / 2 - 0.02, 0.05, h - 0.09, D / 2, 1, cols, "drawer",
                   _pick(rng, ("knob", "bar")))
    else:  # plank on legs; the hall bench adds a shoe shelf
        seat_t = _u(rng, 0.03, 0.07)
        parts.add("seat", box((W, seat_t, D), (0, h - seat_t / 2, 0)))
        leg_style = _pick(rng, ("square", "round", "tapered_square", "splayed"))
        half = _u(rng, 0.018, 0.03)
        add_four_legs(parts, W / 2 - 0.08, D / 2 - 0.05, h - seat_t, half, leg_style,
                      _u(rng, 0.02, 0.06) if leg_style == "splayed" else 0.0)
        params.update(leg_style=leg_style, seat_thickness=seat_t)
        if style == "hall":
            parts.add("shelf", box_between((-W / 2 + 0.08, 0.1, -D / 2 + 0.05), (W / 2 - 0.08, 0.12, D / 2 - 0.05)))
    return parts, params


def wardrobe(rng):
    W, H, D = _u(rng, 0.8, 2.0), _u(rng, 1.7, 2.2), _u(rng, 0.5, 0.65)
    doors = max(2, int(round(W / _u(rng, 0.45, 0.6))))
    kind = _pick(rng, ("hinged", "hinged", "sliding"))
    drawers = int(rng.integers(0, 3)) if kind == "hinged" else 0
    base = _pick(rng, ("plinth", "legs", "none"))
    handle = _pick(rng, ("bar", "knob", "none"))
    cornice = rng.random() < 0.4
    mirror = rng.random() < 0.3
    base_h = {"plinth": _u(rng, 0.05, 0.1), "legs": _u(rng, 0.1, 0.18), "none": 0.0}[base]
    params = dict(width=W, height=H, depth=D, doors=doors, kind=kind, drawers=drawers, base=base,
                  handle=handle, cornice=bool(cornice), mirror=bool(mirror), base_height=base_h)
    parts = Parts()
    parts.add("body", box_between((-W / 2, base_h, -D / 2), (W / 2, H, D / 2)))
    y0, t = base_h + 0.02, 0.02
    drawer_top = y0 + drawers * _u(rng, 0.18, 0.25)
    if drawers:
        add_fronts(parts, -W / 2 + t, W / 2 - t, y0, drawer_top, D / 2, drawers, 1 if W < 1.2 else 2, "drawer", handle)
    if kind == "sliding":  # two or three wide panels, alternately in front
        n = 2 if W < 1.5 else 3
        edges = np.linspace(-W / 2 + t, W / 2 - t, n + 1)
        for k in range(n):
            z = D / 2 + (0.025 if k % 2 else 0.0)
            parts.add("door", box_between((edges[k] - 0.02, y0, z - 0.005), (edges[k + 1] + 0.02, H - t, z + 0.015)))
            if handle != "none":
                x = edges[k + 1] - 0.04 if k % 2 == 0 else edges[k] + 0.04
                parts.add("handle", box_between((x - 0.01, y0 + 0.7, z + 0.015), (x + 0.01, y0 + 1.2, z + 0.03)))
        params["panels"] = n
    else:  # hinged doors with long vertical bars (or knobs) near the meeting edges
        add_fronts(parts, -W / 2 + t, W / 2 - t, drawer_top, H - t, D / 2, 1, doors, "door",
                   "knob" if handle == "knob" else "none", "side")
        edges = np.linspace(-W / 2 + t, W / 2 - t, doors + 1)
        for k in range(doors if handle == "bar" else 0):
            x = edges[k + 1] - 0.05 if k % 2 == 0 else edges[k] + 0.05
            y = drawer_top + (H - drawer_top) * 0.45
            parts.add("handle", box_between((x - 0.01, y, D / 2 + 0.015), (x + 0.01, y + 0.35, D / 2 + 0.04)))
    if mirror:
        x0 = -W / 2 + t + 0.06
        x1 = x0 + (W - 2 * t) / (doors if kind == "hinged" else 2) - 0.12
        parts.add("mirror", box_between((x0, drawer_top + 0.15, D / 2 + 0.012), (x1, H - 0.2, D / 2 + 0.02)))
    if cornice:
        parts.add("top", box_between((-W / 2 - 0.03, H, -D / 2 - 0.01), (W / 2 + 0.03, H + 0.06, D / 2 + 0.03)))
    if base == "plinth":
        parts.add("base", box_between((-W / 2 + 0.02, 0, -D / 2 + 0.02), (W / 2 - 0.02, base_h, D / 2 - 0.03)))
    elif base == "legs":
        add_four_legs(parts, W / 2 - 0.05, D / 2 - 0.05, base_h, 0.025, "tapered_round", name="base")
    return parts, params


def coat_rack(rng):
    style = _pick(rng, ("pole", "tree", "garment", "ladder"))
    H = _u(rng, 1.5, 1.9)
    params = dict(style=style, height=H)
    parts = Parts()
    if style in ("pole", "tree"):
        r = _u(rng, 0.025, 0.04)
        base = _pick(rng, ("tripod", "disk", "cross"))
        base_h = 0.0
        if base == "disk":
            base_h = 0.03
            parts.add("base", disk(_u(rng, 0.16, 0.24), 0.0, base_h, sections=24))
        else:
            n = 3 if base == "tripod" else 4
            reach = _u(rng, 0.22, 0.32)
            for k in range(n):
                a = 2 * math.pi * k / n
                out = np.array([math.sin(a), 0.0, math.cos(a)]) * reach
                leg = smooth_path([(0, 0.25, 0), out * 0.6 + [0, 0.08, 0], out], 2)
                parts.add("base", sweep(leg, circle(6) * 0.018))
        parts.add("pole", rod((0, base_h, 0), (0, H, 0), r, sections=10))
        parts.add("finial", sphere(r * 1.6, (0, H, 0)))
        hooks = int(rng.integers(3, 9))
        levels = 1 if style == "pole" else 2
        for level in range(levels):
            y = H - 0.08 - level * 0.3
            for k in range(hooks):
                a = 2 * math.pi * (k + 0.5 * level) / hooks
                out = np.array([math.sin(a), 0.0, math.cos(a)])
                if style == "tree":  # branches reaching up and out
                    path = [(0, y - 0.12, 0), out * 0.15 + [0, y, 0], out * 0.22 + [0, y + 0.1, 0]]
                else:  # hooks curling up at the tip
                    path = [(0, y - 0.05, 0), out * 0.1 + [0, y, 0], out * 0.13 + [0, y + 0.04, 0]]
                parts.add("hook", sweep(smooth_path(path, 2), circle(6) * 0.015))
                parts.add("hook", sphere(0.022, path[-1]))
        params.update(pole_radius=r, base=base, hooks=hooks)
        return parts, params
    W, D = _u(rng, 0.8, 1.5), _u(rng, 0.35, 0.5)
    params.update(width=W, depth=D)
    if style == "garment":  # clothes rail: uprights on feet, a top rail, maybe a shelf and casters
        casters = rng.random() < 0.5
        lift = 0.06 if casters else 0.0
        for sx in (-1, 1):
            x = sx * W / 2
            parts.add("pole", rod((x, lift + 0.02, 0), (x, H, 0), 0.02, sections=10))
            parts.add("base", rod((x, lift + 0.02, -D / 2), (x, lift + 0.02, D / 2), 0.024, sections=6, square=True))
            if casters:
                for sz in (-1, 1):
                    parts.add("caster", sphere(0.035, (x, 0.035, sz * D * 0.45)))
        parts.add("rail", rod((-W / 2 - 0.03, H, 0), (W / 2 + 0.03, H, 0), 0.02, sections=10))
        if rng.random() < 0.5:
            params["shelf"] = True
            parts.add("shelf", box_between((-W / 2, lift + 0.15, -D / 2 + 0.05), (W / 2, lift + 0.17, D / 2 - 0.05)))
        params["casters"] = bool(casters)
    else:  # ladder: two rails leaning on a wall, rungs across
        rungs = int(rng.integers(4, 8))
        lean = _u(rng, 0.15, 0.3)
        for sx in (-1, 1):
            parts.add("rail", rod((sx * W / 4, 0, lean), (sx * W / 4, H, 0), 0.022, sections=6, square=True))
        for y in np.linspace(0.25, H - 0.1, rungs):
            z = lean * (1 - y / H)
            parts.add("rail", rod((-W / 4, y, z), (W / 4, y, z), 0.014, sections=8))
        params["rungs"] = rungs
    return parts, params


def _hands(parts, center, radius, z, rng, params):
    """Hour and minute hands at a random time (continuous: near-duplicates differ by the hour)."""
    minutes = _u(rng, 0.0, 720.0, 1)
    params["time_minutes"] = minutes
    for name, length, width, angle in (("hand", 0.55, 0.06, minutes / 720 * 2 * math.pi),
                                       ("hand", 0.85, 0.04, minutes % 60 / 60 * 2 * math.pi)):
        w = max(0.004, radius * width)
        piece = box_between((-w, -radius * 0.1, 0.0), (w, radius * length, 0.004 + radius * 0.01))
        parts.add(name, piece, translation(center[0], center[1], z) @ rotation_z(-angle))
    parts.add("hand", disk(max(0.006, radius * 0.06), 0.0, 0.01 + radius * 0.02, sections=10),
              y_axis_to("z", (center[0], center[1], z)))


def _face(parts, rng, params, center, radius, z):
    """A clock face at depth z facing +z: dial disk in a raised bezel ring, hour marks, hands."""
    at = y_axis_to("z", (center[0], center[1], z))
    parts.add("face", disk(radius, -0.004, 0.0, sections=32), at)
    parts.add("bezel", torus(radius * 1.02, radius * 0.07, 0.0, 32, 8), at)
    marks = _pick(rng, ("ticks", "dots", "none"))
    params["marks"] = marks
    for k in range(12 if marks != "none" else 0):
        a = 2 * math.pi * k / 12
        p = (center[0] + 0.82 * radius * math.sin(a), center[1] + 0.82 * radius * math.cos(a), z)
        size = max(0.005, radius * 0.045)
        if marks == "ticks":
            parts.add("marks", box_between((-size * 0.6, -size * 2, 0), (size * 0.6, size * 2, 0.003)),
                      translation(*p) @ rotation_z(-a))
        else:
            parts.add("marks", disk(size, 0.0, 0.003, sections=8), y_axis_to("z", p))
    _hands(parts, center, radius * 0.9, z + 0.004, rng, params)


def clock(rng):
    kind = _pick(rng, ("wall", "alarm", "mantel", "grandfather"))
    params = dict(kind=kind)
    parts = Parts()
    if kind == "wall":
        R = _u(rng, 0.12, 0.25)
        rim = _pick(rng, ("round", "square", "ring"))
        depth = _u(rng, 0.03, 0.06)
        c = (0.0, R + 0.01)
        if rim == "square":
            parts.add("case", box_between((-R - 0.02, 0, -depth), (R + 0.02, 2 * R + 0.04, 0.0)))
            c = (0.0, R + 0.02)
        else:
            parts.add("case", disk(R + 0.01, -depth, 0.0, sections=32), y_axis_to("z", (c[0], c[1], 0)))
            if rim == "ring":
                parts.add("case", torus(R + 0.01, _u(rng, 0.012, 0.025), 0.0, 32, 8), y_axis_to("z", (c[0], c[1], 0)))
        _face(parts, rng, params, c, R * 0.95, 0.004)
        params.update(radius=R, rim=rim, depth=depth)
    elif kind == "alarm":
        R, depth = _u(rng, 0.05, 0.08), _u(rng, 0.035, 0.06)
        y = R + 0.025
        parts.add("case", disk(R, -depth / 2, depth / 2, sections=28), y_axis_to("z", (0, y, 0)))
        _face(parts, rng, params, (0.0, y), R * 0.85, depth / 2 + 0.002)
        for sx in (-1, 1):
            parts.add("foot", rod((sx * R * 0.4, y - R * 0.8, 0), (sx * R * 0.75, 0.0, 0), 0.006, sections=6))
            if rng.random() < 0.85:
                a = math.radians(35)
                top = (sx * (R + 0.005) * math.sin(a), y + (R + 0.005) * math.cos(a), 0)
                bell = [[R * 0.45, 0], [R * 0.42, R * 0.2], [R * 0.2, R * 0.35], [1e-4, R * 0.36], [1e-4, 0]]
                parts.add("bell", revolve(bell, 16), translation(*top) @ rotation_z(-sx * a))
        arch = smooth_path([(-R * 0.3, y + R * 0.95, 0), (0, y + R * 1.35, 0), (R * 0.3, y + R * 0.95, 0)], 2)
        parts.add("handle", sweep(arch, circle(6) * 0.005))
        params.update(radius=R, depth=depth)
    elif kind == "mantel":
        W, H, depth = _u(rng, 0.2, 0.4), _u(rng, 0.18, 0.35), _u(rng, 0.08, 0.14)
        top = _pick(rng, ("flat", "arch", "tambour"))
        parts.add("case", box_between((-W / 2 - 0.02, 0, -depth / 2 - 0.01), (W / 2 + 0.02, 0.03, depth / 2 + 0.01)))
        parts.add("case", box_between((-W / 2, 0.03, -depth / 2), (W / 2, H * 0.7, depth / 2)))
        if top == "flat":
            parts.add("case", box_between((-W / 2, H * 0.7, -depth / 2), (W / 2, H, depth / 2)))
        else:  # a half disk on top; the tambour's is wider than the body
            r = W / 2 * (1.0 if top == "arch" else 0.7)
            parts.add("case", disk(r, -depth / 2, depth / 2, sections=28), y_axis_to("z", (0, H * 0.7, 0)))
            if top == "tambour":
                for sx in (-1, 1):
                    parts.add("case", disk(W * 0.3, -depth / 2, depth / 2, sections=20),
                              y_axis_to("z", (sx * W * 0.35, H * 0.55, 0)))
        face_r = min(W, H) * 0.32
        _face(parts, rng, params, (0.0, H * 0.6), face_r, depth / 2 + 0.002)
        params.update(width=W, height=H, depth=depth, top=top)
    else:  # grandfather: plinth, trunk with a pendulum window, hood with the dial
        H, W, depth = _u(rng, 1.7, 2.2), _u(rng, 0.35, 0.55), _u(rng, 0.22, 0.32)
        hood_h = W * _u(rng, 1.1, 1.4)
        trunk_w = W * _u(rng, 0.72, 0.88)
        parts.add("case", box_between((-W / 2, 0, -depth / 2), (W / 2, H * 0.22, depth / 2)))
        parts.add("case",
                  box_between((-trunk_w / 2, H * 0.22, -depth / 2 + 0.02), (trunk_w / 2, H - hood_h, depth / 2 - 0.02)))
        parts.add("case", box_between((-W / 2, H - hood_h, -depth / 2), (W / 2, H, depth / 2)))
        if rng.random() < 0.5:
            parts.add("case", disk(W / 2, -depth / 2, depth / 2, sections=24), y_axis_to("z", (0, H, 0)))
            params["arched"] = True
        parts.add("glass",
                  box_between((-trunk_w * 0.3, H * 0.3, depth / 2 - 0.022),
                              (trunk_w * 0.3, H - hood_h - 0.08, depth / 2 - 0.01)))
        parts.add("pendulum", disk(trunk_w * 0.18, 0.0, 0.01, sections=16),
                  y_axis_to("z", (0, H * 0.38, depth / 2 - 0.01)))
        _face(parts, rng, params, (0.0, H - hood_h / 2), W * 0.36, depth / 2 + 0.002)
        params.update(height=H, width=W, depth=depth, hood_height=hood_h)
    return parts, params


def suitcase(rng):
    W, H, D = _u(rng, 0.35, 0.55), _u(rng, 0.5, 0.8), _u(rng, 0.2, 0.3)
    shell = _pick(rng, ("hard", "soft"))
    wheels = _pick(rng, ("two", "four"))
    trolley = _pick(rng, ("retracted", "extended"))
    params = dict(width=W, height=H, depth=D, shell=shell, wheels=wheels, trolley=trolley)
    parts = Parts()
    lift = 0.06 if wheels == "four" else 0.04
    corner = _u(rng, 0.03, 0.08) if shell == "hard" else 0.02
    body = sweep([(0, lift + H / 2, -D / 2), (0, lift + H / 2, D / 2)], rounded_rect(H / 2, W / 2, corner, 3))
    parts.add("shell", body)
    if shell == "hard":
        ribs = int(rng.integers(0, 5))
        for x in np.linspace(-W / 2, W / 2, ribs + 2)[1:-1]:
            parts.add("shell",
                      box_between((x - 0.012, lift + 0.04, D / 2 - 0.01), (x + 0.012, lift + H - 0.04, D / 2 + 0.008)))
        parts.add("trim", box_between((-W / 2 - 0.006, lift + 0.02, -0.012), (W / 2 + 0.006, lift + H - 0.02, 0.012)))
        params["ribs"] = ribs
    else:
        pocket_h = H * _u(rng, 0.4, 0.7)
        parts.add("pocket",
                  box_between((-W / 2 + 0.04, lift + 0.05, D / 2 - 0.01),
                              (W / 2 - 0.04, lift + 0.05 + pocket_h, D / 2 + 0.04)))
        params["pocket_height"] = pocket_h
    if wheels == "four":
        for sx in (-1, 1):
            for sz in (-1, 1):
                x, z = sx * (W / 2 - 0.04), sz * (D / 2 - 0.04)
                parts.add("wheel", box_between((x - 0.02, lift - 0.02, z - 0.02), (x + 0.02, lift + 0.01, z + 0.02)))
                parts.add("wheel", disk(0.025, -0.012, 0.012, sections=12), y_axis_to("x", (x, 0.025, z)))
    else:
        for sx in (-1, 1):
            parts.add("wheel", disk(0.04, -0.015, 0.015, sections=14),
                      y_axis_to("x", (sx * (W / 2 - 0.03), 0.04, -D / 2 + 0.03)))
        parts.add("shell", box_between((-W / 2 + 0.08, 0, D / 2 - 0.06), (W / 2 - 0.08, lift, D / 2 - 0.02)))
    top = lift + H
    up = _u(rng, 0.3, 0.5) if trolley == "extended" else 0.01
    z = -D / 2 + 0.03  # the trolley runs down the back
    for sx in (-1, 1):
        x = sx * W * 0.25
        parts.add("trolley", rod((x, top - 0.05, z), (x, top + up, z), 0.01, sections=8, square=True))
    bar = W * 0.25 + 0.01
    parts.add("trolley", rod((-bar, top + up + 0.01, z), (bar, top + up + 0.01, z), 0.018, sections=10))
    grip = smooth_path([(-0.07, top - 0.005, 0.02), (-0.06, top + 0.035, 0.02), (0.06, top + 0.035, 0.02),
                        (0.07, top - 0.005, 0.02)], 2)
    parts.add("handle", sweep(grip, rect(0.008, 0.014), reference=(0, 0, 1)))
    params["trolley_extension"] = up
    return parts, params


def guitar(rng):
    kind = _pick(rng, ("acoustic", "classical", "electric", "bass"))
    r1 = {"acoustic": _u(rng, 0.18, 0.21), "classical": _u(rng, 0.17, 0.19), "electric": _u(rng, 0.15, 0.17),
          "bass": _u(rng, 0.16, 0.18)}[kind]
    r2 = r1 * _u(rng, 0.7, 0.85)
    t = _u(rng, 0.085, 0.12) if kind in ("acoustic", "classical") else _u(rng, 0.038, 0.05)
    neck_len = {"bass": _u(rng, 0.7, 0.8)}.get(kind, _u(rng, 0.45, 0.55))
    params = dict(kind=kind, lower_bout=r1, upper_bout=r2, thickness=t, neck_length=neck_len)
    parts = Parts()
    c1 = (0.0, r1)  # the body's bottom edge on the floor
    c2 = (0.0, c1[1] + (r1 + r2) * _u(rng, 0.62, 0.75))
    for c, r in ((c1, r1), (c2, r2)):
        parts.add("body", disk(r, -t / 2, t / 2, sections=32), y_axis_to("z", (c[0], c[1], 0)))
    front = t / 2
    if kind in ("electric", "bass"):  # horns beside the neck; a single or double cutaway
        horns = int(rng.integers(1, 3))
        for k in range(horns):
            sx = 1 if k == 0 else -1
            parts.add("body", disk(r2 * 0.38, -t / 2, t / 2, sections=16),  # stretched upwards
                      y_axis_to("z", (sx * r2 * 0.5, c2[1] + r2 * 0.5, 0)) @ scaling(1.0, 1.0, 1.7))
        pickups = int(rng.integers(1, 4))
        for k in range(pickups):
            y = c1[1] + r1 * 0.1 + k * 0.06
            parts.add("pickup", box_between((-0.04, y, front), (0.04, y + 0.025, front + 0.01)))
        parts.add("guard", box_between((-r2 * 0.9, c1[1] - r1 * 0.2, front), (-0.045, c2[1] + r2 * 0.3, front + 0.003)))
        params.update(horns=horns, pickups=pickups)
    else:
        parts.add("soundhole", disk(r2 * _u(rng, 0.4, 0.5), -0.002, 0.002, sections=24),
                  y_axis_to("z", (0, c2[1] - r2 * 0.1, front)))
    parts.add("bridge", box_between((-0.07, c1[1] - r1 * 0.35, front), (0.07, c1[1] - r1 * 0.35 + 0.03, front + 0.012)))
    neck_w = 0.05 if kind != "bass" else 0.056
    y0, y1 = c2[1], c2[1] + r2 + neck_len
    parts.add("neck", box_between((-neck_w / 2, y0, front - 0.025), (neck_w / 2, y1, front + 0.005)))
    head_l = 0.18 if kind != "bass" else 0.22
    head = Parts()
    head.add("head", box_between((-0.045, 0, -0.008), (0.045, head_l, 0.008)))
    inline = kind == "electric" and rng.random() < 0.5
    pegs = 4 if kind == "bass" else 6
    for k in range(pegs):
        side = 1 if inline else (1 if k % 2 else -1)
        y = head_l * (0.2 + 0.7 * (k if inline else k // 2) / (pegs if inline else pegs // 2))
        parts_piece = box_between((side * 0.045, y - 0.008, -0.008), (side * 0.07, y + 0.008, 0.008))
        head.add("tuner", parts_piece)
    angle = 0.0 if kind in ("electric", "bass") else math.radians(_u(rng, 8.0, 15.0))
    parts.merge(head, translation(0, y1, front - 0.01) @ rotation_x(-angle))
    params.update(inline_tuners=bool(inline), headstock_angle_deg=round(math.degrees(angle), 1))
    return parts, params


def car(rng):
    kind = _pick(rng, ("sedan", "hatchback", "suv", "pickup", "van", "coupe"))
    L = {"sedan": _u(rng, 4.3, 5.0), "hatchback": _u(rng, 3.6, 4.3), "suv": _u(rng, 4.3, 5.0),
         "pickup": _u(rng, 5.0, 5.6), "van": _u(rng, 4.6, 5.3), "coupe": _u(rng, 4.2, 4.7)}[kind]
    W = _u(rng, 1.7, 1.95)
    wheel_r = _u(rng, 0.3, 0.34) if kind in ("sedan", "hatchback", "coupe") else _u(rng, 0.34, 0.4)
    clear = wheel_r * _u(rng, 0.45, 0.65)
    belt = clear + {"suv": _u(rng, 0.6, 0.75), "pickup": _u(rng, 0.65, 0.8),
                    "van": _u(rng, 0.6, 0.7)}.get(kind, _u(rng, 0.45, 0.55))
    roof = belt + {"van": _u(rng, 0.8, 1.0), "suv": _u(rng, 0.6, 0.75),
                   "coupe": _u(rng, 0.38, 0.45)}.get(kind, _u(rng, 0.45, 0.55))
    params = dict(kind=kind, length=L, width=W, wheel_radius=wheel_r, clearance=clear, belt=belt, roof=roof)
    parts = Parts()
    hood = {"van": L * 0.12, "pickup": L * 0.25}.get(kind, L * _u(rng, 0.22, 0.3))
    # side profile (height, z) of the lower body: a box with chamfered bumpers, front at +z
    body = [(clear, -L / 2 + 0.15), (clear, L / 2 - 0.2), (clear + 0.2, L / 2), (belt - 0.1, L / 2 - 0.05),
            (belt, L / 2 - hood * 0.3), (belt, -L / 2 + 0.1), (belt - 0.1, -L / 2), (clear + 0.15, -L / 2)]
    _extrude_x(parts, "body", body, W / 2)
    # the cabin (greenhouse): windscreen base behind the hood, roof, rear window or tailgate
    z_front = L / 2 - hood
    rear = {"sedan": -L / 2 + L * 0.2, "coupe": -L / 2 + L * 0.22, "pickup": -L / 2 + L * 0.48}.get(kind, -L / 2 + 0.1)
    rake = (roof - belt) * _u(rng, 0.9, 1.5)
    back_rake = (roof - belt) * {"sedan": 1.1, "coupe": 1.8}.get(kind, 0.3)
    cabin = [(belt - 0.01, z_front), (roof, z_front - rake), (roof, rear + back_rake), (belt - 0.01, rear)]
    _extrude_x(parts, "cabin", cabin, W / 2 - 0.06)
    inset = 0.06
    side = [(belt + inset, z_front - rake * 0.15 - inset), (roof - inset, z_front - rake * 0.9 - inset),
            (roof - inset, rear + back_rake * 0.9 + inset), (belt + inset, rear + back_rake * 0.15 + inset)]
    _extrude_x(parts, "window", side, W / 2 - 0.05)
    _glass_on_edge(parts, cabin, 0, W / 2 - 0.15)  # windscreen
    _glass_on_edge(parts, cabin, 2, W / 2 - 0.15)  # rear window
    if kind == "pickup":  # the bed: three walls behind the cab
        for sx in (-1, 1):
            parts.add("bed",
                      box_between((sx * W / 2 - 0.05 * (sx > 0), belt, -L / 2),
                                  (sx * W / 2 + 0.05 * (sx < 0), belt + 0.08, rear)))
        parts.add("bed", box_between((-W / 2, belt, -L / 2), (W / 2, belt + 0.08, -L / 2 + 0.06)))
    for z in (L / 2 - 0.04, -L / 2 + 0.04):  # head and tail lights
        for sx in (-1, 1):
            parts.add("light",
                      box_between((sx * W * 0.3 - 0.12, belt - 0.2, z - 0.03),
                                  (sx * W * 0.3 + 0.12, belt - 0.08, z + 0.03)))
    for sx in (-1, 1):
        parts.add("mirror",
                  box_between((sx * W / 2 - 0.06, belt + 0.04, z_front - 0.25),
                              (sx * W / 2 + 0.12 * sx, belt + 0.16, z_front - 0.15)))
    base = _u(rng, 0.58, 0.66) * L
    front_axle = L / 2 - (L - base) / 2 + _u(rng, -0.1, 0.1)
    tire = wheel_r * _u(rng, 0.3, 0.45)
    width = _u(rng, 0.19, 0.27)
    spokes = _pick(rng, ("disc", "spokes"))
    for z in (front_axle, front_axle - base):
        for sx in (-1, 1):
            x = sx * (W / 2 + 0.01 - width / 2)  # the outer face just proud of the body side
            at = y_axis_to("x", (x, wheel_r, z))
            parts.add("wheel", revolve(rounded_rect(tire / 2, width / 2, 0.04, 2) + [wheel_r - tire / 2, 0], 24), at)
            parts.add("hub", disk(wheel_r - tire + 0.005, -width * 0.5 + 0.005, width * 0.5 - 0.005, sections=16), at)
            if spokes == "spokes":
                for k in range(5):
                    parts.add("hub",
                              box_between((-0.025, sx * width * 0.45, 0),
                                          (0.025, sx * (width * 0.45 + 0.015), wheel_r - tire)),
                              at @ rotation_y(2 * math.pi * k / 5))
    params.update(hood=hood, wheelbase=base, tire=tire, tire_width=width, wheels=spokes)
    return parts, params


def _extrude_x(parts, name, profile_yz, half_width):
    """A prism along x (width) of a convex side profile given as (height, z) points."""
    profile = np.asarray(profile_yz, float)
    center = profile.mean(axis=0)
    path = [(-half_width, center[0], center[1]), (half_width, center[0], center[1])]
    parts.add(name, sweep(path, profile - center))


def _glass_on_edge(parts, cabin, index, half_width, thickness=0.012):
    """A window pane: a thin slab on edge `index` -> `index + 1` of the cabin's side profile
    ((height, z) points), just outside it."""
    cabin = np.asarray(cabin, float)
    p0, p1 = cabin[index], cabin[(index + 1) % len(cabin)]
    edge = p1 - p0
    normal = np.array([edge[1], -edge[0]]) / np.linalg.norm(edge)
    if normal @ ((p0 + p1) / 2 - cabin.mean(axis=0)) < 0:  # face away from the cabin
        normal = -normal
    a, b = p0 + 0.1 * edge, p0 + 0.9 * edge
    _extrude_x(parts, "window", [a, b, b + thickness * normal, a + thickness * normal], half_width)


def _wing(span, root_chord, taper, sweep_deg, dihedral_deg, thickness=0.12):
    """A tapered, swept wing along x through the root at the origin: tip, root, tip."""
    tips = []
    for sx in (-1, 1):
        tips.append((sx * span / 2, abs(span / 2) * math.tan(math.radians(dihedral_deg)),
                     -span / 2 * math.tan(math.radians(sweep_deg))))
    path = [tips[0], (0.0, 0.0, 0.0), tips[1]]
    airfoil = circle(10) * [thickness * root_chord / 2, root_chord / 2]  # (height, chord)
    return sweep(path, airfoil, [taper, 1.0, taper])


def _fin(height, root_chord, taper, sweep_deg, thickness=0.12):
    """A vertical fin from the origin upwards."""
    path = [(0.0, 0.0, 0.0), (0.0, height, -height * math.tan(math.radians(sweep_deg)))]
    airfoil = circle(10) * [thickness * root_chord / 2, root_chord / 2]  # (width, chord)
    return sweep(path, airfoil, [1.0, taper], reference=(1, 0, 0))


def airplane(rng):
    kind = _pick(rng, ("airliner", "airliner", "prop", "jet", "business"))
    L = {"airliner": _u(rng, 30.0, 60.0), "prop": _u(rng, 7.0, 12.0), "jet": _u(rng, 14.0, 20.0),
         "business": _u(rng, 15.0, 25.0)}[kind]
    R = L * {"airliner": _u(rng, 0.045, 0.06), "prop": _u(rng, 0.06, 0.08), "jet": _u(rng, 0.05, 0.065),
             "business": _u(rng, 0.05, 0.065)}[kind]
    span = L * {"jet": _u(rng, 0.6, 0.8), "prop": _u(rng, 1.1, 1.4)}.get(kind, _u(rng, 0.85, 1.1))
    sweep_deg = {"jet": _u(rng, 40.0, 60.0), "prop": _u(rng, 0.0, 5.0)}.get(kind, _u(rng, 20.0, 35.0))
    wing_pos = {"prop": "high"}.get(kind, "low")
    gear = _pick(rng, ("down", "down", "up"))
    params = dict(kind=kind, length=L, radius=R, span=span, sweep_deg=sweep_deg, gear=gear)
    parts = Parts()
    # fuselage: a solid of revolution along z, nose at +z, the tail cone tapering up
    nose = {"jet": 0.22, "prop": 0.12}.get(kind, 0.1)
    s = np.linspace(0, 1, 17)
    radius = np.where(s > 1 - nose, np.sqrt(np.clip(1 - ((s - (1 - nose)) / nose) ** 2, 0.0, 1.0)), 1.0)
    radius = np.where(s < 0.3, 0.25 + 0.75 * np.sin(s / 0.3 * math.pi / 2), radius)
    profile = np.stack([np.maximum(R * radius, R * 0.02), L * (s - 0.5)], 1)
    outline = np.concatenate([[[1e-4, -L / 2]], profile, [[1e-4, L / 2]]])
    parts.add("fuselage", revolve(outline, 20), y_axis_to("z"))
    wing_y = -R * 0.55 if wing_pos == "low" else R * 0.8
    root = L * {"jet": 0.4}.get(kind, _u(rng, 0.12, 0.18))
    taper = {"jet": 0.12}.get(kind, _u(rng, 0.25, 0.5))
    wing_z = {"jet": -L * 0.1, "business": -L * 0.05}.get(kind, L * 0.02)
    parts.add("wing", _wing(span, root, taper, sweep_deg, 5.0 if wing_pos == "low" else 1.0),
              translation(0, wing_y, wing_z))
    # tail: stabilizer and fin (T-tail: stabilizer on top of the fin)
    t_tail = kind == "business" or (kind == "airliner" and rng.random() < 0.25)
    fin_h = R * {"jet": 2.2}.get(kind, _u(rng, 2.0, 2.8))
    tail_z = -L / 2 + root * 0.35
    parts.add("tail", _fin(fin_h, root * 0.8, 0.5, sweep_deg + 5), translation(0, R * 0.3, tail_z))
    stab_y = R * 0.3 + fin_h * 0.95 if t_tail else R * 0.2
    stab_z = tail_z - (fin_h * 0.95 * math.tan(math.radians(sweep_deg + 5)) if t_tail else 0.0)
    parts.add("tail", _wing(span * _u(rng, 0.3, 0.4), root * 0.45, 0.5, sweep_deg + 5, 3.0),
              translation(0, stab_y, stab_z))
    params.update(t_tail=bool(t_tail), root_chord=root, fin_height=fin_h)
    _engines(parts, rng, params, kind, L, R, span, sweep_deg, wing_y, wing_z, root)
    if gear == "down":
        drop = R * 1.5
        for x, z in ((0.0, L * 0.35), (-R * 1.1, wing_z - root * 0.3), (R * 1.1, wing_z - root * 0.3)):
            top = -R * 0.6
            parts.add("gear", rod((x, top, z), (x, top - drop + R * 0.3, z), R * 0.14, sections=8))
            parts.add("wheel", disk(R * 0.3, -R * 0.12, R * 0.12, sections=14),
                      y_axis_to("x", (x, top - drop + R * 0.3, z)))
    parts.rest_on_floor()
    return parts, params


def _engines(parts, rng, params, kind, L, R, span, sweep_deg, wing_y, wing_z, root):
    if kind == "prop":  # nose propeller: spinner and blades
        blades = int(rng.integers(2, 5))
        tip = L / 2
        parts.add("propeller", revolve([[R * 0.35, 0], [1e-4, R * 0.6], [1e-4, 0]], 12),
                  y_axis_to("z", (0, 0, tip - R * 0.05)))
        for k in range(blades):
            blade = box_between((-R * 0.12, 0, -R * 0.03), (R * 0.12, R * 2.2, R * 0.03))
            parts.add("propeller", blade, translation(0, 0, tip + R * 0.1) @ rotation_z(2 * math.pi * k / blades))
        params["blades"] = blades
        return
    if kind == "jet":
        parts.add("engine", revolve([[R * 0.6, 0], [R * 0.7, R * 0.8], [1e-4, R * 0.8], [1e-4, 0]], 14),
                  y_axis_to("z", (0, 0, -L / 2 - R * 0.3)))
        parts.add("cockpit", sphere(1.0, (0, 0, 0), 2),
                  translation(0, R * 0.75, L * 0.28) @ scaling(R * 0.55, R * 0.45, L * 0.1))
        return
    n = 2 if kind == "business" or rng.random() < 0.7 else 4
    eng_r, eng_l = R * _u(rng, 0.35, 0.5), L * _u(rng, 0.07, 0.1)
    nacelle = revolve([[eng_r * 0.85, 0], [eng_r, eng_l * 0.7], [eng_r * 0.95, eng_l], [1e-4, eng_l], [1e-4, 0]], 16)
    params.update(engines=n, engine_radius=eng_r)
    if kind == "business":  # on the rear fuselage
        for sx in (-1, 1):
            parts.add("engine", nacelle, y_axis_to("z", (sx * R * 1.6, R * 0.5, -L * 0.3)))
            parts.add("engine", box_between((sx * R * 0.5, R * 0.3, -L * 0.27), (sx * R * 1.3, R * 0.5, -L * 0.23)))
        return
    stations = (0.32,) if n == 2 else (0.25, 0.42)
    for frac in stations:
        for sx in (-1, 1):
            x = sx * span / 2 * frac * 2
            z = wing_z - abs(x) * math.tan(math.radians(sweep_deg)) + root * 0.2
            y = wing_y + abs(x) * math.tan(math.radians(5.0)) - eng_r * 1.3
            parts.add("engine", nacelle, y_axis_to("z", (x, y, z - eng_l * 0.3)))
            parts.add("engine",
                      box_between((x - eng_r * 0.15, y, z - eng_l * 0.1),
                                  (x + eng_r * 0.15, y + eng_r * 1.4, z + eng_l * 0.4)))


GENERATORS = {
    "bookshelf": bookshelf,
    "bench": bench,
    "wardrobe": wardrobe,
    "coat_rack": coat_rack,
    "clock": clock,
    "suitcase": suitcase,
    "guitar": guitar,
    "car": car,
    "airplane": airplane,
}
