"""Property-based fuzzing (hypothesis) of the three loaders that read users' files: the query
image loader (with the crop and tensor a search makes of it), the mask loader and the mesh
loader. Property: every input either loads into well-formed arrays or raises an IbsrError
whose message is one line; anything else (another exception type, a traceback) fails.

Inputs are random bytes, valid files of every format and pixel mode the loaders accept, and
those files truncated, bit-flipped, spliced and padded. The default run tries a fast slice
(FUZZ_EXAMPLES per test, derandomized so CI is reproducible); the long run is opt-in:

    IBSR_FUZZ_EXAMPLES=3000 .venv/bin/python -m pytest -q -s tests/test_fuzz_loaders.py
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import trimesh
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from ibsr.errors import IbsrError
from ibsr.geometry.mesh import UP_AXES, load_mesh
from ibsr.photos.image import load_mask
from ibsr.photos.query import load_query, query_tensor

LONG_RUN = "IBSR_FUZZ_EXAMPLES" in os.environ
FUZZ_EXAMPLES = int(os.environ.get("IBSR_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not LONG_RUN, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
COUNTS: dict[str, list[int]] = {}  # test -> [cases, loaded, refused]: printed with -s


def tally(name: str, loaded: bool) -> None:
    counts = COUNTS.setdefault(name, [0, 0, 0])
    counts[0] += 1
    counts[1 if loaded else 2] += 1


def teardown_module():
    for name, (cases, loaded, refused) in COUNTS.items():
        print(f"\n{name}: {cases} cases, {loaded} loaded, {refused} refused with a one-line IbsrError")


# ----------------------------------------------------------------------------- inputs

IMAGE_FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]
IMAGE_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK"]


@st.composite
def image_bytes(draw) -> bytes:
    """A real encoded image: any size (1 x 1 up), mode and format, sometimes with EXIF rotation."""
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    mode = draw(st.sampled_from(IMAGE_MODES))
    fmt = draw(st.sampled_from(IMAGE_FORMATS))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    if draw(st.booleans()):  # large flat areas: masks with content, transparency that says something
        pixels[: height // 2] = 255
        pixels[height // 2:, :, 3] = 0
    image = Image.fromarray(pixels, "RGBA").convert(mode) if mode not in ("I;16", "I", "F") else \
        Image.fromarray((pixels[:, :, 0].astype(np.int32) * 257).astype(np.uint16 if mode == "I;16" else np.int32))
    if mode == "F":
        image = image.convert("F")
    buffer = io.BytesIO()
    exif = None
    if draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(0, 9))  # orientation, including invalid values
    try:
        image.save(buffer, fmt, **({"exif": exif.tobytes()} if exif is not None and fmt in ("JPEG", "PNG", "WEBP",
                                                                                                "TIFF") else {}))
    except (OSError, ValueError, KeyError):  # Pillow cannot write this mode in this format: write PNG
        buffer = io.BytesIO()
        image.convert("RGBA").save(buffer, "PNG")
    return buffer.getvalue()


@st.composite
def mutated(draw, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid file, or that file truncated, bit-flipped, spliced with junk or padded."""
    data = bytearray(draw(valid))
    how = draw(st.sampled_from(["intact", "truncate", "flip", "splice", "pad", "header"]))
    if how == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)):]
    elif how == "flip" and data:
        for _ in range(draw(st.integers(1, 16))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif how == "splice":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    elif how == "pad":
        data += draw(st.binary(max_size=256))
    elif how == "header" and len(data) > 24:  # the part that says how big things are
        at = draw(st.integers(0, min(len(data), 64) - 4))
        data[at:at + 4] = struct.pack("<I", draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 65535, 65536])))
    return bytes(data)


any_image = st.one_of(st.binary(max_size=512), mutated(image_bytes()))


def write(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, dir=FUZZ_DIR)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


FUZZ_DIR = tempfile.mkdtemp(prefix="ibsr-fuzz-")


def assert_one_line(error: IbsrError) -> None:
    assert isinstance(error, IbsrError)
    assert str(error) and "\n" not in str(error) and "\r" not in str(error), repr(str(error))


# ----------------------------------------------------------------------------- query image loader

@FUZZ
@given(data=any_image, suffix=st.sampled_from([".png", ".jpg", ".webp", ".gif", ".tif", ".bmp", ".dat"]))
def test_fuzz_query_image_loader(data, suffix):
    path = write(data, suffix)
    try:
        query = load_query(path)
        x = query_tensor(query, 32)
    except IbsrError as error:
        assert_one_line(error)
        tally("query image loader", False)
        return
    finally:
        path.unlink()
    h, w = query.rgb.shape[:2]
    assert query.rgb.dtype == np.uint8 and query.rgb.shape == (h, w, 3) and query.mask.shape == (h, w)
    assert query.mask.any() and query.mask_source != "file"  # alpha, or an automatic mask
    assert x.shape == (4, 32, 32) and np.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    tally("query image loader", True)


# ----------------------------------------------------------------------------- mask loader

@FUZZ
@given(data=any_image, height=st.integers(1, 48), width=st.integers(1, 48), own_size=st.booleans(),
       with_photo=st.booleans())
