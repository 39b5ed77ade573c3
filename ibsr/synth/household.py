"""Household objects: tableware, containers, kitchen and bathroom fixtures.

Same conventions as `furniture.py`: one generator per category, `(rng) -> (Parts, params)`,
metres, +y up, floor at y=0, front towards +z, discrete style draws plus continuous
proportions rounded to mm. Vessels are solids of revolution with a real inside
(`vessel_profile`), handles are tubes swept along smoothed paths, and every thin part is at
least ~2 pixels wide in a 128 px rendering of the object.
"""

from __future__ import annotations

import math

import numpy as np

from .furniture import _pick, _u, add_fronts
from .primitives import (Parts, box_between, circle, disk, rect, revolve, rod, rotation_x, rounded_rect,
                         scaling, smooth_path, sphere, sweep, torus, translation, vessel_profile,
                         y_axis_to)


def _outline(radii, heights, smoothing: int = 2) -> np.ndarray:
    """Smooth (radius, height) outline through control points (vases, kettles, bowls)."""
    return smooth_path(np.stack([np.asarray(radii, float), np.asarray(heights, float)], 1), smoothing)


def _vessel(outline, wall, floor, sections=24):
    return revolve(vessel_profile(outline, wall, floor), sections)


def _radius_at(outline, y) -> float:
    return float(np.interp(y, outline[:, 1], outline[:, 0]))


def _side_handle(x_top, y_top, x_bottom, y_bottom, reach, style, half, direction=(1, 0, 0)):
    """A handle loop in the vertical plane through `direction` (x: mugs, -z: kettles),
    from the top attachment out by `reach` and back to the bottom one."""
    d = np.asarray(direction, float)
    if style == "square":
        pts = [(x_top, y_top), (x_top + reach, y_top), (x_top + reach, y_bottom), (x_bottom, y_bottom)]
        iterations = 2
    else:  # round "C"; an "ear" is a small C on the upper half
        if style == "ear":
            y_bottom, reach = (y_top + y_bottom) / 2, reach * 0.7
            x_bottom = (x_top + x_bottom) / 2
        pts = [(x_top, y_top), (x_top + reach * 0.8, y_top + 0.1 * reach),
               (x_top + reach, (y_top + y_bottom) / 2), (x_bottom + reach * 0.8, y_bottom - 0.1 * reach),
               (x_bottom, y_bottom)]
        iterations = 3
    path = np.array([p[0] * d + [0.0, p[1], 0.0] for p in pts])
    profile = rect(half * 0.7, half * 1.6) if style == "square" else circle(8) * half
    return sweep(smooth_path(path, iterations), profile, reference=(0, 1, 0))


# ---------------------------------------------------------------- tableware

def mug(rng):
    body = _pick(rng, ("cylinder", "tapered", "flared", "barrel", "footed"))
    r, h = _u(rng, 0.032, 0.05), _u(rng, 0.07, 0.12)
    wall = _u(rng, 0.003, 0.007)
    handle = _pick(rng, ("round", "square", "ear"))
    half = _u(rng, 0.005, 0.009)
    params = dict(body=body, radius=r, height=h, wall=wall, handle=handle, handle_half=half)
    t = np.linspace(0, 1, 6)
    shape = {"cylinder": np.ones_like(t), "tapered": 0.8 + 0.2 * t, "flared": 0.82 + 0.3 * t ** 2,
             "barrel": 0.9 + 0.15 * np.sin(math.pi * t), "footed": 0.65 + 0.35 * np.minimum(1, 3 * t)}[body]
    outline = _outline(r * shape, h * t, 1)
    parts = Parts()
    parts.add("body", _vessel(outline, wall, wall * 1.5))
    y_top, y_bottom = h * _u(rng, 0.72, 0.88), h * _u(rng, 0.18, 0.35)
    reach = _u(rng, 0.02, 0.04)
    params.update(handle_top=y_top, handle_bottom=y_bottom, handle_reach=reach)
    parts.add("handle", _side_handle(_radius_at(outline, y_top) - half, y_top,
                                     _radius_at(outline, y_bottom) - half, y_bottom, reach, handle, half))
    return parts, params


