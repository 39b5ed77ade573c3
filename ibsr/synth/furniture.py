"""Parametric furniture: one generator per category, each `(rng) -> (Parts, params)`.

Units are metres, +y up, the floor at y=0, the front of the object facing +z. Every generator
draws a handful of discrete style choices (leg style, back style, arms, drawers...) and
continuous proportions, so two instances of a category differ in fine-grained ways and some
pairs (same styles, close proportions) are near-duplicates: instance retrieval is meant to be
hard. The params dict records the draws (JSON-serializable) for debugging and analysis.

Leave these generators' draws and meshes as they are: catalogs written from them, and the
tests of the shipped model, depend on them byte for byte.
"""

from __future__ import annotations

import math

import numpy as np

from .primitives import (Parts, box, box_between, circle, disk, revolve, rod, rotation_x,
                         shell_profile, smooth_path, sphere, sweep, torus, rect)

LEG_STYLES = ("square", "round", "tapered_square", "tapered_round", "turned", "splayed")


def _u(rng, lo, hi, digits=3) -> float:
    """Uniform draw rounded to `digits`: params stay readable and near-duplicates likelier."""
    return round(float(rng.uniform(lo, hi)), digits)


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


# ---------------------------------------------------------------- shared sub-assemblies

def add_leg(parts: Parts, top, bottom, half: float, style: str, taper: float = 0.6,
            name: str = "leg") -> None:
    """One leg from `top` (x, y, z) down to `bottom`; `half` is its half-thickness at the top."""
    top, bottom = np.asarray(top, float), np.asarray(bottom, float)
    square = "square" in style or style == "splayed"
    profile = rect(1.0, 1.0) if square else circle(10)
    if style == "turned":  # lathe-turned: bulges and necks along the leg
        t = np.array([0.0, 0.12, 0.3, 0.45, 0.7, 0.9, 1.0])
        path = top + t[:, None] * (bottom - top)
        scales = half * np.array([1.0, 1.0, 0.6, 1.15, 0.7, 0.75, 0.55])
        parts.add(name, sweep(path, profile, scales))
        return
    end = half * (taper if "tapered" in style or style == "splayed" else 1.0)
    parts.add(name, sweep([top, bottom], profile, [half, end]))


def add_four_legs(parts: Parts, half_w: float, half_d: float, top_y: float, half: float,
                  style: str, splay: float = 0.0, taper: float = 0.6, name="leg") -> list:
    """Legs at the four corners (x = +-half_w, z = +-half_d); `splay` pushes the feet outward.
    Returns the foot positions (for stretchers)."""
    feet = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            top = (sx * half_w, top_y, sz * half_d)
            foot = (sx * (half_w + splay), 0.0, sz * (half_d + splay))
            add_leg(parts, top, foot, half, style, taper, name)
            feet.append((top, foot))
    return feet


def add_stretchers(parts: Parts, feet, height_frac: float, half: float, sides_only: bool):
    """Rails between legs at a fraction of the leg height (H-stretcher or a ring of four)."""
    points = [np.asarray(top) + height_frac * (np.asarray(foot) - np.asarray(top))
              for top, foot in feet]
    # feet order: (-x,-z), (-x,+z), (+x,-z), (+x,+z)
    pairs = [(0, 1), (2, 3)] if sides_only else [(0, 1), (2, 3), (0, 2), (1, 3)]
    for a, b in pairs:
        parts.add("stretcher", rod(points[a], points[b], half, sections=8))


def add_handle(parts: Parts, x: float, y: float, z_front: float, style: str, length: float):
    if style == "knob":
        parts.add("handle", rod((x, y, z_front), (x, y, z_front + 0.025), 0.012, sections=8))
    elif style == "bar":
        parts.add("handle", box_between((x - length / 2, y - 0.008, z_front),
                                        (x + length / 2, y + 0.008, z_front + 0.025)))
    elif style == "ring":
        parts.add("handle", sphere(0.014, (x, y, z_front + 0.01), subdivisions=1))
    # "none": push-to-open fronts, no hardware


def add_fronts(parts: Parts, x0, x1, y0, y1, z_front, rows: int, cols: int, name: str,
               handle: str, handle_at: str = "center"):
    """A grid of drawer or door fronts over a rectangle of a carcass front, small gaps between."""
    gap = 0.006
    xs = np.linspace(x0, x1, cols + 1)
    ys = np.linspace(y0, y1, rows + 1)
    for r in range(rows):
        for c in range(cols):
            a, b = xs[c] + gap, xs[c + 1] - gap
            lo, hi = ys[r] + gap, ys[r + 1] - gap
            parts.add(name, box_between((a, lo, z_front - 0.005), (b, hi, z_front + 0.015)))
            hx = (a + b) / 2
            if handle_at == "side":  # doors: handle near the meeting edge
                hx = b - 0.05 if c % 2 == 0 else a + 0.05
            hy = (lo + hi) / 2 if name == "drawer" else lo + 0.75 * (hi - lo)
            add_handle(parts, hx, hy, z_front + 0.015, handle, min(0.15, 0.4 * (b - a)))


