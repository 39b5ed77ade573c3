import numpy as np
import pytest
from PIL import Image

from ibsr.errors import IbsrError
from ibsr.searcher import query as q


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
    loaded, alpha = q.load_image(tmp_path / "rot.jpg")
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
    found = q.grabcut_mask(rgb)
    assert found.shape == (1200, 1600) and found.dtype == bool
    assert (found & mask).sum() / (found | mask).sum() > 0.9


def test_grabcut_is_deterministic():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
    rgb[20:60, 30:70] = (30, 200, 40)
    masks = [q.grabcut_mask(rgb) for _ in range(3)]
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
    monkeypatch.setattr(q, "MAX_PIXELS", 100 * 100)
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