def glass(rng):
    kind = _pick(rng, ("tumbler", "highball", "pint", "stemless", "wine", "flute", "goblet"))
    params = dict(kind=kind)
    parts = Parts()
    wall = _u(rng, 0.003, 0.005)
    t = np.linspace(0, 1, 6)
    if kind in ("wine", "flute", "goblet"):
        foot_r = _u(rng, 0.03, 0.045)
        stem_h = _u(rng, 0.05, 0.11)
        bowl_r = {"wine": _u(rng, 0.038, 0.05), "flute": _u(rng, 0.022, 0.03), "goblet": _u(rng, 0.045, 0.06)}[kind]
        bowl_h = {"wine": _u(rng, 0.09, 0.13), "flute": _u(rng, 0.14, 0.19), "goblet": _u(rng, 0.07, 0.1)}[kind]
        profile = {"wine": np.sin(np.minimum(1, 1.6 * t) * math.pi / 2) * (1 - 0.18 * t ** 2),
                   "flute": 0.3 + 0.7 * np.sin(np.minimum(1, 2.5 * t) * math.pi / 2),
                   "goblet": np.sin(np.minimum(1, 1.2 * t) * math.pi / 2)}[kind]
        stem_r = _u(rng, 0.004, 0.006)
        params.update(foot_radius=foot_r, stem_height=stem_h, stem_radius=stem_r, bowl_radius=bowl_r,
                      bowl_height=bowl_h)
        parts.add("foot", revolve([[foot_r, 0.0], [foot_r, 0.003], [stem_r * 2, 0.008], [1e-4, 0.008],
                                   [1e-4, 0.0]], 24))
        parts.add("stem", rod((0, 0.006, 0), (0, stem_h + 0.004, 0), stem_r, sections=10))
        outline = _outline(np.maximum(bowl_r * profile, stem_r * 1.5), stem_h + bowl_h * t, 1)
        parts.add("bowl", _vessel(outline, wall, stem_h + 0.012))
        return parts, params
    r = {"tumbler": _u(rng, 0.035, 0.045), "highball": _u(rng, 0.028, 0.036),
         "pint": _u(rng, 0.038, 0.045), "stemless": _u(rng, 0.04, 0.05)}[kind]
    h = {"tumbler": _u(rng, 0.075, 0.105), "highball": _u(rng, 0.13, 0.17),
         "pint": _u(rng, 0.14, 0.16), "stemless": _u(rng, 0.1, 0.13)}[kind]
    taper = _u(rng, 0.75, 1.0)
    shape = taper + (1 - taper) * t
    if kind == "pint" and rng.random() < 0.5:  # nonic bulge below the rim
        shape = shape + 0.08 * np.exp(-((t - 0.8) / 0.08) ** 2)
    elif kind == "stemless":
        shape = 0.6 + 0.45 * np.sin(t * math.pi * 0.7)
    floor = _u(rng, 0.008, 0.02) if kind == "tumbler" else 0.006
    params.update(radius=r, height=h, taper=taper, floor=floor)
    parts.add("body", _vessel(_outline(r * shape, h * t, 1), wall, floor))
    return parts, params


def bottle(rng):
    section = _pick(rng, ("round", "round", "square", "flask"))
    shoulder = _pick(rng, ("round", "sloped", "flat", "long"))
    r, h = _u(rng, 0.028, 0.05), _u(rng, 0.16, 0.33)
    neck_r = r * _u(rng, 0.3, 0.5)
    neck_len = h * _u(rng, 0.08, 0.22)
    shoulder_h = h * {"round": _u(rng, 0.1, 0.16), "sloped": _u(rng, 0.12, 0.2),
                      "flat": _u(rng, 0.03, 0.06), "long": _u(rng, 0.22, 0.32)}[shoulder]
    body_h = h - neck_len - shoulder_h
    cap = _pick(rng, ("screw", "cork", "none", "tall"))
    label = _pick(rng, ("none", "band", "band"))
    params = dict(section=section, shoulder=shoulder, radius=r, height=h, neck_radius=neck_r,
                  neck_length=neck_len, shoulder_height=shoulder_h, cap=cap, label=label)
    parts = Parts()
    s = np.linspace(0, 1, 7)
    curve = {"round": np.sin(s * math.pi / 2) ** 0.5, "sloped": s, "flat": s,
             "long": 0.5 - 0.5 * np.cos(s * math.pi)}[shoulder]
    top = np.stack([r - (r - neck_r) * curve, body_h + shoulder_h * s], 1)
    lip = neck_r * 1.15
    neck = [[neck_r, h - 0.012], [lip, h - 0.01], [lip, h], [1e-4, h]]
    if section == "round":
        outline = np.concatenate([[[1e-4, 0.0], [r * 0.94, 0.0], [r, 0.006]], top, neck])
        parts.add("body", revolve(outline, 24))
    else:
        depth = r if section == "square" else r * _u(rng, 0.4, 0.6)
        params["depth"] = depth
        parts.add("body", sweep([(0, 0, 0), (0, body_h, 0)], rounded_rect(r, depth, r * 0.25),
                                reference=(1, 0, 0)))
        shoulder = np.concatenate([[[1e-4, body_h - 0.002], [r * 0.98, body_h - 0.002]], top, [[1e-4, top[-1, 1]]]])
        parts.add("body", revolve(shoulder, 24), scaling(1.0, 1.0, depth / r))  # flattened like the body
        parts.add("body",
                  revolve(np.concatenate([[[1e-4, top[-1, 1] - 0.005], [neck_r, top[-1, 1] - 0.005]], neck]), 16))
    if cap != "none":
        cap_h = {"screw": _u(rng, 0.012, 0.02), "cork": _u(rng, 0.015, 0.025), "tall": _u(rng, 0.03, 0.05)}[cap]
        cap_r = lip * (1.1 if cap != "cork" else 0.95)
        params["cap_height"] = cap_h
        parts.add("cap", disk(cap_r, h - (0.012 if cap != "cork" else 0.0), h + cap_h, sections=16))
    if label == "band":
        y0 = body_h * _u(rng, 0.15, 0.35)
        y1 = y0 + body_h * _u(rng, 0.25, 0.45)
        if section == "round":
            parts.add("label", disk(r * 1.01, y0, y1, sections=24))
        else:
            parts.add("label", box_between((-r * 0.8, y0, depth - 0.001), (r * 0.8, y1, depth + 0.002)))
    return parts, params


