"""Electronics and appliances: screens, computers, kitchen and laundry machines, audio.

Same conventions as `furniture.py`: one generator per category, `(rng) -> (Parts, params)`,
metres, +y up, floor (or desk) at y=0, front (the screen, the door, the drivers) towards +z.
Screens and glass are their own parts, so photos can give them a dark glossy material.
"""

from __future__ import annotations

import math

import numpy as np

from .furniture import _pick, _u
from .primitives import (Parts, box, box_between, circle, disk, rect, revolve, rod, rotation_x,
                         rounded_rect, scaling, smooth_path, sphere, sweep, torus, translation,
                         y_axis_to)

ASPECTS = {"16:9": 16 / 9, "16:10": 1.6, "21:9": 21 / 9, "4:3": 4 / 3}


def _panel(parts, W, H, depth, bezel, curve=0.0, name="frame"):
    """A display panel centred at the origin, facing +z: the frame and the screen in front of it.
    `curve` > 0 bends it around the viewer (edges forward by `curve`)."""
    if curve <= 0:
        parts.add(name, box((W, H, depth), (0, 0, 0)))
        parts.add("screen", box((W - 2 * bezel, H - 2 * bezel, 0.004), (0, 0, depth / 2)))
        return
    xs = np.linspace(-W / 2, W / 2, 13)
    path = np.stack([xs, np.zeros_like(xs), curve * (2 * xs / W) ** 2], 1)
    parts.add(name, sweep(path, rect(H / 2, depth / 2)))
    inner = np.linspace(-W / 2 + bezel, W / 2 - bezel, 13)
    front = np.stack([inner, np.zeros_like(inner), curve * (2 * inner / W) ** 2 + depth / 2], 1)
    parts.add("screen", sweep(front, rect(H / 2 - bezel, 0.002)))


def _driver(parts, x, y, z, radius, name="driver"):
    """A loudspeaker on a front at depth z: surround ring, cone and dust cap, facing +z."""
    parts.add(name, torus(radius * 0.9, radius * 0.1, 0.0, 24, 6), y_axis_to("z", (x, y, z)))
    parts.add(name, revolve([[radius * 0.82, 0.0], [radius * 0.3, -0.3 * radius], [1e-4, -0.3 * radius],
                             [1e-4, 0.002], [radius * 0.82, 0.002]], 20), y_axis_to("z", (x, y, z)))
    parts.add(name, sphere(radius * 0.28, (x, y, z - 0.18 * radius), 1))


# ---------------------------------------------------------------- screens and computers