# ---------------------------------------------------------------- categories

def chair(rng):
    w, d = _u(rng, 0.40, 0.56), _u(rng, 0.40, 0.52)
    seat_h, seat_t = _u(rng, 0.40, 0.48), _u(rng, 0.025, 0.09)
    legs = _pick(rng, LEG_STYLES + ("sled", "pedestal", "cantilever"))
    back = _pick(rng, ("solid", "slats_vertical", "rails_horizontal", "curved", "ladder",
                       "spindles", "frame_open", "cushion"))
    arms = _pick(rng, ("none", "none", "box", "tube", "panel"))
    seat_shape = _pick(rng, ("box", "box", "round"))
    back_h, tilt = _u(rng, 0.28, 0.55), _u(rng, 0.0, 16.0, 1)
    back_t, leg_half = _u(rng, 0.018, 0.05), _u(rng, 0.012, 0.028)
    params = dict(width=w, depth=d, seat_height=seat_h, seat_thickness=seat_t, legs=legs,
                  back=back, arms=arms, seat_shape=seat_shape, back_height=back_h,
                  back_tilt_deg=tilt, back_thickness=back_t, leg_half=leg_half)
    parts = Parts()
    seat_y0 = seat_h - seat_t
    if seat_shape == "round":
        parts.add("seat", disk(0.5, seat_y0, seat_h, sections=20, scale_xz=(w, d)))
    else:
        parts.add("seat", box((w, seat_t, d), (0, seat_h - seat_t / 2, 0)))
    _chair_legs(parts, rng, params, w, d, seat_y0, leg_half)
    back_parts = _chair_back(rng, params, w, back_h, back_t, seat_h)
    pivot = (0.0, seat_h, -d / 2 + back_t / 2)
    parts.merge(back_parts, rotation_x(-math.radians(tilt), pivot))
    _chair_arms(parts, rng, params, w, d, seat_h, arms)
    return parts, params


def _chair_legs(parts, rng, params, w, d, seat_y0, half):
    style = params["legs"]
    if style in LEG_STYLES:
        inset = _u(rng, 0.0, 0.04)
        splay = _u(rng, 0.02, 0.07) if style == "splayed" else 0.0
        feet = add_four_legs(parts, w / 2 - inset - half, d / 2 - inset - half, seat_y0, half,
                             style, splay, _u(rng, 0.45, 0.9))
        stretch = _pick(rng, ("none", "none", "h", "ring"))
        params.update(leg_inset=inset, splay=splay, stretchers=stretch)
        if stretch != "none":
            add_stretchers(parts, feet, _u(rng, 0.55, 0.8), half * 0.5, stretch == "h")
    elif style == "pedestal":
        arms_n = int(rng.integers(4, 6))
        params["base_arms"] = arms_n
        parts.add("leg", rod((0, seat_y0, 0), (0, 0.08, 0), 0.03, sections=12))
        parts.add("leg", disk(0.06, seat_y0 - 0.04, seat_y0, sections=12))
        for k in range(arms_n):
            a = 2 * math.pi * k / arms_n
            tip = (0.3 * math.sin(a), 0.05, 0.3 * math.cos(a))
            parts.add("base", rod((0, 0.08, 0), tip, 0.02, 0.014, square=True))
            parts.add("caster", sphere(0.025, (tip[0], 0.025, tip[2])))
    else:  # tubular steel: sled runners or a cantilever frame on each side
        r = _u(rng, 0.009, 0.015)
        params["tube_radius"] = r
        for sx in (-1, 1):
            x = sx * (w / 2 - 0.02)
            if style == "sled":
                pts = [(x, seat_y0, d / 2 - 0.05), (x, r, d / 2), (x, r, -d / 2),
                       (x, seat_y0, -d / 2 + 0.05)]
            else:
                pts = [(x, seat_y0, -d / 2 + 0.05), (x, seat_y0, d / 2), (x, r, d / 2 + 0.02),
                       (x, r, -d / 2)]
            parts.add("leg", sweep(smooth_path(pts, 3), circle(8) * r))


