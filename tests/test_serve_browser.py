"""The ibsr-serve page in a real headless Chromium (Debian's), driven by playwright.

Upload a photo through the page, wait for the hit cards, open the 3D view of the best hit and
check what the canvas shows: the mesh, seen from the camera of the hit's best view, so its
silhouette matches the index's own rendering of that view. Drag a box on a photo of two objects
and check the request carries it, the answer echoes it and the page draws it.
Set IBSR_SERVE_SCREENSHOTS=DIR to keep the screenshots (page, 3D view, page with a box) to look at.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from ibsr.geometry.mesh import load_mesh
from ibsr.geometry.render import BACKGROUND, render_views
from ibsr.searcher import SearchOptions
from ibsr.searcher.prefilters import prefilter_help
from ibsr.serve import SearchService, ServeConfig, create_app

from serve_util import mesh_photo, running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
VIEW_SIZE = 512  # the page's 3D view is 512 x 512 CSS px at device scale 1


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail("chromium is not installed (apt-get install chromium); CI must test the page")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        # Debian's chromium, never a browser downloaded by `playwright install`.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def silhouette_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize("api_key, opened", [(None, "/"), ("page-key", "/#key=page-key"), ("page-key", "/")])
def test_page_searches_and_shows_the_hit_in_3d(browser, built_index, tiny_weights, catalog, tmp_path, api_key,
                                               opened):
    """With an API key the page is opened as /#key=KEY, or asks for the key: it keeps the key,
    drops it from the address bar, and sends it with every request (thumbnails included)."""
    mesh = sorted((catalog / "chair").iterdir())[0]
    photo, mask = mesh_photo(mesh, view=2, size=128)
    (tmp_path / "chair.png").write_bytes(photo)
    (tmp_path / "chair_mask.png").write_bytes(mask)
    service = SearchService(ServeConfig(index_dir=built_index, weights=tiny_weights, reload_interval_s=0,
                                        api_key=api_key))
    errors = []
    with running_server(create_app(service)) as base:
        page = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: dialog.accept(api_key))  # the page asks for the key
        page.goto(base + opened)
        page.wait_for_function("document.getElementById('index-info').textContent.includes('9 shapes')")
        assert "key" not in page.url and page.evaluate("localStorage.getItem('ibsr-api-key')") == api_key
        page.wait_for_function("document.getElementById('prefilter').options.length > 0")  # from GET /options
        offered = page.eval_on_selector_all("#prefilter option", "os => os.map(o => [o.value, o.title])")
        assert offered == [list(item) for item in prefilter_help().items()]
        assert page.input_value("#prefilter") == SearchOptions().prefilter
        page.fill("#topk", "5")
        page.set_input_files("#mask", str(tmp_path / "chair_mask.png"))
        page.set_input_files("#image", str(tmp_path / "chair.png"))  # choosing the photo starts the search
        page.wait_for_selector("#results .card >> nth=4", timeout=30_000)
        cards = page.locator("#results .card")
        assert cards.count() == 5
        assert "5 hits" in page.text_content("#status")
        assert page.text_content("#mask-caption") == "mask (file)"
        for image in ("#photo", "#mask-used"):
            assert page.eval_on_selector(image, "img => img.complete && img.naturalWidth > 0")
        page.wait_for_function("[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth)")
        shown = page.eval_on_selector_all(".card", "cards => cards.map(c => [c.dataset.shapeId, "
                                                   "c.querySelector('.path').textContent])")
        assert all(path == f"{shape}.obj" for shape, path in shown), shown  # relative to the catalog root
        first = cards.nth(0)
        shape_id, best_view = first.get_attribute("data-shape-id"), None
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

        first.click()
        page.wait_for_selector("#viewer-canvas[data-state=ready]", timeout=30_000)
        best_view = int(page.text_content("#viewer-note").split("best-matching view ")[1].split(" ")[0])
        box = page.locator("#viewer-canvas canvas").bounding_box()
        shot = page.screenshot(path=str(tmp_path / "viewer.png"), clip={
            "x": round(box["x"]), "y": round(box["y"]), "width": VIEW_SIZE, "height": VIEW_SIZE})
        page.screenshot(path=str(tmp_path / "page_viewer.png"))
    assert not errors, errors

    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.int16)
    assert pixels.shape == (VIEW_SIZE, VIEW_SIZE, 3)
    drawn = (pixels < 250).any(axis=2)  # background is white
    assert 0.02 < drawn.mean() < 0.9 and pixels[drawn].std() > 5  # a shaded object, not a blank or flat canvas
    source = service.served.searcher.shapes.source_paths[service.served.row_of[shape_id]]
    rendered = render_views(load_mesh(source), VIEW_SIZE)[best_view] != BACKGROUND
    assert silhouette_iou(drawn, rendered) > 0.85  # opened from the best view's camera
    other = render_views(load_mesh(source), VIEW_SIZE)[(best_view + 3) % 12] != BACKGROUND
    assert silhouette_iou(drawn, rendered) > silhouette_iou(drawn, other)
    if os.environ.get("IBSR_SERVE_SCREENSHOTS"):
        keep = os.environ["IBSR_SERVE_SCREENSHOTS"]
        os.makedirs(keep, exist_ok=True)
        for name in ("page.png", "viewer.png", "page_viewer.png"):
            shutil.copy(tmp_path / name, os.path.join(keep, name))


# Chromium gives no request body of a multipart upload with a file to playwright: the page's
# FormData is read where fetch receives it.
RECORD_BOXES = """
window.sentBoxes = [];
window.sentPrefilters = [];
const pageFetch = window.fetch;
window.fetch = (url, options) => {
  if (options && options.body instanceof FormData) {
    window.sentBoxes.push(options.body.get('box'));
    window.sentPrefilters.push(options.body.get('prefilter'));
  }
  return pageFetch(url, options);
};
"""


def test_page_sends_a_dragged_box_and_draws_the_box_used(browser, built_index, tiny_weights, catalog, tmp_path):
    # Two objects side by side: a chair on the left, a lamp on the right (256 x 128).
    chair, lamp = (np.asarray(Image.open(io.BytesIO(mesh_photo(sorted((catalog / c).iterdir())[0], view=1,
                                                                   size=128)[0]))) for c in ("chair", "lamp"))
    Image.fromarray(np.concatenate([chair, lamp], axis=1)).save(tmp_path / "two.png")
    service = SearchService(ServeConfig(index_dir=built_index, weights=tiny_weights, reload_interval_s=0))
    errors = []
    with running_server(create_app(service)) as base:
        page = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.add_init_script(RECORD_BOXES)
        page.goto(base + "/")
        page.wait_for_function("document.getElementById('index-info').textContent.includes('9 shapes')")
        page.fill("#topk", "3")
        page.wait_for_function("document.getElementById('prefilter').options.length > 0")
        page.select_option("#prefilter", "ann")  # the choice the page sends: one the service listed
        sent = lambda: page.evaluate("window.sentBoxes.at(-1)")  # the box field of the last search sent
        with page.expect_response(lambda r: "/search" in r.url) as first:
            page.set_input_files("#image", str(tmp_path / "two.png"))
        assert sent() is None and first.value.json()["box"] is None
        assert page.evaluate("window.sentPrefilters.at(-1)") == "ann"
        page.wait_for_selector("#results .card >> nth=2")
        page.wait_for_function("document.getElementById('photo').naturalWidth === 256")
        assert page.is_hidden("#box-rect") and page.is_hidden("#clear-box")

        # Drag from the lamp's left-top to past the photo's right-bottom corner: clamped to the photo.
        img = page.eval_on_selector("#photo", "i => { const r = i.getBoundingClientRect(); return {x: r.left + "
                                              "i.clientLeft, y: r.top + i.clientTop, w: i.clientWidth, h: i.clientHeight}; }")
        scale = 256 / img["w"]
        start = (round(img["x"] + 0.55 * img["w"]), round(img["y"] + 0.1 * img["h"]))
        end = (round(img["x"] + img["w"] + 30), round(img["y"] + img["h"] + 30))
        expected = [round((start[0] - img["x"]) * scale), round((start[1] - img["y"]) * scale), 256, 128]
        with page.expect_response(lambda r: "/search" in r.url) as boxed:
            page.mouse.move(*start)
            page.mouse.down()
            page.mouse.move(start[0] + 40, start[1] + 40, steps=4)
            page.mouse.move(*end, steps=4)
            page.mouse.up()
        assert sent() == ",".join(map(str, expected))
        answer = boxed.value.json()
        assert answer["box"] == expected  # the box used, echoed
        page.wait_for_function(f"document.getElementById('photo-caption').textContent === 'photo, box {sent()}'")
        page.wait_for_selector("#results .card >> nth=2")
        assert page.is_visible("#clear-box")
        drawn = page.locator("#box-rect").bounding_box()
        assert drawn["x"] == pytest.approx(img["x"] + expected[0] / scale, abs=1)
        assert drawn["y"] == pytest.approx(img["y"] + expected[1] / scale, abs=1)
        assert drawn["width"] == pytest.approx((expected[2] - expected[0]) / scale, abs=1)
        assert drawn["height"] == pytest.approx((expected[3] - expected[1]) / scale, abs=1)
        page.wait_for_function("(i => i.complete && i.naturalWidth === 256)(document.getElementById('mask-used'))")
        mask = page.eval_on_selector("#mask-used", "i => { const c = document.createElement('canvas'); "
                                                   "c.width = i.naturalWidth; c.height = i.naturalHeight; "
                                                   "const g = c.getContext('2d'); g.drawImage(i, 0, 0); "
                                                   "return Array.from(g.getImageData(0, 0, c.width, c.height).data); }")
        shown = np.array(mask, np.uint8).reshape(128, 256, 4)[:, :, 0] > 127
        assert shown.any() and not shown[:, :expected[0]].any()  # the mask used lies inside the box
        page.screenshot(path=str(tmp_path / "page_box.png"))

        with page.expect_response(lambda r: "/search" in r.url) as cleared:
            page.click("#clear-box")
        assert sent() is None and cleared.value.json()["box"] is None
        page.wait_for_function("document.getElementById('photo-caption').textContent.startsWith('photo: drag')")
        assert page.is_hidden("#box-rect") and page.is_hidden("#clear-box")
    assert not errors, errors
    if os.environ.get("IBSR_SERVE_SCREENSHOTS"):
        os.makedirs(os.environ["IBSR_SERVE_SCREENSHOTS"], exist_ok=True)
        shutil.copy(tmp_path / "page_box.png", os.path.join(os.environ["IBSR_SERVE_SCREENSHOTS"], "page_box.png"))