def monitor(rng):
    W = _u(rng, 0.45, 0.8)
    aspect = _pick(rng, ("16:9", "16:9", "16:10", "21:9"))
    H = round(W / ASPECTS[aspect], 3)
    depth, bezel = _u(rng, 0.015, 0.03), _u(rng, 0.006, 0.025)
    curve = _u(rng, 0.03, 0.08) if aspect == "21:9" or rng.random() < 0.15 else 0.0
    stand = _pick(rng, ("neck_plate", "round_base", "v_feet", "arc", "pillar"))
    lift, tilt = _u(rng, 0.06, 0.2), _u(rng, 0.0, 12.0, 1)
    params = dict(width=W, aspect=aspect, height=H, depth=depth, bezel=bezel, curve=curve, stand=stand,
                  lift=lift, tilt_deg=tilt)
    head = Parts()
    _panel(head, W, H, depth, bezel, curve)
    head.add("back", box((W * _u(rng, 0.3, 0.6), H * _u(rng, 0.3, 0.6), depth), (0, -H * 0.05, -depth)))
    center_y = lift + H / 2
    parts = Parts()
    parts.merge(head, translation(0, center_y, 0) @ rotation_x(-math.radians(tilt)))
    neck_z = -1.5 * depth - 0.01
    base_d = _u(rng, 0.15, 0.25)
    if stand == "neck_plate":
        parts.add("stand", box_between((-0.035, 0.01, neck_z - 0.02), (0.035, center_y, neck_z)))
        parts.add("base", box_between((-0.12, 0, neck_z - base_d * 0.6), (0.12, 0.012, neck_z + base_d * 0.4)))
    elif stand == "round_base":
        parts.add("stand", rod((0, 0, neck_z), (0, center_y, neck_z), 0.02, sections=12))
        parts.add("base", disk(base_d * 0.55, 0.0, 0.014, (0.0, neck_z + 0.03), sections=24))
    elif stand == "v_feet":
        parts.add("stand", box_between((-0.025, 0.02, neck_z - 0.02), (0.025, center_y, neck_z)))
        for sx in (-1, 1):
            parts.add("base", rod((0, 0.015, neck_z - 0.01), (sx * W * 0.22, 0.012, neck_z + base_d * 0.6), 0.014,
                                  sections=6, square=True))
    elif stand == "arc":  # a curved arm from a rear foot up to the panel
        path = smooth_path([(0, 0.012, neck_z - base_d * 0.5), (0, center_y * 0.5, neck_z - base_d * 0.6),
                            (0, center_y, neck_z)], 2)
        parts.add("stand", sweep(path, rect(0.03, 0.012), reference=(1, 0, 0)))
        parts.add("base", box_between((-0.1, 0, neck_z - base_d * 0.7), (0.1, 0.012, neck_z + base_d * 0.3)))
    else:  # pillar: the panel rests on a short wide column
        parts.add("stand", box_between((-0.06, 0.012, neck_z - 0.04), (0.06, center_y, neck_z + 0.005)))
        parts.add("base", box_between((-W * 0.2, 0, neck_z - base_d * 0.5), (W * 0.2, 0.02, neck_z + base_d * 0.5)))
    return parts, params


def laptop(rng):
    W, D = _u(rng, 0.28, 0.4), _u(rng, 0.19, 0.27)
    style = _pick(rng, ("classic", "ultrabook", "gaming"))
    base_t = {"classic": _u(rng, 0.018, 0.025), "ultrabook": _u(rng, 0.012, 0.016),
              "gaming": _u(rng, 0.025, 0.035)}[style]
    lid_t = _u(rng, 0.005, 0.009)
    angle = _pick(rng, (_u(rng, 95.0, 135.0, 1), _u(rng, 95.0, 135.0, 1), _u(rng, 60.0, 95.0, 1)))
    hinge = _pick(rng, ("bar", "two"))
    params = dict(width=W, depth=D, style=style, base_thickness=base_t, lid_thickness=lid_t,
                  open_deg=angle, hinge=hinge)
    parts = Parts()
    parts.add("base",
              sweep([(-W / 2, base_t / 2, 0), (W / 2, base_t / 2, 0)], rounded_rect(base_t / 2, D / 2, 0.004, 2)))
    kx, kz0, kz1 = W * _u(rng, 0.38, 0.45), -D / 2 + 0.02, -D / 2 + D * _u(rng, 0.5, 0.6)
    parts.add("keyboard", box_between((-kx, base_t - 0.001, kz0), (kx, base_t + 0.0015, kz1)))
    tw, td = W * _u(rng, 0.12, 0.22), D * _u(rng, 0.15, 0.25)
    parts.add("touchpad",
              box_between((-tw / 2, base_t - 0.001, kz1 + 0.015), (tw / 2, base_t + 0.001, kz1 + 0.015 + td)))
    if style == "gaming":  # vents along the back
        parts.add("base",
                  box_between((-W / 2 + 0.02, 0.002, -D / 2 - 0.01), (W / 2 - 0.02, base_t - 0.003, -D / 2 + 0.01)))
    lid = Parts()
    lid.add("lid", box_between((-W / 2, 0, 0), (W / 2, lid_t, D)))
    bezel = _u(rng, 0.006, 0.02)
    lid.add("screen", box_between((-W / 2 + bezel, -0.001, bezel), (W / 2 - bezel, 0.001, D - bezel * 1.8)))
    # the lid is built closed (screen face down), from the hinge line z=0 forwards; open it about the hinge
    parts.merge(lid, translation(0, base_t, -D / 2) @ rotation_x(-math.radians(angle)))
    hinge_r = base_t * 0.55
    if hinge == "bar":
        parts.add("hinge", rod((-W * 0.35, base_t, -D / 2), (W * 0.35, base_t, -D / 2), hinge_r, sections=10))
    else:
        for sx in (-1, 1):
            parts.add("hinge",
                      rod((sx * W * 0.38, base_t, -D / 2), (sx * W * 0.28, base_t, -D / 2), hinge_r, sections=10))
    return parts, params