def _chair_back(rng, params, w, h, t, seat_h) -> Parts:
    """The back, built upright on the seat's rear edge (z = -d/2 is applied by the pivot)."""
    style = params["back"]
    d_half = params["depth"] / 2
    z = -d_half + t / 2
    y0, y1 = seat_h, seat_h + h
    bw = w * _u(rng, 0.8, 1.0)
    parts = Parts()
    post = _u(rng, 0.015, 0.03)
    params["back_width"] = bw

    def posts():
        for sx in (-1, 1):
            parts.add("back", box_between((sx * bw / 2 - post, y0, z - t / 2),
                                          (sx * bw / 2 + post, y1, z + t / 2)))

    if style in ("solid", "cushion"):
        thick = t * (2.5 if style == "cushion" else 1.0)
        parts.add("back", box((bw, h, thick), (0, (y0 + y1) / 2, z + thick / 2 - t / 2)))
    elif style == "curved":
        bend = _u(rng, 0.03, 0.1)
        xs = np.linspace(-bw / 2, bw / 2, 9)
        path = np.stack([xs, np.full_like(xs, (y0 + y1) / 2),
                         z + bend * (2 * xs / bw) ** 2], axis=1)
        params["back_bend"] = bend
        parts.add("back", sweep(path, rect(h / 2, t / 2), reference=(0, 1, 0)))
    else:
        posts()
        rail = _u(rng, 0.03, 0.08)
        parts.add("back", box_between((-bw / 2, y1 - rail, z - t / 2), (bw / 2, y1, z + t / 2)))
        n = int(rng.integers(2, 7))
        params["back_members"] = n
        if style == "slats_vertical":
            sw = _u(rng, 0.015, 0.05)
            for x in np.linspace(-bw / 2, bw / 2, n + 2)[1:-1]:
                parts.add("back", box_between((x - sw, y0, z - t / 4), (x + sw, y1, z + t / 4)))
        elif style == "spindles":
            for x in np.linspace(-bw / 2, bw / 2, n + 2)[1:-1]:
                parts.add("back", rod((x, y0, z), (x, y1 - rail, z), 0.008, sections=8))
        elif style in ("rails_horizontal", "ladder"):
            n = min(n, 4) if style == "ladder" else n
            for y in np.linspace(y0, y1 - rail, n + 1)[1:-1]:
                rh = rail * (0.7 if style == "ladder" else 0.35)
                parts.add("back", box_between((-bw / 2, y - rh / 2, z - t / 3),
                                              (bw / 2, y + rh / 2, z + t / 3)))
        else:  # frame_open: one mid rail
            parts.add("back", box_between((-bw / 2, y0 + h * 0.4, z - t / 3),
                                          (bw / 2, y0 + h * 0.4 + rail / 2, z + t / 3)))
    return parts


def _chair_arms(parts, rng, params, w, d, seat_h, style):
    if style == "none":
        return
    arm_h = seat_h + _u(rng, 0.17, 0.26)
    params["arm_height"] = arm_h
    for sx in (-1, 1):
        x = sx * (w / 2 + 0.02)
        if style == "box":
            parts.add("arm", box_between((x - 0.025, arm_h - 0.03, -d / 2), (x + 0.025, arm_h, d / 2 - 0.02)))
            parts.add("arm", box_between((x - 0.015, seat_h - 0.02, d / 2 - 0.07),
                                         (x + 0.015, arm_h, d / 2 - 0.04)))
        elif style == "tube":
            pts = [(x, arm_h, -d / 2), (x, arm_h, d / 2 - 0.05), (x, seat_h - 0.03, d / 2 - 0.05)]
            parts.add("arm", sweep(smooth_path(pts, 3), circle(8) * 0.013))
        else:  # panel: solid sides down to the seat
            parts.add("arm", box_between((x - 0.025, seat_h - 0.1, -d / 2), (x + 0.025, arm_h, d / 2)))


