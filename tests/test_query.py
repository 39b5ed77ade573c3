import numpy as np
import pytest
from PIL import Image

from ibsr.errors import IbsrError
from ibsr.photos import image as photo_image
from ibsr.photos import mask as photo_mask
from ibsr.photos import query as q
from ibsr.photos.box import Box


def scene(h=120, w=160):
    """A red rectangle on a light gray background."""
    rgb = np.full((h, w, 3), 200, np.uint8)
    rgb[40:90, 60:120] = (200, 30, 30)
    mask = np.zeros((h, w), bool)
    mask[40:90, 60:120] = True
    return rgb, mask


def test_exif_orientation_is_applied(tmp_path):
    rgb, _ = scene()
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rot.jpg", exif=exif)
    loaded, alpha = photo_image.load_image(tmp_path / "rot.jpg")
    assert loaded.shape == (160, 120, 3) and alpha is None


@pytest.mark.parametrize("mode", ["L", "I;16", "RGBA", "P"])
def test_modes_become_rgb(tmp_path, mode):
    rgb, mask = scene()
    if mode == "L":
        image = Image.fromarray(rgb[:, :, 0])
    elif mode == "I;16":
        image = Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257))
    elif mode == "RGBA":
        image = Image.fromarray(np.dstack([rgb, mask.astype(np.uint8) * 255]))
    else:
        image = Image.fromarray(rgb).convert("P")
    image.save(tmp_path / "x.png")
    query = q.load_query(tmp_path / "x.png")
    assert query.rgb.shape == (120, 160, 3) and query.rgb.dtype == np.uint8
    if mode == "I;16":
        assert (query.rgb[:, :, 1] == rgb[:, :, 0]).all()  # 16 bits mapped back onto 8
    if mode == "RGBA":
        assert query.mask_source == "alpha" and (query.mask == mask).all()


def test_webp_and_grabcut_finds_the_object(tmp_path):
    rgb, mask = scene()
    Image.fromarray(rgb).save(tmp_path / "x.webp", lossless=True)
    query = q.load_query(tmp_path / "x.webp")
    assert query.mask_source == "grabcut"
    iou = (query.mask & mask).sum() / (query.mask | mask).sum()
    assert iou > 0.8


def test_grabcut_on_a_large_photo_runs_shrunk_and_returns_a_full_size_mask():
    small_rgb, small_mask = scene()
    rgb, mask = (np.repeat(np.repeat(a, 10, axis=0), 10, axis=1) for a in (small_rgb, small_mask))  # 1200 x 1600
    rgb[::7, ::5] = (120, 120, 120)  # texture, so the shrinking is not trivial
    found = photo_mask.grabcut_mask(rgb)
    assert found.shape == (1200, 1600) and found.dtype == bool
    assert (found & mask).sum() / (found | mask).sum() > 0.9


def test_grabcut_is_deterministic():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
    rgb[20:60, 30:70] = (30, 200, 40)
    masks = [photo_mask.grabcut_mask(rgb) for _ in range(3)]
    assert all((m == masks[0]).all() for m in masks)