def tv(rng):
    kind = _pick(rng, ("flat", "flat", "flat", "crt"))
    stand = _pick(rng, ("pedestal", "feet", "easel")) if kind == "flat" else _pick(rng, ("none", "swivel"))
    params = dict(kind=kind, stand=stand)
    parts = Parts()
    if kind == "crt":
        W = _u(rng, 0.4, 0.7)
        H, D = round(W * 0.78, 3), round(W * _u(rng, 0.8, 1.05), 3)
        lift = 0.0 if stand == "none" else 0.05
        y = lift + H / 2
        # the tube: a rounded box that tapers towards the back
        parts.add("frame",
                  sweep([(0, y, 0.0), (0, y, -D * 0.3)], rounded_rect(W / 2, H / 2, 0.03), reference=(1, 0, 0)))
        parts.add("back", sweep([(0, y, -D * 0.3), (0, y - H * 0.05, -D)], rounded_rect(W / 2, H / 2, 0.05),
                                [1.0, _u(rng, 0.45, 0.65)], reference=(1, 0, 0)))
        sw, sh = W * _u(rng, 0.72, 0.82), H * _u(rng, 0.72, 0.82)
        parts.add("screen", box_between((-sw / 2, y - sh / 2 + 0.02, -0.01), (sw / 2, y + sh / 2 + 0.02, 0.008)))
        parts.add("panel", box_between((-W / 2 + 0.03, lift + 0.02, -0.01), (W / 2 - 0.03, y - sh / 2, 0.006)))
        if stand == "swivel":
            parts.add("stand", disk(W * 0.3, 0.0, lift, (0.0, -D * 0.35), sections=20))
        params.update(width=W, height=H, depth=D)
        return parts, params
    W = _u(rng, 0.8, 1.6)
    H = round(W / ASPECTS["16:9"], 3)
    depth, bezel = _u(rng, 0.025, 0.07), _u(rng, 0.005, 0.03)
    lift = {"pedestal": _u(rng, 0.05, 0.12), "feet": _u(rng, 0.04, 0.1), "easel": _u(rng, 0.5, 0.8)}[stand]
    speaker = rng.random() < 0.25
    params.update(width=W, height=H, depth=depth, bezel=bezel, lift=lift, speaker=bool(speaker))
    head = Parts()
    _panel(head, W, H, depth, bezel)
    head.add("back", box((W * 0.6, H * 0.6, depth), (0, -H * 0.05, -depth * 0.8)))
    bottom = lift + (0.05 if speaker else 0.0)
    parts.merge(head, translation(0, bottom + H / 2, 0))
    if speaker:
        parts.add("speaker", box_between((-W * 0.45, lift, -depth / 2), (W * 0.45, bottom, depth / 2)))
    if stand == "pedestal":
        parts.add("stand", box_between((-0.05, 0.015, -depth * 1.3 - 0.02), (0.05, bottom + H * 0.3, -depth * 1.3)))
        parts.add("base", box_between((-W * 0.2, 0, -0.15), (W * 0.2, 0.015, 0.08)))
    elif stand == "feet":
        x = W * _u(rng, 0.3, 0.45)
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.add("stand", rod((sx * x, bottom + 0.02, 0), (sx * (x + 0.04), 0.0, sz * 0.12), 0.02, 0.014,
                                       sections=6, square=True))
    else:  # easel: two legs rising to the panel's back, one leaning back
        for sx in (-1, 1):
            parts.add("stand", rod((sx * W * 0.3, 0, 0.1), (sx * W * 0.2, bottom + H * 0.6, -depth), 0.025, sections=8))
        parts.add("stand", rod((0, 0, -0.55), (0, bottom + H * 0.6, -depth), 0.025, sections=8))
    return parts, params