def table(rng):
    shape = _pick(rng, ("rect", "rect", "round", "oval"))
    w = _u(rng, 0.8, 1.9) if shape != "round" else _u(rng, 0.7, 1.2)
    d = _u(rng, 0.6, 1.0) if shape == "rect" else (w if shape == "round" else _u(rng, 0.6, 0.9) * w)
    h, top_t = _u(rng, 0.70, 0.78), _u(rng, 0.02, 0.06)
    legs = _pick(rng, LEG_STYLES + ("pedestal", "trestle", "panel", "hairpin"))
    params = dict(top=shape, width=w, depth=d, height=h, top_thickness=top_t, legs=legs)
    parts = Parts()
    if shape == "rect":
        parts.add("top", box((w, top_t, d), (0, h - top_t / 2, 0)))
    else:
        parts.add("top", disk(0.5, h - top_t, h, sections=28, scale_xz=(w, d)))
    y0 = h - top_t
    round_top = shape != "rect"
    inset = _u(rng, 0.03, 0.12) + (0.15 * min(w, d) if round_top else 0.0)
    hw, hd = w / 2 - inset, d / 2 - inset
    if round_top:
        hw, hd = hw / math.sqrt(2) * 1.2, hd / math.sqrt(2) * 1.2
    half = _u(rng, 0.015, 0.04)
    params.update(leg_inset=inset, leg_half=half)
    if legs in LEG_STYLES:
        splay = _u(rng, 0.02, 0.08) if legs == "splayed" else 0.0
        feet = add_four_legs(parts, hw, hd, y0, half, legs, splay, _u(rng, 0.4, 0.9))
        apron = rng.random() < 0.6
        params.update(apron=bool(apron), splay=splay)
        if apron and not round_top:
            ah = _u(rng, 0.05, 0.12)
            for sz in (-1, 1):
                parts.add("apron", box_between((-hw, y0 - ah, sz * hd - 0.01), (hw, y0, sz * hd + 0.01)))
            for sx in (-1, 1):
                parts.add("apron", box_between((sx * hw - 0.01, y0 - ah, -hd), (sx * hw + 0.01, y0, hd)))
        if rng.random() < 0.3:
            params["shelf"] = True
            sy = _u(rng, 0.12, 0.3)
            parts.add("shelf", box((2 * hw, 0.02, 2 * hd), (0, sy, 0)))
        elif rng.random() < 0.3:
            add_stretchers(parts, feet, 0.8, half * 0.5, sides_only=True)
    elif legs == "pedestal":
        col = _u(rng, 0.04, 0.1)
        feet = _pick(rng, ("disk", "cross", "tripod"))
        params.update(column=col, feet=feet)
        parts.add("leg", rod((0, 0.05, 0), (0, y0, 0), col, col * _u(rng, 0.6, 1.2), sections=14))
        if feet == "disk":
            parts.add("base", disk(min(w, d) * 0.3, 0.0, 0.05, sections=20))
        else:
            n = 4 if feet == "cross" else 3
            for k in range(n):
                a = 2 * math.pi * k / n + math.pi / 4
                tip = (0.3 * w * math.sin(a), 0.02, 0.3 * d * math.cos(a))
                parts.add("base", rod((0, 0.08, 0), tip, 0.025, 0.015, square=True))
    elif legs in ("trestle", "panel"):
        thick = _u(rng, 0.02, 0.06)
        for sx in (-1, 1):
            x = sx * hw
            if legs == "panel":
                parts.add("leg", box_between((x - thick, 0, -hd), (x + thick, y0, hd)))
            else:
                parts.add("leg", box_between((x - thick, 0.05, -0.04), (x + thick, y0, 0.04)))
                parts.add("leg", box_between((x - thick, 0, -hd), (x + thick, 0.05, hd)))
        parts.add("stretcher", box_between((-hw, y0 * 0.45, -0.02), (hw, y0 * 0.45 + 0.05, 0.02)))
    else:  # hairpin: two thin rods per corner meeting at the foot
        for sx in (-1, 1):
            for sz in (-1, 1):
                foot = (sx * hw, 0.0, sz * hd)
                parts.add("leg", rod((sx * hw, y0, sz * (hd - 0.08)), foot, 0.006, sections=6))
                parts.add("leg", rod((sx * hw, y0, sz * hd), foot, 0.006, sections=6))
    return parts, params


def sofa(rng):
    seats = int(rng.integers(1, 5))
    seat_w = _u(rng, 0.5, 0.68)
    arm_style = _pick(rng, ("none", "box", "rolled", "thin", "sloped"))
    arm_w = {"none": 0.0, "thin": _u(rng, 0.04, 0.08)}.get(arm_style, _u(rng, 0.1, 0.25))
    W, D = seats * seat_w + 2 * arm_w, _u(rng, 0.78, 1.0)
    leg_h = _pick(rng, (0.0, _u(rng, 0.04, 0.18)))
    base_top = leg_h + _u(rng, 0.15, 0.25)
    cushion_t = _u(rng, 0.08, 0.16)
    seat_h = base_top + cushion_t
    back_h, back_t = _u(rng, 0.3, 0.55), _u(rng, 0.12, 0.25)
    back_style = _pick(rng, ("slab", "cushions", "low_slab"))
    chaise = seats >= 2 and rng.random() < 0.25
    params = dict(seats=seats, seat_width=seat_w, arms=arm_style, arm_width=arm_w, width=W,
                  depth=D, leg_height=leg_h, seat_height=seat_h, back_height=back_h,
                  back_thickness=back_t, back=back_style, chaise=bool(chaise))
    parts = Parts()
    parts.add("base", box_between((-W / 2, leg_h, -D / 2), (W / 2, base_top, D / 2)))
    if chaise:
        ext = _u(rng, 0.5, 0.8)
        parts.add("base", box_between((W / 2 - arm_w - seat_w, leg_h, D / 2), (W / 2 - arm_w, base_top, D / 2 + ext)))
        parts.add("cushion", box_between((W / 2 - arm_w - seat_w + 0.01, base_top, D / 2 - 0.02),
                                         (W / 2 - arm_w - 0.01, seat_h, D / 2 + ext - 0.02)))
    x0 = -W / 2 + arm_w
    one_cushion = rng.random() < 0.3
    n_cushions = 1 if one_cushion else seats
    xs = np.linspace(x0, W / 2 - arm_w, n_cushions + 1)
    for a, b in zip(xs[:-1], xs[1:]):
        parts.add("cushion", box_between((a + 0.008, base_top, -D / 2 + back_t), (b - 0.008, seat_h, D / 2 - 0.01)))
    top = seat_h + back_h * (0.6 if back_style == "low_slab" else 1.0)
    parts.add("back", box_between((-W / 2, base_top, -D / 2), (W / 2, top, -D / 2 + back_t * 0.6)))
    if back_style == "cushions":
        for a, b in zip(xs[:-1], xs[1:]):
            parts.add("cushion", box_between((a + 0.01, seat_h, -D / 2 + back_t * 0.55),
                                             (b - 0.01, top - 0.03, -D / 2 + back_t * 1.1)))
    if arm_style != "none":
        arm_top = seat_h + _u(rng, 0.12, 0.25)
        params["arm_height"] = arm_top
        for sx in (-1, 1):
            lo_x, hi_x = sorted((sx * W / 2, sx * (W / 2 - arm_w)))
            if arm_style == "sloped":
                x_mid = (lo_x + hi_x) / 2
                path = [(x_mid, leg_h, 0.0), (x_mid, arm_top, 0.0)]
                parts.add("arm", sweep(path, rect(arm_w / 2, D / 2), [1.0, 0.7], reference=(1, 0, 0)))
            else:
                parts.add("arm", box_between((lo_x, leg_h, -D / 2), (hi_x, arm_top, D / 2)))
            if arm_style == "rolled":
                xc = (lo_x + hi_x) / 2
                parts.add("arm", rod((xc, arm_top, -D / 2), (xc, arm_top, D / 2), arm_w / 2 + 0.02, sections=14))
    if leg_h > 0:
        style = _pick(rng, ("square", "round", "tapered_round"))
        params["leg_style"] = style
        add_four_legs(parts, W / 2 - 0.05, D / 2 - 0.05, leg_h, 0.02, style, 0.0, 0.6)
    return parts, params