VASE_SHAPES = {  # radius at heights 0, .15, .35, .55, .75, .9, 1 of the height, as fractions of the widest
    "ovoid": (0.6, 0.85, 1.0, 0.95, 0.75, 0.55, 0.6),
    "amphora": (0.45, 0.8, 1.0, 0.85, 0.45, 0.32, 0.5),
    "cylinder": (0.95, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    "trumpet": (0.55, 0.42, 0.38, 0.45, 0.62, 0.85, 1.0),
    "gourd": (0.75, 1.0, 0.85, 0.5, 0.65, 0.45, 0.4),
    "bud": (0.7, 1.0, 0.9, 0.45, 0.22, 0.2, 0.3),
    "bowl_neck": (0.5, 0.9, 1.0, 0.7, 0.35, 0.3, 0.38),
}


def vase(rng):
    style = _pick(rng, tuple(VASE_SHAPES))
    R, h = _u(rng, 0.05, 0.14), _u(rng, 0.15, 0.5)
    jitter = rng.uniform(0.92, 1.08, size=7)
    radii = np.round(np.asarray(VASE_SHAPES[style]) * jitter * R, 4)
    handles = style in ("ovoid", "amphora", "bowl_neck") and rng.random() < 0.4
    foot = _pick(rng, ("none", "none", "ring", "pedestal"))
    params = dict(style=style, radius=R, height=h, radii=[float(x) for x in radii], handles=bool(handles),
                  foot=foot)
    parts = Parts()
    base = 0.0 if foot == "none" else _u(rng, 0.015, 0.05) * (2 if foot == "pedestal" else 1)
    heights = base + (h - base) * np.array([0, 0.15, 0.35, 0.55, 0.75, 0.9, 1.0])
    outline = _outline(radii, heights)
    wall = min(0.006, 0.4 * float(radii.min()))
    parts.add("vase", _vessel(outline, wall, base + 0.01, 28))
    if foot == "ring":
        parts.add("foot", disk(radii[0] * 1.05, 0.0, base + 0.002, sections=28))
    elif foot == "pedestal":
        parts.add("foot", revolve([[radii[0] * 1.3, 0.0], [radii[0] * 1.25, 0.01], [radii[0] * 0.5, base + 0.002],
                                   [1e-4, base + 0.002], [1e-4, 0.0]], 28))
    if handles:
        y_top, y_bottom = heights[5], heights[3]
        half = max(0.006, R * 0.07)
        for direction in ((1, 0, 0), (-1, 0, 0)):
            parts.add("handle", _side_handle(_radius_at(outline, y_top) - half, y_top,
                                             _radius_at(outline, y_bottom) - half, y_bottom,
                                             R * 0.45, "ear", half, direction))
    return parts, params


def bowl(rng):
    R, depth = _u(rng, 0.06, 0.16), _u(rng, 0.45, 0.95)  # height over rim radius
    roundness = _u(rng, 1.0, 3.5)  # 1: conical wall, larger: rounder
    base = _u(rng, 0.3, 0.55)
    foot = _pick(rng, ("none", "ring", "ring", "pedestal"))
    lip = rng.random() < 0.3
    params = dict(radius=R, depth_ratio=depth, roundness=roundness, base_ratio=base, foot=foot, lip=bool(lip))
    H = R * depth
    lift = {"none": 0.0, "ring": _u(rng, 0.006, 0.012), "pedestal": _u(rng, 0.03, 0.07)}[foot]
    s = np.linspace(0, 1, 9)
    radii = R * (base + (1 - base) * (1 - (1 - s) ** roundness))
    heights = lift + H * s
    if lip:
        radii, heights = np.append(radii, R * 1.08), np.append(heights, lift + H * 1.04)
    parts = Parts()
    wall = max(0.004, R * 0.04)
    parts.add("bowl", _vessel(np.stack([radii, heights], 1), wall, lift + wall, 28))
    if foot == "ring":
        parts.add("foot", revolve([[R * base * 0.95, 0], [R * base * 0.95, lift + 0.002],
                                   [R * base * 0.75, lift + 0.002], [R * base * 0.75, 0]], 28))
    elif foot == "pedestal":
        parts.add("foot", revolve([[R * base * 1.1, 0], [R * base * 1.05, 0.008], [R * 0.12, lift * 0.6],
                                   [R * 0.2, lift + 0.002], [1e-4, lift + 0.002], [1e-4, 0]], 24))
    return parts, params


# ---------------------------------------------------------------- containers

def bucket(rng):
    r_bottom, h = _u(rng, 0.09, 0.14), _u(rng, 0.18, 0.34)
    r_top = r_bottom * _u(rng, 1.05, 1.35)
    ribs = int(rng.integers(0, 4))
    bail = _pick(rng, ("up", "up", "down", "none"))
    grip = bail != "none" and rng.random() < 0.6
    params = dict(bottom_radius=r_bottom, top_radius=r_top, height=h, ribs=ribs, bail=bail, grip=bool(grip))
    parts = Parts()
    parts.add("body", _vessel([[r_bottom, 0.0], [r_top, h]], 0.004, 0.008, 28))
    parts.add("rim", torus(r_top, 0.007, h - 0.004, 28, 8))
    for k in range(ribs):
        y = h * (0.3 + 0.5 * (k + 1) / (ribs + 1))
        parts.add("rim", torus(r_bottom + (r_top - r_bottom) * y / h, 0.005, y, 28, 6))
    if bail == "none":
        return parts, params
    pivot_y = h - _u(rng, 0.02, 0.05)
    pivot_r = r_bottom + (r_top - r_bottom) * pivot_y / h + 0.008
    for sx in (-1, 1):
        parts.add("lug", disk(0.018, -0.006, 0.006, sections=10), y_axis_to("x", (sx * pivot_r, pivot_y, 0)))
    rise = pivot_r * _u(rng, 0.8, 1.1)
    a = np.linspace(0, math.pi, 17)
    arc = np.stack([pivot_r * np.cos(a), rise * np.sin(a), np.zeros_like(a)], 1)
    handle = Parts()
    handle.add("handle", sweep(arc, circle(6) * 0.006))
    if grip:
        handle.add("grip", rod((-0.06, rise, 0), (0.06, rise, 0), 0.014, sections=10))
    tilt = 0.0 if bail == "up" else -_u(rng, 1.2, 1.6)  # laid down over the back rim
    params.update(pivot_height=pivot_y, bail_rise=rise, bail_tilt=tilt)
    parts.merge(handle, translation(0, pivot_y, 0) @ rotation_x(tilt))
    return parts, params


def trash_can(rng):
    body = _pick(rng, ("round", "square", "tapered_open", "slim"))
    lid = _pick(rng, ("none", "flat", "dome", "swing")) if body != "tapered_open" else "none"
    pedal = lid in ("flat", "dome") and rng.random() < 0.6
    h = _u(rng, 0.3, 0.8)
    r = _u(rng, 0.12, 0.22) * (0.7 if body == "slim" else 1.0)
    params = dict(body=body, lid=lid, pedal=bool(pedal), height=h, radius=r)
    parts = Parts()
    body_h = h - (0.0 if lid == "none" else (0.03 if lid == "flat" else r * 0.5))
    round_body = body in ("round", "tapered_open")
    depth = r  # half depth: a round can's radius, a square bin's own
    if round_body:
        r_bottom = r * (_u(rng, 0.7, 0.85) if body == "tapered_open" else 0.97)
        parts.add("body", _vessel([[r_bottom, 0.0], [r, body_h]], 0.006, 0.02, 28))
        parts.add("rim", torus(r, 0.008, body_h - 0.005, 28, 6))
    else:  # an open box: floor and four walls
        depth = r * (_u(rng, 0.6, 0.9) if body == "slim" else _u(rng, 0.85, 1.0))
        params["depth"] = depth
        t = 0.012
        parts.add("body", box_between((-r, 0, -depth), (r, 0.02, depth)))
        for s in (-1, 1):
            parts.add("body", box_between((s * r - t, 0, -depth), (s * r + t, body_h, depth)))
            parts.add("body", box_between((-r, 0, s * depth - t), (r, body_h, s * depth + t)))

    def lid_slab(y0, y1):
        if round_body:
            return disk(r * 1.02, y0, y1, sections=28)
        return box_between((-r - 0.01, y0, -depth - 0.01), (r + 0.01, y1, depth + 0.01))

    if lid == "flat":
        parts.add("lid", lid_slab(body_h, h))
    elif lid in ("dome", "swing"):
        parts.add("lid", lid_slab(body_h, body_h + 0.02))
        a = np.linspace(0, math.pi / 2, 6)
        y0 = body_h + 0.02
        dome = np.concatenate([np.stack([r * np.cos(a) + 1e-4, y0 + (h - y0) * np.sin(a)], 1), [[1e-4, y0]]])
        parts.add("lid", revolve(dome, 24), scaling(1.0, 1.0, depth / r))
        if lid == "swing":  # the flap across the dome's front
            y = y0 + (h - body_h) * 0.35
            parts.add("flap", box_between((-r * 0.55, y - 0.05, depth * 0.5), (r * 0.55, y + 0.05, depth * 0.88)))
    if pedal:
        parts.add("pedal", box_between((-0.06, 0.02, depth - 0.02), (0.06, 0.045, depth + 0.07)))
    return parts, params


def kettle(rng):
    kind = _pick(rng, ("stovetop", "electric", "gooseneck", "teapot"))
    R = _u(rng, 0.07, 0.11)
    h = round(R * {"stovetop": _u(rng, 1.1, 1.7), "electric": _u(rng, 2.2, 3.0),
                   "gooseneck": _u(rng, 0.9, 1.3), "teapot": _u(rng, 1.0, 1.4)}[kind], 4)
    params = dict(kind=kind, radius=R, height=h)
    parts = Parts()
    t = np.linspace(0, 1, 7)
    shape = {"stovetop": 1.0 - 0.45 * t ** 1.5, "electric": 1.0 - _u(rng, 0.0, 0.25) * t,
             "gooseneck": np.ones_like(t) * 1.0, "teapot": 0.7 + 0.3 * np.sin(t * math.pi) + 0.05 * t}[kind]
    outline = _outline(np.maximum(R * shape, 0.02), h * t, 1)
    top_r = _radius_at(outline, h)
    parts.add("body", revolve(np.concatenate([[[1e-4, 0.0]], outline, [[1e-4, h]]]), 28))
    parts.add("lid", revolve([[top_r * 1.02, h - 0.004], [top_r * 0.9, h + 0.012], [top_r * 0.3, h + 0.02],
                              [1e-4, h + 0.02], [1e-4, h - 0.004]], 24))
    knob = _pick(rng, ("ball", "disk"))
    if knob == "ball":
        parts.add("knob", sphere(0.014, (0, h + 0.03, 0)))
    else:
        parts.add("knob", disk(0.016, h + 0.015, h + 0.035, sections=12))
    # spout at the front (+z)
    y0 = h * _u(rng, 0.2, 0.45)
    z0 = _radius_at(outline, y0) - 0.01
    if kind == "gooseneck":
        reach = _u(rng, 0.1, 0.16)
        pts = [(0, y0, z0), (0, y0 * 0.8, z0 + reach * 0.3), (0, h * 0.7, z0 + reach * 0.6),
               (0, h * 1.05, z0 + reach * 0.85), (0, h * 0.98, z0 + reach)]
        path = smooth_path(pts, 3)
        parts.add("spout", sweep(path, circle(8), np.linspace(0.009, 0.006, len(path))))
    elif kind == "electric":  # a lip at the rim instead of a tube
        zt = _radius_at(outline, h * 0.9)
        parts.add("spout", box_between((-0.025, h * 0.82, zt - 0.02), (0.025, h * 0.95, zt + 0.025)))
        parts.add("base", disk(R * 1.08, 0.0, 0.025, sections=28))
    else:
        reach = _u(rng, 0.06, 0.11)
        tip = (0, min(h * _u(rng, 0.8, 1.05), y0 + reach * 1.4), z0 + reach)
        mid = (0, (y0 + tip[1]) / 2 - 0.01, z0 + reach * 0.55)
        path = smooth_path([(0, y0, z0), mid, tip], 2)
        parts.add("spout", sweep(path, circle(8), np.linspace(0.018, 0.009, len(path))))
    params.update(spout_height=y0, knob=knob)
    # handle: over the top (stovetop), or a loop at the back (-z)
    handle = "arch" if kind == "stovetop" else "loop"
    half = _u(rng, 0.008, 0.012)
    if handle == "arch":
        rise = _u(rng, 0.06, 0.1)
        a = top_r * 0.8
        pts = [(-a, h - 0.005, 0), (-a * 0.8, h + rise, 0), (a * 0.8, h + rise, 0), (a, h - 0.005, 0)]
        parts.add("handle", sweep(smooth_path(pts, 3), rect(half * 0.8, half * 1.5)))
    else:
        y_top, y_bottom = h * _u(rng, 0.8, 0.92), h * _u(rng, 0.15, 0.35)
        parts.add("handle", _side_handle(_radius_at(outline, y_top) - half, y_top,
                                         _radius_at(outline, y_bottom) - half, y_bottom,
                                         _u(rng, 0.04, 0.07), _pick(rng, ("round", "square")), half, (0, 0, -1)))
    params["handle"] = handle
    return parts, params


def plant_pot(rng):
    pot = _pick(rng, ("tapered", "cylinder", "bowl", "square"))
    r, h = _u(rng, 0.07, 0.2), _u(rng, 0.1, 0.32)
    plant = _pick(rng, ("none", "bush", "leaves", "cactus", "tree"))
    saucer = rng.random() < 0.4
    params = dict(pot=pot, radius=r, height=h, plant=plant, saucer=bool(saucer))
    parts = Parts()
    y0 = 0.015 if saucer else 0.0
    if saucer:
        parts.add("saucer", _vessel([[r * 0.9, 0.0], [r * 1.1, 0.025]], 0.004, 0.006, 28))
    if pot == "square":
        t = 0.015
        parts.add("pot", box_between((-r, y0, -r), (r, y0 + 0.02, r)))
        for s in (-1, 1):
            parts.add("pot", box_between((s * r - t, y0, -r), (s * r + t, y0 + h, r)))
            parts.add("pot", box_between((-r, y0, s * r - t), (r, y0 + h, s * r + t)))
        parts.add("soil", box_between((-r, y0, -r), (r, y0 + h * 0.88, r)))
    else:
        s = np.linspace(0, 1, 6)
        shape = {"tapered": 0.72 + 0.28 * s, "cylinder": np.ones_like(s),
                 "bowl": 0.55 + 0.45 * np.sin(s * math.pi / 2)}[pot]
        outline = np.stack([r * shape, y0 + h * s], 1)
        rim = rng.random() < 0.6
        if rim:  # a thicker band at the top
            outline = np.concatenate([outline[:-1], [[r * 1.08, y0 + h * 0.85], [r * 1.08, y0 + h]]])
        params["rim"] = bool(rim)
        parts.add("pot", _vessel(outline, 0.008, y0 + 0.02, 28))
        parts.add("soil", disk(_radius_at(outline, y0 + h * 0.88) - 0.008, y0 + 0.02, y0 + h * 0.88, sections=28))
    _plant(parts, rng, params, plant, r, y0 + h * 0.88)
    return parts, params


def _plant(parts, rng, params, plant, r, soil_y):
    if plant == "bush":
        n = int(rng.integers(3, 8))
        size = r * _u(rng, 0.5, 0.9)
        for k in range(n):
            a = 2 * math.pi * k / n
            offset = size * 0.6 if k else 0.0
            radius, lift = size * _u(rng, 0.6, 1.0), size * _u(rng, 0.6, 1.2)
            parts.add("plant", sphere(radius, (offset * math.cos(a), soil_y + lift, offset * math.sin(a)), 2))
    elif plant == "leaves":  # long blades fanning out (snake plant, dracaena)
        n = int(rng.integers(5, 13))
        length = r * _u(rng, 1.5, 4.0)
        spread = _u(rng, 0.2, 0.6)
        for k in range(n):
            a = 2 * math.pi * k / n + rng.uniform(-0.2, 0.2)
            lean = spread * (0.5 + 0.5 * (k % 3) / 2)
            out = np.array([math.cos(a), 0.0, math.sin(a)])
            path = smooth_path([(0, soil_y, 0), out * length * lean * 0.4 + [0, soil_y + length * 0.5, 0],
                                out * length * lean + [0, soil_y + length, 0]], 2)
            parts.add("plant", sweep(path, rect(r * 0.02 + 0.004, r * 0.15 + 0.012),  # flat blade, tapering
                                     np.linspace(1.0, 0.3, len(path)), reference=out))
        params.update(leaves=n, leaf_length=length)
    elif plant == "cactus":
        cr, ch = r * _u(rng, 0.3, 0.55), r * _u(rng, 1.2, 3.0)
        parts.add("plant", sweep([(0, soil_y - 0.01, 0), (0, soil_y + ch, 0)], circle(10), [cr, cr * 0.9]))
        parts.add("plant", sphere(cr * 0.9, (0, soil_y + ch, 0), 1))
        for k in range(int(rng.integers(0, 3))):
            sx = 1 if k == 0 else -1
            y = soil_y + ch * _u(rng, 0.3, 0.6)
            arm = [(0, y, 0), (sx * cr * 1.6, y, 0), (sx * cr * 1.6, y + ch * 0.35, 0)]
            parts.add("plant", sweep(smooth_path(arm, 2), circle(8) * cr * 0.55))
        params.update(cactus_radius=cr, cactus_height=ch)
    elif plant == "tree":
        th = r * _u(rng, 2.5, 5.0)
        parts.add("trunk", rod((0, soil_y - 0.01, 0), (0, soil_y + th, 0), r * 0.12 + 0.008, sections=8))
        crown = th * _u(rng, 0.25, 0.4)
        for k in range(4):
            a = 2 * math.pi * k / 4
            parts.add("plant", sphere(crown * 0.7, (crown * 0.4 * math.cos(a), soil_y + th + crown * 0.2 * (k % 2),
                                                    crown * 0.4 * math.sin(a)), 2))
        params["tree_height"] = th


# ---------------------------------------------------------------- bathroom

def toilet(rng):
    tank = _pick(rng, ("close_coupled", "close_coupled", "low", "none"))
    lid = _pick(rng, ("closed", "closed", "open", "none"))
    flush = _pick(rng, ("button", "lever"))
    seat_h = _u(rng, 0.38, 0.44)
    bw, bl = _u(rng, 0.17, 0.2), _u(rng, 0.24, 0.3)  # bowl half width / half length
    params = dict(tank=tank, lid=lid, flush=flush, seat_height=seat_h, bowl_half_width=bw, bowl_half_length=bl)
    parts = Parts()
    zc = _u(rng, 0.05, 0.1)  # bowl centre in front of the origin, the tank behind
    ellipse = translation(0, 0, zc) @ scaling(1.0, 1.0, bl / bw)
    rim = seat_h - 0.04
    bowl_outline = [[bw * 0.55, rim - 0.18], [bw * 0.85, rim - 0.1], [bw, rim]]
    parts.add("bowl", _vessel(bowl_outline, 0.02, rim - 0.14, 24), ellipse)
    foot = _u(rng, 0.6, 0.8)
    parts.add("pedestal", revolve([[bw * foot, 0], [bw * foot * 0.85, rim * 0.45], [bw * 0.6, rim - 0.17],
                                   [1e-4, rim - 0.17], [1e-4, 0]], 20), ellipse)
    if lid != "none":
        parts.add("seat", revolve([[bw * 1.02, rim], [bw * 1.02, seat_h - 0.01], [bw * 0.6, seat_h - 0.01],
                                   [bw * 0.6, rim]], 24), ellipse)
        if lid == "closed":
            parts.add("lid", disk(bw * 1.02, seat_h - 0.01, seat_h + 0.01, sections=24), ellipse)
        else:  # raised against the tank
            upright = translation(0, seat_h + bl, zc - bl) @ rotation_x(math.pi / 2 - 0.15)
            parts.add("lid", disk(bw, -0.01, 0.01, sections=24), upright @ scaling(1.0, 1.0, bl / bw))
    if tank != "none":
        tw, td = _u(rng, 0.17, 0.25), _u(rng, 0.07, 0.11)
        tz = zc - bl - td * 0.6
        top = rim + (_u(rng, 0.3, 0.42) if tank == "close_coupled" else _u(rng, 0.15, 0.22))
        y_base = rim - 0.1 if tank == "close_coupled" else 0.0
        parts.add("tank", box_between((-tw, y_base, tz - td), (tw, top, tz + td)))
        if tank == "close_coupled":  # the bowl's rear shelf that carries the tank
            parts.add("bowl", box_between((-tw * 0.8, rim - 0.17, tz - td), (tw * 0.8, y_base + 0.01, zc - bl * 0.5)))
        parts.add("tank", box_between((-tw - 0.01, top, tz - td - 0.01), (tw + 0.01, top + 0.025, tz + td + 0.01)))
        if flush == "button":
            parts.add("flush", disk(0.025, top + 0.02, top + 0.035, (0.0, tz), sections=12))
        else:
            parts.add("flush",
                      box_between((-tw + 0.02, top - 0.06, tz + td), (-tw + 0.08, top - 0.035, tz + td + 0.02)))
        params.update(tank_half_width=tw, tank_top=top)
    else:  # back-to-wall pan: a block to the floor behind the bowl
        parts.add("pedestal", box_between((-bw * 0.8, 0, zc - bl - 0.06), (bw * 0.8, rim - 0.02, zc - bl + 0.1)))
    return parts, params


def bathtub(rng):
    style = _pick(rng, ("alcove", "freestanding", "clawfoot", "slipper"))
    L, W = _u(rng, 1.4, 1.85), _u(rng, 0.68, 0.85)
    H = _u(rng, 0.45, 0.62)
    faucet = _pick(rng, ("deck", "spout", "floor", "none"))
    params = dict(style=style, length=L, width=W, height=H, faucet=faucet)
    parts = Parts()
    if style == "alcove":
        t = _u(rng, 0.06, 0.12)
        parts.add("tub", box_between((-L / 2, 0, -W / 2), (L / 2, 0.12, W / 2)))
        parts.add("tub", box_between((-L / 2, 0, -W / 2), (-L / 2 + t, H, W / 2)))
        parts.add("tub", box_between((L / 2 - t, 0, -W / 2), (L / 2, H, W / 2)))
        parts.add("tub", box_between((-L / 2, 0, -W / 2), (L / 2, H, -W / 2 + t)))
        parts.add("apron", box_between((-L / 2, 0, W / 2 - t), (L / 2, H, W / 2)))
        params["rim"] = t
        end_x, rim_y = -L / 2 + t / 2, H
    else:
        lift = _u(rng, 0.1, 0.18) if style == "clawfoot" else 0.0
        R = W / 2
        s = np.linspace(0, 1, 6)
        outline = np.stack([R * (0.8 + 0.2 * np.sin(s * math.pi / 2) ** 0.5), lift + (H - lift) * s], 1)
        tub = revolve(vessel_profile(outline, 0.03, lift + 0.05), 28)
        vertices = tub[0] * [L / W, 1.0, 1.0]
        if style == "slipper":  # one end rises: the back rest
            vertices[:, 1] += 0.25 * H * np.clip(-vertices[:, 0] / (L / 2), 0, 1) * vertices[:, 1] / H
        parts.add("tub", (vertices, tub[1]))
        if style == "clawfoot":
            parts.add("rim", torus(R, 0.018, H, 28, 8), scaling(L / W, 1.0, 1.0))
            for sx in (-1, 1):
                for sz in (-1, 1):
                    x, z = sx * L * 0.3, sz * R * 0.5
                    parts.add("feet", rod((x, lift + 0.05, z), (x * 1.1, 0.04, z * 1.3), 0.04, 0.028, 8))
                    parts.add("feet", sphere(0.04, (x * 1.1, 0.04, z * 1.3)))
        params["lift"] = lift
        end_x, rim_y = L / 2 - 0.12, H
    if faucet == "deck":
        parts.add("faucet", rod((end_x, rim_y, 0), (end_x, rim_y + 0.14, 0), 0.018, sections=10))
        parts.add("faucet",
                  rod((end_x, rim_y + 0.14, 0), (end_x + 0.12 * np.sign(-end_x), rim_y + 0.12, 0), 0.015, sections=10))
    elif faucet == "spout":
        parts.add("faucet",
                  rod((end_x, rim_y - 0.02, 0), (end_x + 0.1 * np.sign(-end_x), rim_y + 0.01, 0), 0.02, sections=10))
    elif faucet == "floor":
        x = (L / 2 + 0.12) * np.sign(end_x)
        top = rim_y + 0.25
        parts.add("faucet", rod((x, 0, 0), (x, top, 0), 0.02, sections=10))
        spout = smooth_path([(x, top, 0), (x, top + 0.08, 0), (x - 0.15 * np.sign(x), top + 0.06, 0)], 2)
        parts.add("faucet", sweep(spout, circle(8) * 0.016))
    return parts, params


def _faucet(parts, x, y, z, style, reach):
    """A tap on a deck at (x, y, z), its spout pointing to +z: gooseneck arc or short spout."""
    if style == "gooseneck":
        top = y + reach * 1.6
        path = [(x, y, z), (x, top, z), (x, top + reach * 0.2, z + reach * 0.5), (x, top - 0.05, z + reach)]
        parts.add("faucet", sweep(smooth_path(path, 3), circle(8) * 0.014))
    else:
        parts.add("faucet", rod((x, y, z), (x, y + 0.1, z), 0.018, sections=10))
        parts.add("faucet", rod((x, y + 0.09, z), (x, y + 0.085, z + reach), 0.013, sections=10))
    parts.add("handle", box_between((x + 0.035, y, z - 0.015), (x + 0.05, y + 0.06, z + 0.015)))


def _box_basin(parts, x0, x1, z0, z1, y0, y1, wall):
    """An open rectangular basin: floor and four walls."""
    parts.add("basin", box_between((x0, y0, z0), (x1, y0 + wall, z1)))
    parts.add("basin", box_between((x0, y0, z0), (x0 + wall, y1, z1)))
    parts.add("basin", box_between((x1 - wall, y0, z0), (x1, y1, z1)))
    parts.add("basin", box_between((x0, y0, z0), (x1, y1, z0 + wall)))
    parts.add("basin", box_between((x0, y0, z1 - wall), (x1, y1, z1)))


def sink(rng):
    style = _pick(rng, ("pedestal", "vanity", "kitchen", "console"))
    H = _u(rng, 0.8, 0.92)
    faucet = _pick(rng, ("gooseneck", "short"))
    params = dict(style=style, height=H, faucet=faucet)
    parts = Parts()
    if style in ("pedestal", "console"):
        R, D = _u(rng, 0.2, 0.3), _u(rng, 0.16, 0.24)
        depth = _u(rng, 0.14, 0.2)
        basin = _vessel([[R * 0.55, H - depth], [R * 0.9, H - depth * 0.4], [R, H]], 0.02, H - depth + 0.03, 24)
        parts.add("basin", basin, scaling(1.0, 1.0, D / R))
        parts.add("basin", box_between((-R, H - 0.04, -D - 0.05), (R, H + 0.015, -D * 0.6)))
        if style == "pedestal":
            parts.add("pedestal", revolve([[0.12, 0], [0.08, 0.15], [0.07, H - depth - 0.1], [0.12, H - depth + 0.02],
                                           [1e-4, H - depth + 0.02], [1e-4, 0]], 18), scaling(1.0, 1.0, 0.8))
        else:
            for sx in (-1, 1):
                for sz in (-1, 1):
                    parts.add("leg",
                              rod((sx * R * 0.8, 0, sz * D * 0.6), (sx * R * 0.8, H - 0.03, sz * D * 0.6), 0.015,
                                  sections=8))
            parts.add("leg", box_between((-R * 0.8, 0.15, -D * 0.6), (R * 0.8, 0.17, D * 0.6)))
        params.update(half_width=R, half_depth=D)
        _faucet(parts, 0.0, H, -D * 0.75, faucet, D * 0.6)
        return parts, params
    W = _u(rng, 0.55, 0.9) if style == "vanity" else _u(rng, 0.8, 1.4)
    D = _u(rng, 0.45, 0.6)
    basins = 2 if style == "kitchen" and rng.random() < 0.5 else 1
    handle = _pick(rng, ("knob", "bar"))
    params.update(width=W, depth=D, basins=basins, handle=handle)
    top_t = 0.03
    parts.add("cabinet", box_between((-W / 2, 0.08, -D / 2), (W / 2, H - top_t, D / 2 - 0.02)))
    parts.add("cabinet", box_between((-W / 2 + 0.03, 0, -D / 2 + 0.03), (W / 2 - 0.03, 0.08, D / 2 - 0.06)))
    doors = max(1, int(round(W / 0.45)))
    add_fronts(parts, -W / 2 + 0.02, W / 2 - 0.02, 0.1, H - top_t - 0.02, D / 2 - 0.02, 1, doors, "door", handle,
               "side")
    # counter with openings over the basins
    bw = (W - 0.2 - 0.05 * (basins - 1)) / basins
    bz0, bz1 = -D / 2 + 0.12, D / 2 - 0.08
    xs = [-W / 2 + 0.1 + k * (bw + 0.05) for k in range(basins)]
    y0, y1 = H - top_t, H
    parts.add("counter", box_between((-W / 2 - 0.01, y0, -D / 2), (W / 2 + 0.01, y1, bz0)))
    parts.add("counter", box_between((-W / 2 - 0.01, y0, bz1), (W / 2 + 0.01, y1, D / 2 + 0.01)))
    edges = [-W / 2 - 0.01] + [v for x in xs for v in (x, x + bw)] + [W / 2 + 0.01]
    for a, b in zip(edges[0::2], edges[1::2]):
        parts.add("counter", box_between((a, y0, bz0), (b, y1, bz1)))
    for x in xs:
        _box_basin(parts, x, x + bw, bz0, bz1, H - _u(rng, 0.15, 0.22), y0, 0.012)
    _faucet(parts, 0.0, H, -D / 2 + 0.06, faucet, 0.14)
    return parts, params


GENERATORS = {
    "mug": mug,
    "glass": glass,
    "bottle": bottle,
    "vase": vase,
    "bowl": bowl,
    "bucket": bucket,
    "trash_can": trash_can,
    "kettle": kettle,
    "plant_pot": plant_pot,
    "toilet": toilet,
    "bathtub": bathtub,
    "sink": sink,
}