# ---------------------------------------------------------------- kitchen and laundry

def microwave(rng):
    W, H, D = _u(rng, 0.44, 0.6), _u(rng, 0.25, 0.35), _u(rng, 0.32, 0.45)
    panel_w = _u(rng, 0.1, 0.16)
    controls = _pick(rng, ("buttons", "dials", "touch"))
    handle = _pick(rng, ("bar", "recess", "edge"))
    params = dict(width=W, height=H, depth=D, panel_width=panel_w, controls=controls, handle=handle)
    parts = Parts()
    y0 = 0.012
    parts.add("body", box_between((-W / 2, y0, -D / 2), (W / 2, H, D / 2)))
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.add("foot", disk(0.015, 0.0, y0 + 0.002, (sx * (W / 2 - 0.05), sz * (D / 2 - 0.05)), sections=8))
    front = D / 2
    door_x1 = W / 2 - panel_w
    parts.add("door", box_between((-W / 2 + 0.01, y0 + 0.01, front), (door_x1, H - 0.01, front + 0.015)))
    m = _u(rng, 0.03, 0.06)
    parts.add("window", box_between((-W / 2 + 0.01 + m, y0 + 0.01 + m, front + 0.012),
                                    (door_x1 - m * (1.5 if handle == "bar" else 1.0), H - 0.01 - m, front + 0.017)))
    px0, px1 = door_x1 + 0.01, W / 2 - 0.01
    parts.add("panel", box_between((px0, y0 + 0.01, front), (px1, H - 0.01, front + 0.008)))
    cx = (px0 + px1) / 2
    top = H - 0.03
    parts.add("display", box_between((px0 + 0.012, top - 0.03, front + 0.007), (px1 - 0.012, top, front + 0.011)))
    if controls == "dials":
        for k in range(2):
            parts.add("dial", disk(min(0.025, (px1 - px0) * 0.35), front + 0.006, front + 0.028, sections=14),
                      y_axis_to("z", (cx, top - 0.08 - k * (H - 0.13) * 0.45, 0)))
    elif controls == "buttons":
        rows, cols = int(rng.integers(3, 6)), 3
        params["button_rows"] = rows
        bw = (px1 - px0 - 0.03) / cols
        bh = min(0.022, (top - 0.05 - y0 - 0.05) / rows - 0.006)
        for r in range(rows):
            for c in range(cols):
                x = px0 + 0.015 + c * bw
                y = top - 0.05 - (r + 1) * (bh + 0.006)
                parts.add("button", box_between((x + 0.002, y, front + 0.007), (x + bw - 0.002, y + bh, front + 0.013)))
    else:  # touch: a second flat pad
        parts.add("button",
                  box_between((px0 + 0.012, y0 + 0.06, front + 0.007), (px1 - 0.012, top - 0.05, front + 0.01)))
    if handle == "bar":
        x = door_x1 - 0.03
        parts.add("handle", box_between((x - 0.012, y0 + 0.05, front + 0.015), (x + 0.012, H - 0.05, front + 0.045)))
    elif handle == "recess":  # a push button under the controls
        parts.add("handle",
                  box_between((px0 + 0.015, y0 + 0.02, front + 0.007), (px1 - 0.015, y0 + 0.045, front + 0.016)))
    else:
        parts.add("handle", box_between((-W / 2 + 0.01, H - 0.025, front + 0.012), (door_x1, H - 0.01, front + 0.03)))
    return parts, params


def washing_machine(rng):
    kind = _pick(rng, ("front", "front", "top", "stacked"))
    W, D = _u(rng, 0.58, 0.62), _u(rng, 0.5, 0.66)
    H = _u(rng, 0.82, 0.9)
    params = dict(kind=kind, width=W, depth=D, height=H)
    parts = Parts()
    units = 2 if kind == "stacked" else 1
    for k in range(units):
        _laundry_unit(parts, rng, params, W, H, D, k * H, "top" if kind == "top" else "front", k)
    return parts, params