def bed(rng):
    W = _pick(rng, (0.9, 1.4, 1.6, 1.8)) + _u(rng, -0.05, 0.05)
    L = _u(rng, 1.95, 2.15)
    frame_h, frame_t = _u(rng, 0.15, 0.4), _u(rng, 0.1, 0.25)
    mat_t = _u(rng, 0.14, 0.3)
    head = _pick(rng, ("panel", "slats", "padded", "posts", "arched", "none"))
    foot = _pick(rng, ("none", "none", "low", "posts"))
    pillows = int(rng.integers(0, 3 if W < 1.2 else 4))
    params = dict(width=W, length=L, frame_height=frame_h, frame_thickness=frame_t,
                  mattress=mat_t, headboard=head, footboard=foot, pillows=pillows)
    parts = Parts()
    z_head, z_foot = -L / 2, L / 2
    base_lo = frame_h - frame_t
    parts.add("frame", box_between((-W / 2, base_lo, z_head), (W / 2, frame_h, z_foot)))
    if base_lo > 0.01:
        style = _pick(rng, ("square", "round", "tapered_square"))
        params["legs"] = style
        add_four_legs(parts, W / 2 - 0.05, L / 2 - 0.05, base_lo, 0.03, style, 0.0, 0.7)
    top = frame_h + mat_t
    parts.add("mattress", box_between((-W / 2 + 0.02, frame_h, z_head + 0.03), (W / 2 - 0.02, top, z_foot - 0.02)))
    if rng.random() < 0.5:
        params["blanket"] = True
        parts.add("blanket", box_between((-W / 2, top - mat_t * 0.6, z_foot - L * _u(rng, 0.5, 0.75)),
                                         (W / 2, top + 0.02, z_foot + 0.01)))
    pw = (W - 0.1) / max(pillows, 1)
    for k in range(pillows):
        x = -W / 2 + 0.05 + (k + 0.5) * pw
        parts.add("pillow", box((pw - 0.04, 0.12, 0.35), (x, top + 0.06, z_head + 0.25)))
    head_h = top + _u(rng, 0.3, 0.8)
    params["headboard_height"] = head_h
    _bed_board(parts, rng, head, W, z_head - 0.03, head_h, "headboard")
    if foot != "none":
        _bed_board(parts, rng, "panel" if foot == "low" else "posts", W, z_foot + 0.03,
                   top + _u(rng, 0.05, 0.3), "footboard")
    return parts, params


def _bed_board(parts, rng, style, W, z, h, name):
    t = 0.05
    if style == "none":
        return
    if style in ("panel", "padded"):
        tt = t * (3 if style == "padded" else 1)
        parts.add(name, box_between((-W / 2, 0.0, z - tt / 2), (W / 2, h, z + tt / 2)))
    elif style == "arched":
        parts.add(name, box_between((-W / 2, 0.0, z - t / 2), (W / 2, h * 0.85, z + t / 2)))
        # a flat half-ellipse on top of the panel: a thin disk turned to face +z
        parts.add(name, disk(W / 2, -t / 2, t / 2, sections=24, scale_xz=(1.0, 0.35)),
                  _translate(0, h * 0.85, z) @ rotation_x(math.pi / 2))
    else:  # slats or posts: two posts, a top rail, vertical slats
        for sx in (-1, 1):
            parts.add(name, rod((sx * W / 2, 0, z), (sx * W / 2, h, z), 0.035, square=style == "slats"))
        parts.add(name, box_between((-W / 2, h - 0.08, z - t / 2), (W / 2, h - 0.02, z + t / 2)))
        n = int(rng.integers(3, 10)) if style == "slats" else 0
        for x in np.linspace(-W / 2, W / 2, n + 2)[1:-1]:
            parts.add(name, box_between((x - 0.02, 0.2, z - 0.015), (x + 0.02, h - 0.08, z + 0.015)))