def test_mask_file(tmp_path):
    rgb, mask = scene()
    Image.fromarray(rgb).save(tmp_path / "x.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    query = q.load_query(tmp_path / "x.png", tmp_path / "m.png")
    assert query.mask_source == "file" and (query.mask == mask).all()


def test_bad_masks(tmp_path):
    rgb, mask = scene()
    Image.fromarray(rgb).save(tmp_path / "x.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((120, 160), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(IbsrError, match="mask is 10x10 but the image is 160x120"):
        q.load_query(tmp_path / "x.png", tmp_path / "small.png")
    with pytest.raises(IbsrError, match="mask is empty"):
        q.load_query(tmp_path / "x.png", tmp_path / "empty.png")


def test_bad_images(tmp_path, monkeypatch):
    rgb, _ = scene()
    (tmp_path / "text.jpg").write_text("hello")
    Image.fromarray(rgb).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(IbsrError, match="not an image"):
        q.load_query(tmp_path / "text.jpg")
    with pytest.raises(IbsrError, match="truncated"):
        q.load_query(tmp_path / "cut.jpg")
    with pytest.raises(IbsrError, match="not found"):
        q.load_query(tmp_path / "missing.jpg")
    monkeypatch.setattr(photo_image, "MAX_PIXELS", 100 * 100)
    with pytest.raises(IbsrError, match="pixel limit") as info:
        q.load_query(tmp_path / "full.jpg")
    assert "full.jpg" in str(info.value)


def test_query_tensor_crops_around_the_mask():
    rgb, mask = scene()
    x = q.query_tensor(q.Query("x", rgb, mask, "file"), 64)
    assert x.shape == (4, 64, 64) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1
    # the object (mask) fills the crop minus the margin on its long side
    object_columns = (x[3] > 0).any(axis=0).sum()
    assert 64 * 0.75 < object_columns <= 64
    # object pixels are red
    inside = x[:, 32, 32]
    assert inside[0] > 0.5 and inside[1] < -0.5


def test_crop_pads_outside_the_image():
    rgb, mask = scene()
    mask = np.zeros_like(mask)
    mask[0:30, 0:10] = True  # object touches the corner
    crop_rgb, crop_mask = q.crop_to_mask(rgb, mask)
    assert crop_rgb.shape[0] == crop_rgb.shape[1] == round(30 * 1.2)
    assert crop_mask.sum() == mask.sum()


# --------------------------------------------------------------------------- the object box


def two_objects(h=120, w=200):
    """A red rectangle on the left and a blue one on the right, on light gray."""
    rgb = np.full((h, w, 3), 200, np.uint8)
    rgb[40:90, 20:70] = (200, 30, 30)
    rgb[30:100, 120:185] = (30, 30, 200)
    return rgb


def test_box_parse_and_check():
    box = Box.parse("10, 20.5,110,90")
    assert box == Box(10, 20.5, 110, 90) and str(box) == "10,20.5,110,90"
    assert box.check(200, 120) == Box(10, 20, 110, 90)  # widened to whole pixels
    assert Box.parse("-30,-5,250,100").check(200, 120) == Box(0, 0, 200, 100)  # clipped to the photo
    assert Box.parse("0,0,200,120").check(200, 120).to_list() == [0, 0, 200, 120]
    assert Box.from_value([1, 2, 3.5, 4]) == Box.from_value("1,2,3.5,4") == Box(1, 2, 3.5, 4)


@pytest.mark.parametrize("text, message", [
    ("10,20,30", "box '10,20,30' is not four numbers"),
    ("10,20,30,40,50", "is not four numbers"),
    ("a,b,c,d", "is not four numbers"),
    ("", "is not four numbers"),
    ("nan,0,10,10", "box nan,0,10,10: coordinates must be finite"),
    ("0,0,inf,10", "must be finite"),
    ("10,0,10,50", "box 10,0,10,50 is empty or inverted"),
    ("50,0,10,50", "box 50,0,10,50 is empty or inverted"),
    ("0,60,10,50", "is empty or inverted"),
])
def test_bad_box_text_is_a_one_line_error(text, message):
    with pytest.raises(IbsrError, match=message) as info:
        Box.parse(text)
    assert "\n" not in str(info.value) and "X0,Y0,X1,Y1" in str(info.value)


@pytest.mark.parametrize("value", [[1, 2, 3], [True, 0, 5, 5], "1,2", 7, {"x0": 1}])
def test_bad_box_values(value):
    with pytest.raises(IbsrError, match="not four numbers"):
        Box.from_value(value)


@pytest.mark.parametrize("box", ["200,0,300,50", "-50,0,0,50", "0,120,10,130", "-20,-20,-1,-1"])
def test_box_outside_the_image_names_box_and_image_size(tmp_path, box):
    Image.fromarray(two_objects()).save(tmp_path / "x.png")
    with pytest.raises(IbsrError) as info:
        q.load_query(tmp_path / "x.png", box=Box.parse(box))
    message = str(info.value)
    assert message.startswith(str(tmp_path / "x.png")) and f"box {box} lies outside the 200x120 image" in message
    assert "within 0,0,200,120" in message and "\n" not in message


@pytest.mark.parametrize("method", ["grabcut", "auto"])
def test_automatic_mask_is_made_inside_the_box(tmp_path, method):
    Image.fromarray(two_objects()).save(tmp_path / "x.png")
    box = Box(100, 15, 200, 110)  # the blue object only
    query = q.load_query(tmp_path / "x.png", mask_method=method, box=box)
    assert query.box == box
    outside = np.ones(query.mask.shape, bool)
    outside[15:110, 100:200] = False
    assert query.mask.any() and not query.mask[outside].any()  # nothing outside the box is object
    blue = np.zeros(query.mask.shape, bool)
    blue[30:100, 120:185] = True
    assert (query.mask & blue).sum() / (query.mask | blue).sum() > 0.8


def test_a_tight_box_keeps_the_object_edges():
    """GrabCut takes its input's border for background: it gets a band around the box, so an object
    the box was drawn tight around keeps its edges."""
    rng = np.random.default_rng(0)
    rgb = rng.normal(190, 12, (160, 240, 3)).clip(0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:160, :240]
    disk = (yy - 80) ** 2 + (xx - 160) ** 2 < 40 ** 2
    rgb[disk] = (rng.normal(0, 10, (disk.sum(), 3)) + (40, 60, 170)).clip(0, 255).astype(np.uint8)
    rgb[45:115, 25:85] = (200, 40, 30)  # another object, left
    mask, source = photo_mask.mask_in_box(rgb, Box(120, 40, 200, 120), method="grabcut")  # the disk's own bounding box
    assert source == "grabcut" and (mask & disk).sum() / (mask | disk).sum() > 0.95
    assert not mask[:, :120].any() and not mask[:40].any()


def test_automatic_mask_sees_only_the_box(monkeypatch):
    """The mask method gets the box's pixels and a thin band around them, and what it finds in the
    box is placed back where it was."""
    rgb = two_objects()
    seen = []

    def fake(crop, method, weights):
        seen.append(crop.copy())
        return np.ones(crop.shape[:2], bool), "grabcut"

    monkeypatch.setattr(photo_mask, "automatic_mask", fake)
    mask, source = photo_mask.mask_in_box(rgb, Box(100.4, 15, 199.5, 110))  # a detector's float box
    # the box (whole pixels: 100,15,200,110) and a band of 10% of its size around it, within the photo
    assert source == "grabcut" and (seen[0] == rgb[5:120, 90:200]).all()
    assert mask.sum() == 95 * 100 and mask[15:110, 100:200].all()  # kept: what lies in the box


def test_given_masks_are_cut_to_the_box(tmp_path):
    rgb = two_objects()
    both = (rgb != 200).any(axis=2)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    Image.fromarray(both.astype(np.uint8) * 255).save(tmp_path / "m.png")
    Image.fromarray(np.dstack([rgb, both.astype(np.uint8) * 255])).save(tmp_path / "a.png")
    box = Box.parse("0,0,100,120")  # the red object
    for query in (q.load_query(tmp_path / "x.png", tmp_path / "m.png", box=box), q.load_query(tmp_path / "a.png", box=box)):
        assert (query.mask == both & (np.arange(200) < 100)[None, :]).all()
    assert query.mask_source == "alpha"
    with pytest.raises(IbsrError, match=r"the mask file marks no pixel inside box 0,0,15,120 of the 200x120 image"):
        q.load_query(tmp_path / "x.png", tmp_path / "m.png", box=Box(0, 0, 15, 120))


def test_query_crop_lies_within_the_box():
    rgb = np.zeros((120, 200, 3), np.uint8)
    rgb[:] = (0, 255, 0)  # green: everything outside the box
    rgb[30:100, 110:190] = (200, 200, 200)  # the box: gray, with the blue object touching three of its sides
    rgb[30:100, 120:190] = (30, 30, 200)
    mask = np.zeros(rgb.shape[:2], bool)
    mask[30:100, 120:190] = True
    box = Box(110, 30, 190, 100)

    def green(x):
        pixels = (x[:3].transpose(1, 2, 0) + 1) * 127.5
        return (pixels[:, :, 1] > 200) & (pixels[:, :, 0] < 50)

    boxed = q.query_tensor(q.Query("x", rgb, mask, "file", box), 64)
    unboxed = q.query_tensor(q.Query("x", rgb, mask, "file"), 64)
    assert green(unboxed).any()  # without the box, the crop's margin shows the photo around the object
    assert not green(boxed).any()  # with it, no pixel from outside the box: zero padding there
    assert ((boxed[:3] == -1).all(axis=0)).any() and (boxed[3] > 0).sum() == (unboxed[3] > 0).sum()