def _laundry_unit(parts, rng, params, W, H, D, y0, kind, index):
    front = D / 2
    plinth = 0.06 if index == 0 else 0.0
    parts.add("body", box_between((-W / 2, y0 + plinth, -D / 2), (W / 2, y0 + H, D / 2)))
    if plinth:
        parts.add("plinth", box_between((-W / 2 + 0.01, y0, -D / 2 + 0.02), (W / 2 - 0.01, y0 + plinth, front - 0.015)))
    panel_h = _u(rng, 0.08, 0.13)
    if kind == "front":
        parts.add("panel",
                  box_between((-W / 2 + 0.005, y0 + H - panel_h, front), (W / 2 - 0.005, y0 + H - 0.005, front + 0.01)))
        ring_r = _u(rng, 0.17, 0.22)
        cy = y0 + plinth + (H - plinth - panel_h) * _u(rng, 0.45, 0.55)
        at = (0.0, cy, front)
        parts.add("door", torus(ring_r, _u(rng, 0.018, 0.03), 0.02, 28, 8), y_axis_to("z", at))
        parts.add("glass", revolve([[ring_r * 0.95, 0.0], [ring_r * 0.9, 0.02], [ring_r * 0.5, 0.035], [1e-4, 0.038],
                                    [1e-4, 0.0]], 24), y_axis_to("z", at))
        parts.add("door",
                  box_between((ring_r * 0.75, cy - 0.04, front + 0.02), (ring_r + 0.03, cy + 0.04, front + 0.045)))
        drawer = rng.random() < 0.8
        if drawer:
            parts.add("drawer", box_between((-W / 2 + 0.03, y0 + H - panel_h + 0.015, front + 0.009),
                                            (-W / 2 + 0.03 + W * 0.3, y0 + H - 0.02, front + 0.02)))
        params[f"door_radius_{index}"] = ring_r
        dial_at = (W * 0.25, y0 + H - panel_h / 2, 0.0)
        parts.add("dial", disk(min(0.03, panel_h * 0.35), front + 0.008, front + 0.03, sections=16),
                  y_axis_to("z", dial_at))
        parts.add("display",
                  box_between((-0.05, y0 + H - panel_h * 0.7, front + 0.009),
                              (0.08, y0 + H - panel_h * 0.3, front + 0.013)))
    else:  # top loader: a lid on top and the controls on a riser at the back
        riser = _u(rng, 0.08, 0.14)
        parts.add("panel", box_between((-W / 2, y0 + H, -D / 2), (W / 2, y0 + H + riser, -D / 2 + 0.1)))
        parts.add("door",
                  box_between((-W / 2 + 0.04, y0 + H, -D / 2 + 0.13), (W / 2 - 0.04, y0 + H + 0.015, front - 0.03)))
        parts.add("dial", disk(0.03, 0.1, 0.12, sections=16),
                  y_axis_to("z", (W * 0.25, y0 + H + riser / 2, -D / 2)))
        parts.add("display",
                  box_between((-0.08, y0 + H + riser * 0.3, -D / 2 + 0.1),
                              (0.05, y0 + H + riser * 0.7, -D / 2 + 0.105)))
        params["riser"] = riser


# ---------------------------------------------------------------- audio