def _translate(x, y, z):
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    return m


def lamp(rng):
    kind = _pick(rng, ("floor", "table", "desk"))
    height = {"floor": _u(rng, 1.3, 1.8), "table": _u(rng, 0.4, 0.7), "desk": _u(rng, 0.35, 0.6)}[kind]
    base = _pick(rng, ("disk", "square", "tripod", "dome"))
    shade = _pick(rng, ("frustum", "drum", "dome", "globe", "cone"))
    stem = _pick(rng, ("straight", "straight", "bent", "jointed"))
    base_r = _u(rng, 0.08, 0.18) * (1.5 if kind == "floor" else 1.0)
    params = dict(kind=kind, height=height, base=base, shade=shade, stem=stem, base_radius=base_r)
    parts = Parts()
    bh = _u(rng, 0.02, 0.05)
    if base == "disk":
        parts.add("base", disk(base_r, 0.0, bh, sections=20))
    elif base == "square":
        parts.add("base", box((2 * base_r, bh, 2 * base_r), (0, bh / 2, 0)))
    elif base == "dome":
        bh = bh * 2
        parts.add("base", revolve([[base_r, 0], [base_r * 0.8, bh * 0.7], [0.03, bh], [0.01, bh], [0.01, 0]], 18))
    else:
        bh = height * 0.35
        for k in range(3):
            a = 2 * math.pi * k / 3
            parts.add("base", rod((0, bh, 0), (base_r * 1.5 * math.sin(a), 0, base_r * 1.5 * math.cos(a)), 0.01, 0.008, sections=6))
    stem_r = _u(rng, 0.008, 0.02)
    if stem == "straight":
        path = [(0, bh, 0), (0, height, 0)]
    elif stem == "bent":  # arc leaning forward
        reach = _u(rng, 0.1, 0.35) * height
        t = np.linspace(0, 1, 9)
        path = np.stack([np.zeros_like(t), bh + t * (height - bh), reach * t ** 2], axis=1)
    else:  # two segments with an elbow joint
        elbow = (0.0, bh + (height - bh) * _u(rng, 0.45, 0.6), -_u(rng, 0.05, 0.2) * height)
        path = [(0, bh, 0), elbow, (0, height, _u(rng, 0.1, 0.3) * height)]
        parts.add("joint", sphere(stem_r * 2.2, elbow))
    path = np.asarray(path, float)
    parts.add("stem", sweep(path, circle(8) * stem_r))
    _lamp_shade(parts, rng, params, shade, path[-1], height)
    return parts, params


def _lamp_shade(parts, rng, params, shade, tip, height):
    size = _u(rng, 0.12, 0.25) * (1.6 if params["kind"] == "floor" else 1.0)
    params["shade_size"] = size
    x, y, z = tip
    if shade == "globe":
        parts.add("shade", sphere(size * 0.6, (x, y + size * 0.45, z), subdivisions=2))
        return
    if shade == "frustum":
        outline = [[size, y - size * 0.5], [size * _u(rng, 0.45, 0.8), y + size * 0.5]]
    elif shade == "drum":
        outline = [[size, y - size * 0.45], [size, y + size * 0.45]]
    elif shade == "cone":  # desk-lamp reflector opening downwards
        outline = [[size * 0.9, y - size * 0.7], [size * 0.2, y + 0.02]]
    else:  # dome
        a = np.linspace(0, math.pi / 2, 7)
        outline = np.stack([size * np.cos(a) + 0.01, y - size * 0.4 + size * 0.8 * np.sin(a)], 1)
    parts.add("shade", revolve(shell_profile(outline, 0.006), 20, center=(x, 0, z)))
    parts.add("bulb", sphere(min(0.035, size * 0.3), (x, y - size * 0.1, z)))