def test_fuzz_mask_loader(data, height, width, own_size, with_photo):
    if own_size:  # mostly the mask's own size (when it has one), so masks get past the size check
        height, width = _size_of(data) or (height, width)
    path = write(data, ".png")
    photo = write(_photo_bytes(height, width), ".png") if with_photo else None
    try:
        if photo is None:
            mask = load_mask(path, (height, width))
        else:  # the search path: a photo with a user-given mask
            query = load_query(photo, path)
            mask = query.mask
            query_tensor(query, 32)
    except IbsrError as error:
        assert_one_line(error)
        tally("mask loader", False)
        return
    finally:
        path.unlink()
        if photo is not None:
            photo.unlink()
    assert mask.dtype == bool and mask.shape == (height, width) and mask.any()
    tally("mask loader", True)


def _size_of(data: bytes) -> tuple[int, int] | None:
    try:
        width, height = Image.open(io.BytesIO(data)).size
    except Exception:  # not an image Pillow can even size: keep the drawn size
        return None
    return (height, width) if 0 < width * height <= 48 * 48 else None


def _photo_bytes(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- mesh loader

MESH_FORMATS = ["obj", "off", "ply", "stl", "glb"]
coordinates = st.one_of(st.floats(-10, 10, allow_nan=False), st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([0.0, -0.0, 1e-300, 1e300, 1e9, float("nan"), float("inf")]))


@st.composite
def obj_text(draw) -> bytes:
    """An OBJ written by hand: odd numbers, out-of-range or negative indices, junk lines."""
    vertices = draw(st.lists(st.tuples(coordinates, coordinates, coordinates), max_size=12))
    lines = [f"v {x!r} {y!r} {z!r}".replace("nan", "nan").replace("inf", "inf") for x, y, z in vertices]
    n = len(vertices)
    index = st.integers(-n - 2, n + 2)
    for face in draw(st.lists(st.lists(index, min_size=1, max_size=5), max_size=12)):
        lines.append("f " + " ".join(str(i) for i in face))
    junk = draw(st.lists(st.sampled_from(["vn 0 0 1", "vt 0.5", "g group", "usemtl x", "mtllib none.mtl", "o obj",
                                          "s off", "f", "v", "v 1 2", "#", "f 1/2/3 2//1 3/x", "\x00", "é"]),
                         max_size=4))
    lines[draw(st.integers(0, len(lines))):0] = junk
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@st.composite
def mesh_bytes(draw) -> tuple[bytes, str]:
    """A valid mesh file of a random shape (box, sphere, cylinder, a few triangles) and format."""
    fmt = draw(st.sampled_from(MESH_FORMATS))
    kind = draw(st.sampled_from(["box", "sphere", "cylinder", "triangles"]))
    if kind == "box":
        mesh = trimesh.creation.box(extents=draw(st.tuples(*[st.floats(1e-3, 10)] * 3)))
    elif kind == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=draw(st.integers(0, 2)))
    elif kind == "cylinder":
        mesh = trimesh.creation.cylinder(radius=1.0, height=draw(st.floats(1e-3, 5)), sections=draw(st.integers(3, 12)))
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        count = draw(st.integers(1, 6))
        mesh = trimesh.Trimesh(rng.normal(size=(3 * count, 3)), np.arange(3 * count).reshape(count, 3), process=False)
    data = mesh.export(file_type=fmt)
    return (data.encode() if isinstance(data, str) else data), fmt


@st.composite
def any_mesh(draw) -> tuple[bytes, str]:
    choice = draw(st.sampled_from(["junk", "obj", "valid"]))
    if choice == "junk":
        return draw(st.binary(max_size=512)), draw(st.sampled_from(MESH_FORMATS + ["gltf"]))
    if choice == "obj":
        return draw(obj_text()), "obj"
    data, fmt = draw(mesh_bytes())
    return draw(mutated(st.just(data))), fmt


@FUZZ
@given(case=any_mesh(), up_axis=st.sampled_from(UP_AXES))
# What the long run found: 2 coordinates on the first `v` line made trimesh raise ValueError.
@example(case=(b"v 1 2\n" + b"v 0.0 0.0 0.0\n" * 12 + b"f 0 0 -1", "obj"), up_axis="x")
@example(case=(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
               b"element face 2\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n"
               b"3 0 1 2\n3 0 1 9\n", "ply"), up_axis="y")  # trimesh keeps a PLY face past the vertices
def test_fuzz_mesh_loader(case, up_axis):
    data, fmt = case
    path = write(data, "." + fmt)
    try:
        mesh = load_mesh(path, up_axis=up_axis)
    except IbsrError as error:
        assert_one_line(error)
        tally("mesh loader", False)
        return
    finally:
        path.unlink()
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    assert len(faces) > 0 and np.isfinite(vertices).all()
    assert faces.min() >= 0 and faces.max() < len(vertices)
    assert np.linalg.norm(vertices, axis=1).max() <= 1 + 1e-6  # normalized: unit bounding sphere
    tally("mesh loader", True)