def speaker(rng):
    kind = _pick(rng, ("bookshelf", "tower", "smart", "subwoofer", "soundbar"))
    params = dict(kind=kind)
    parts = Parts()
    if kind == "smart":
        r, h = _u(rng, 0.045, 0.09), _u(rng, 0.1, 0.25)
        top = _pick(rng, ("flat", "dome"))
        taper = _u(rng, 0.85, 1.0)
        outline = [[1e-4, 0.0], [r * taper * 0.95, 0.0], [r * taper, 0.008], [r, h * 0.9]]
        if top == "dome":
            a = np.linspace(0, math.pi / 2, 6)[1:]
            outline += [[r * math.cos(x) + 1e-4, h * 0.9 + r * 0.5 * math.sin(x)] for x in a]
        else:
            outline += [[r * 0.97, h], [1e-4, h]]
        parts.add("grill", revolve(outline, 28))
        parts.add("cabinet", disk(r * taper * 1.01, 0.0, h * 0.08, sections=28))
        parts.add("cabinet", disk(r * 0.7, h * 0.9 + (r * 0.5 if top == "dome" else h * 0.1) - 0.004,
                                  h * 0.9 + (r * 0.5 if top == "dome" else h * 0.1) + 0.004, sections=24))
        params.update(radius=r, height=h, top=top, taper=taper)
        return parts, params
    if kind == "soundbar":
        W, H, D = _u(rng, 0.6, 1.1), _u(rng, 0.055, 0.09), _u(rng, 0.07, 0.12)
        parts.add("cabinet", sweep([(-W / 2, H / 2, 0), (W / 2, H / 2, 0)], rounded_rect(H / 2, D / 2, H * 0.3, 3)))
        parts.add("grill",
                  box_between((-W / 2 + 0.02, H * 0.15, D / 2 - 0.004), (W / 2 - 0.02, H * 0.85, D / 2 + 0.002)))
        params.update(width=W, height=H, depth=D)
        return parts, params
    size = {"bookshelf": (_u(rng, 0.15, 0.25), _u(rng, 0.25, 0.38), _u(rng, 0.2, 0.3)),
            "tower": (_u(rng, 0.18, 0.28), _u(rng, 0.8, 1.15), _u(rng, 0.25, 0.35)),
            "subwoofer": (_u(rng, 0.3, 0.45), _u(rng, 0.3, 0.45), _u(rng, 0.3, 0.45))}[kind]
    W, H, D = size
    feet = _pick(rng, ("none", "spikes", "plinth")) if kind == "tower" else _pick(rng, ("none", "pads"))
    lift = {"none": 0.0, "pads": 0.015, "spikes": 0.03, "plinth": 0.03}[feet]
    params.update(width=W, height=H, depth=D, feet=feet)
    parts.add("cabinet", box_between((-W / 2, lift, -D / 2), (W / 2, lift + H, D / 2)))
    front = D / 2
    if feet == "plinth":
        parts.add("foot", box_between((-W / 2 - 0.03, 0, -D / 2 - 0.03), (W / 2 + 0.03, lift, D / 2 + 0.03)))
    elif feet != "none":
        for sx in (-1, 1):
            for sz in (-1, 1):
                x, z = sx * (W / 2 - 0.03), sz * (D / 2 - 0.03)
                if feet == "spikes":
                    parts.add("foot", rod((x, lift, z), (x, 0.0, z), 0.012, 0.003, sections=8))
                else:
                    parts.add("foot", disk(0.02, 0.0, lift, (x, z), sections=10))
    port = rng.random() < 0.5
    params["port"] = bool(port)
    if port:  # a bass-reflex port near the bottom of the front
        parts.add("port", disk(W * 0.08, -0.01, 0.004, sections=14), y_axis_to("z", (0, lift + 0.03 + W * 0.08, front)))
    if kind == "subwoofer":
        _driver(parts, 0, lift + H / 2 + (W * 0.08 if port else 0.0), front, min(W, H) * 0.36)
        return parts, params
    n = 1 if kind == "bookshelf" else int(rng.integers(2, 4))
    tweeter_y = lift + H - W * 0.25
    _driver(parts, 0, tweeter_y, front, W * 0.15, "tweeter")
    # woofers stacked below the tweeter, as large as fits between it and the port
    top, bottom = tweeter_y - W * 0.17, lift + (0.05 + W * 0.16 if port else 0.02)
    woofer = min(W * _u(rng, 0.32, 0.42), (top - bottom) / (2.15 * n))
    for k in range(n):
        _driver(parts, 0, top - woofer * (1.05 + 2.15 * k), front, woofer)
    params.update(woofers=n, woofer_radius=round(woofer, 4))
    return parts, params