def cabinet(rng):
    W, H, D = _u(rng, 0.4, 1.6), _u(rng, 0.5, 2.0), _u(rng, 0.35, 0.6)
    base = _pick(rng, ("plinth", "legs", "feet", "none"))
    layout = _pick(rng, ("doors", "drawers", "mixed", "open_shelves"))
    handle = _pick(rng, ("knob", "bar", "ring", "none"))
    base_h = 0.0 if base == "none" else _u(rng, 0.04, 0.18)
    params = dict(width=W, height=H, depth=D, base=base, layout=layout, handle=handle,
                  base_height=base_h)
    parts = Parts()
    y0 = base_h
    t = 0.02
    if layout == "open_shelves":  # a bookcase-like carcass: sides, top, bottom, shelves
        shelves = int(rng.integers(1, 6))
        params["shelves"] = shelves
        for sx in (-1, 1):
            parts.add("body", box_between((sx * W / 2 - t, y0, -D / 2), (sx * W / 2, H, D / 2)))
        parts.add("body", box_between((-W / 2, H - t, -D / 2), (W / 2, H, D / 2)))
        parts.add("body", box_between((-W / 2, y0, -D / 2), (W / 2, y0 + t, D / 2)))
        parts.add("body", box_between((-W / 2, y0, -D / 2), (W / 2, H, -D / 2 + t / 2)))
        for y in np.linspace(y0, H, shelves + 2)[1:-1]:
            parts.add("shelf", box_between((-W / 2, y - t / 2, -D / 2), (W / 2, y + t / 2, D / 2 - 0.01)))
    else:
        parts.add("body", box_between((-W / 2, y0, -D / 2), (W / 2, H, D / 2)))
        doors = max(1, int(round(W / _u(rng, 0.35, 0.6))))
        rows = max(2, int(round((H - y0) / _u(rng, 0.15, 0.3))))
        split = y0 + (H - y0) * _u(rng, 0.55, 0.75)
        params.update(doors=doors, drawer_rows=rows)
        xa, xb = -W / 2 + t, W / 2 - t
        if layout == "doors":
            add_fronts(parts, xa, xb, y0 + t, H - t, D / 2, 1, doors, "door", handle, "side")
        elif layout == "drawers":
            add_fronts(parts, xa, xb, y0 + t, H - t, D / 2, min(rows, 7), 1 if W < 0.9 else 2, "drawer", handle)
        else:
            add_fronts(parts, xa, xb, y0 + t, split, D / 2, 1, doors, "door", handle, "side")
            add_fronts(parts, xa, xb, split, H - t, D / 2, int(rng.integers(1, 3)), doors, "drawer", handle)
    if rng.random() < 0.4:
        over = _u(rng, 0.01, 0.04)
        params["top_overhang"] = over
        parts.add("top", box_between((-W / 2 - over, H, -D / 2 - over / 2), (W / 2 + over, H + 0.025, D / 2 + over)))
    if base == "plinth":
        parts.add("base", box_between((-W / 2 + 0.03, 0, -D / 2 + 0.03), (W / 2 - 0.03, base_h, D / 2 - 0.03)))
    elif base in ("legs", "feet"):
        style = "tapered_round" if base == "legs" else "round"
        half = 0.02 if base == "legs" else 0.035
        add_four_legs(parts, W / 2 - 0.05, D / 2 - 0.05, base_h, half, style, 0.0, 0.6)
    return parts, params


def stool(rng):
    seat = _pick(rng, ("round", "square", "saddle"))
    r = _u(rng, 0.15, 0.23)
    h = _pick(rng, (_u(rng, 0.42, 0.5), _u(rng, 0.6, 0.8)))
    legs = int(rng.integers(3, 5)) if rng.random() < 0.8 else 0
    style = _pick(rng, ("round", "square", "tapered_round", "splayed"))
    seat_t = _u(rng, 0.025, 0.06)
    footrest = _pick(rng, ("none", "ring", "rungs")) if h > 0.55 else _pick(rng, ("none", "rungs"))
    params = dict(seat=seat, seat_radius=r, height=h, legs=legs, leg_style=style,
                  seat_thickness=seat_t, footrest=footrest)
    parts = Parts()
    y0 = h - seat_t
    if seat == "square":
        parts.add("seat", box((2 * r, seat_t, 2 * r), (0, h - seat_t / 2, 0)))
    elif seat == "saddle":
        parts.add("seat", revolve([[r, y0], [r * 1.02, h - seat_t * 0.3], [r * 0.6, h], [0.01, h - seat_t * 0.2], [0.01, y0]], 20))
    else:
        parts.add("seat", disk(r, y0, h, sections=20))
    if legs == 0:  # pedestal bar stool
        parts.add("leg", rod((0, 0.03, 0), (0, y0, 0), 0.025, sections=12))
        parts.add("base", disk(r * 1.1, 0.0, 0.03, sections=20))
        if footrest == "ring":
            parts.add("footrest", torus(r * 0.8, 0.01, h * 0.35))
        return parts, params
    splay = _u(rng, 0.04, 0.1) if style == "splayed" else _u(rng, 0.0, 0.02)
    half = _u(rng, 0.012, 0.025)
    leg_r = r * _u(rng, 0.6, 0.85)
    feet = []
    for k in range(legs):
        a = 2 * math.pi * k / legs + (math.pi / 4 if legs == 4 and seat == "square" else 0.0)
        dx, dz = math.sin(a), math.cos(a)
        top = (leg_r * dx, y0, leg_r * dz)
        foot = ((leg_r + splay) * dx, 0.0, (leg_r + splay) * dz)
        add_leg(parts, top, foot, half, style, 0.6)
        feet.append((np.array(top), np.array(foot)))
    params["splay"] = splay
    if footrest == "ring":
        frac = _u(rng, 0.55, 0.75)  # how far down the legs, top = 0, floor = 1
        parts.add("footrest", torus(leg_r + splay * frac, 0.01, y0 * (1 - frac)))
    elif footrest == "rungs":
        y_frac = _u(rng, 0.6, 0.8)
        pts = [top + y_frac * (foot - top) for top, foot in feet]
        for k in range(legs):
            parts.add("footrest", rod(pts[k], pts[(k + 1) % legs], half * 0.5, sections=6))
    return parts, params


def desk(rng):
    W, D, H = _u(rng, 1.0, 1.8), _u(rng, 0.5, 0.8), _u(rng, 0.72, 0.78)
    top_t = _u(rng, 0.02, 0.05)
    support = _pick(rng, ("legs", "panels", "pedestal_left", "pedestal_right", "two_pedestals", "trestle"))
    handle = _pick(rng, ("knob", "bar", "none"))
    params = dict(width=W, depth=D, height=H, top_thickness=top_t, support=support, handle=handle)
    parts = Parts()
    y0 = H - top_t
    parts.add("top", box((W, top_t, D), (0, H - top_t / 2, 0)))
    ped_w = _u(rng, 0.35, 0.5)
    drawers = int(rng.integers(2, 5))
    sides = []  # x ranges that need a non-pedestal support
    if support in ("legs", "trestle"):
        style = _pick(rng, ("square", "round", "tapered_square"))
        half = _u(rng, 0.015, 0.035)
        if support == "legs":
            add_four_legs(parts, W / 2 - half - 0.02, D / 2 - half - 0.02, y0, half, style)
        else:
            for sx in (-1, 1):
                x = sx * (W / 2 - 0.1)
                parts.add("leg", box_between((x - 0.03, 0.04, -0.03), (x + 0.03, y0, 0.03)))
                parts.add("leg", box_between((x - 0.03, 0, -D / 2 + 0.03), (x + 0.03, 0.04, D / 2 - 0.03)))
        params["leg_style"] = style
    else:
        peds = {"pedestal_left": [-1], "pedestal_right": [1], "two_pedestals": [-1, 1]}.get(support, [])
        params.update(pedestal_width=ped_w, drawers=drawers)
        for sx in peds:
            a, b = sorted((sx * W / 2, sx * (W / 2 - ped_w)))
            parts.add("body", box_between((a, 0.0, -D / 2 + 0.02), (b, y0, D / 2 - 0.02)))
            add_fronts(parts, a + 0.01, b - 0.01, 0.05, y0 - 0.01, D / 2 - 0.02, drawers, 1, "drawer", handle)
        for sx in (-1, 1):
            if sx not in peds:
                sides.append(sx)
        for sx in sides:  # a side panel where there is no pedestal
            a, b = sorted((sx * W / 2, sx * (W / 2 - 0.04)))
            parts.add("leg", box_between((a, 0, -D / 2 + 0.02), (b, y0, D / 2 - 0.02)))
    if rng.random() < 0.5:
        params["modesty_panel"] = True
        parts.add("panel", box_between((-W / 2 + 0.05, y0 * _u(rng, 0.3, 0.6), -D / 2 + 0.04),
                                       (W / 2 - 0.05, y0, -D / 2 + 0.06)))
    hutch = _pick(rng, ("none", "none", "riser", "hutch"))
    params["hutch"] = hutch
    if hutch == "riser":
        parts.add("hutch", box_between((-W / 2, H, -D / 2), (W / 2, H + 0.02, -D / 2 + 0.25)))
        parts.add("hutch", box_between((-W / 2 + 0.05, H + 0.02, -D / 2), (-W / 2 + 0.07, H + 0.12, -D / 2 + 0.25)))
        parts.add("hutch", box_between((W / 2 - 0.07, H + 0.02, -D / 2), (W / 2 - 0.05, H + 0.12, -D / 2 + 0.25)))
    elif hutch == "hutch":
        hh = _u(rng, 0.4, 0.9)
        cubbies = int(rng.integers(1, 5))
        params["cubbies"] = cubbies
        parts.add("hutch", box_between((-W / 2, H, -D / 2), (W / 2, H + hh, -D / 2 + 0.02)))
        parts.add("hutch", box_between((-W / 2, H + hh - 0.02, -D / 2), (W / 2, H + hh, -D / 2 + 0.3)))
        for x in np.linspace(-W / 2, W / 2 - 0.02, cubbies + 1):
            parts.add("hutch", box_between((x, H, -D / 2), (x + 0.02, H + hh, -D / 2 + 0.3)))
    if rng.random() < 0.3:
        params["keyboard_tray"] = True
        parts.add("tray", box_between((-0.3, y0 - 0.1, D / 2 - 0.4), (0.3, y0 - 0.08, D / 2 - 0.02)))
    return parts, params


GENERATORS = {
    "chair": chair,
    "table": table,
    "sofa": sofa,
    "bed": bed,
    "lamp": lamp,
    "cabinet": cabinet,
    "stool": stool,
    "desk": desk,
}