def headphones(rng):
    cup = _pick(rng, ("round", "oval"))
    yoke = _pick(rng, ("fork", "slider", "direct"))
    band = _pick(rng, ("padded", "thin", "wide"))
    mic = rng.random() < 0.2
    half_w = _u(rng, 0.075, 0.095)  # cup centre to head centre
    rise = _u(rng, 0.14, 0.2)  # band top above the cup centres
    cup_r, cup_t = _u(rng, 0.035, 0.055), _u(rng, 0.025, 0.045)
    params = dict(cup=cup, yoke=yoke, band=band, mic=bool(mic), half_width=half_w, band_rise=rise,
                  cup_radius=cup_r, cup_thickness=cup_t)
    parts = Parts()
    ovality = _u(rng, 1.15, 1.4) if cup == "oval" else 1.0
    cup_top = cup_r * ovality
    band_x = half_w + cup_t * 0.4
    start = cup_top + (0.03 if yoke != "direct" else 0.0)
    a = np.linspace(0, math.pi, 21)
    arc = np.stack([band_x * np.cos(a), start + (rise - start) * np.sin(a) ** 0.8, np.zeros_like(a)], 1)
    # half sizes of the strap: wide across the head (z), thin radially
    wide, thick = {"padded": (0.018, 0.006), "thin": (0.012, 0.004), "wide": (0.025, 0.005)}[band]
    parts.add("band", sweep(arc, rect(wide, thick), reference=(0, 0, 1)))
    if band == "padded":
        inner = arc[6:15] * [0.93, 1.0, 1.0] - [0, 0.012, 0]
        parts.add("pad", sweep(inner, rect(0.016, 0.008), reference=(0, 0, 1)))
    shell = revolve([[cup_r, 0.0], [cup_r, cup_t * 0.6], [cup_r * 0.7, cup_t], [1e-4, cup_t], [1e-4, 0.0]], 24)
    stretch = scaling(ovality, 1.0, 1.0)  # the cup's local x becomes world y once turned: taller cups
    for sx in (-1, 1):
        # cups built around y, turned to face each other along x (the left one flipped outwards)
        turn = translation(sx * half_w, 0, 0) @ y_axis_to("x") @ (rotation_x(math.pi) if sx < 0 else np.eye(4))
        parts.add("cup", shell, turn @ stretch)
        parts.add("cushion", torus(cup_r * 0.75, cup_r * 0.22, -cup_r * 0.15, 24, 8), turn @ stretch)
        if yoke == "fork":  # a U around the cup from the band end
            x = sx * (half_w + cup_t * 0.5)
            path = smooth_path([(x, 0.0, cup_r * 1.05), (x, cup_top * 0.9, cup_r), (sx * band_x, start, 0.0),
                                (x, cup_top * 0.9, -cup_r), (x, 0.0, -cup_r * 1.05)], 2)
            parts.add("yoke", sweep(path, rect(0.004, 0.006), reference=(1, 0, 0)))
        elif yoke == "slider":
            parts.add("yoke",
                      box_between((sx * band_x - 0.005, cup_top * 0.8, -0.01),
                                  (sx * band_x + 0.005, start + 0.01, 0.01)))
    if mic:
        path = smooth_path([(-half_w - cup_t * 0.8, -cup_r * 0.3, cup_r * 0.3),
                            (-half_w - cup_t, -cup_r * 0.8, cup_r * 1.8),
                            (-half_w * 0.5, -cup_r * 1.1, cup_r * 2.6)], 2)
        parts.add("mic", sweep(path, circle(6) * 0.004))
        parts.add("mic", sphere(0.009, path[-1]))
    parts.rest_on_floor()
    return parts, params


GENERATORS = {
    "monitor": monitor,
    "laptop": laptop,
    "tv": tv,
    "microwave": microwave,
    "washing_machine": washing_machine,
    "speaker": speaker,
    "headphones": headphones,
}
