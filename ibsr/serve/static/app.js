// The ibsr page: send a photo (and optional mask) to POST /search, show the photo, the mask ibsr
// used and the hits as cards; a click on a hit opens its mesh (GET /shapes/ID/mesh.glb) in a
// three.js view, first seen from the rig camera of the best-matching view (GET /rig). A rectangle
// dragged on the photo is sent as `box` (the object to search in a photo of several).
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';

const $ = (id) => document.getElementById(id);
const VIEWER_SIZE = 512;
// The index renderings' key light (ibsr/geometry/render.py KEY_LIGHT_DIR): above-front-left.
const KEY_LIGHT = new THREE.Vector3(-0.35, 0.85, 0.40).normalize();

let rig = null;
let viewer = null;
let box = null;  // [x0, y0, x1, y1] in the photo's own pixels (naturalWidth x naturalHeight), or null
let shownFile = null;  // the file whose preview #photo shows
let searches = 0;  // numbers each search: only the latest one's answer is shown
const MIN_DRAG_PX = 4;  // a shorter drag is a click, not a box

// The API key (ibsr-serve --api-key): opened as /#key=KEY, kept in this browser's localStorage.
// A fragment, not ?key=, because browsers never send fragments: the key stays out of server and
// proxy logs. It is then removed from the address bar (and so from history and bookmarks).
const KEY_ITEM = 'ibsr-api-key';
function takeKeyFromUrl() {
  const key = new URLSearchParams(location.hash.slice(1)).get('key');
  if (key === null) return;
  localStorage.setItem(KEY_ITEM, key);
  history.replaceState(null, '', location.pathname + location.search);
}

// fetch with the key; a 401 asks for the key once and tries again.
async function api(url, options = {}, ask = true) {
  const key = localStorage.getItem(KEY_ITEM);
  const headers = key ? { ...options.headers, Authorization: `Bearer ${key}` } : options.headers;
  const response = await fetch(url, { ...options, headers });
  if (response.status !== 401 || !ask) return response;
  const entered = prompt('This ibsr service needs an API key (ibsr-serve --api-key):');
  if (!entered) return response;
  localStorage.setItem(KEY_ITEM, entered.trim());
  return api(url, options, false);
}

// An <img> cannot send the key: fetch the image with it and show the bytes.
async function showImage(img, url) {
  const response = await api(url, {}, false);
  if (!response.ok) return;
  img.addEventListener('load', () => URL.revokeObjectURL(img.src), { once: true });
  img.src = URL.createObjectURL(await response.blob());
}

function shapeUrl(shapeId, file) {
  return 'shapes/' + shapeId.split('/').map(encodeURIComponent).join('/') + '/' + file;
}

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

async function errorText(response) {
  try { return (await response.json()).error; } catch { return `${response.status} ${response.statusText}`; }
}

async function loadInfo() {
  const response = await api('health');  // asks for the key at once if one is needed
  if (!response.ok) return;
  const health = await response.json();
  $('index-info').textContent = `${health.shapes} shapes, table version ${health.version}, encoder ${health.encoder_id}`;
}

// The prefilters the service offers (GET /options: its registry), each with what it reranks as
// its tooltip, the default one chosen.
async function loadOptions() {
  const response = await api('options', {}, false);
  if (!response.ok) return;
  const { prefilters, defaults } = await response.json();
  const select = $('prefilter');
  select.replaceChildren(...prefilters.map(({ name, help }) => {
    const option = new Option(name, name, false, name === defaults.prefilter);
    option.title = help;
    return option;
  }));
  const describe = () => { select.title = select.selectedOptions[0]?.title || ''; };
  select.addEventListener('change', describe);
  describe();
}

async function search() {
  const image = $('image').files[0];
  if (!image) { setStatus('choose a photo first', true); return; }
  const form = new FormData();
  form.append('image', image, image.name);
  if ($('mask').files[0]) form.append('mask', $('mask').files[0], $('mask').files[0].name);
  form.append('topk', $('topk').value || '10');
  if ($('category').value.trim()) form.append('category', $('category').value.trim());
  if ($('prefilter').value) form.append('prefilter', $('prefilter').value);  // none yet: the service's default
  if (box) form.append('box', box.join(','));

  showPhoto(image);
  $('mask-used').removeAttribute('src');
  $('results').replaceChildren();
  setStatus('searching…');
  const mine = ++searches;
  const started = performance.now();
  const response = await api('search?mask_preview=true', { method: 'POST', body: form });
  const result = response.ok ? await response.json() : await errorText(response);
  if (mine !== searches) return;  // a newer search (another box, another photo) has started
  if (!response.ok) { setStatus(result, true); return; }
  const ms = Math.round(performance.now() - started);
  setStatus(`${result.hits.length} hits in ${ms} ms (table version ${response.headers.get('X-Ibsr-Version')})`);
  showResult(result);
}

function showPhoto(image) {
  if (shownFile === image) return;
  shownFile = image;
  $('photo').src = URL.createObjectURL(image);
  $('query').hidden = false;
}

function showResult(result) {
  setBox(result.box);  // the box used: the one drawn, clipped to the photo
  $('mask-used').src = result.mask_preview;
  $('mask-caption').textContent = `mask (${result.mask_source})`;
  $('predicted').textContent = result.predicted_categories.length
    ? `categories searched: ${result.predicted_categories.join(', ')}` : '';
  $('results').replaceChildren(...result.hits.map(card));
}

function card(hit) {
  const el = document.createElement('article');
  el.className = 'card';
  el.dataset.shapeId = hit.shape_id;
  el.title = 'open the 3D view';
  const img = document.createElement('img');
  showImage(img, shapeUrl(hit.shape_id, 'thumbnail.png')).catch(() => {});  // a broken image, as before
  img.alt = `rendered views of ${hit.shape_id}`;
  const top = document.createElement('div');
  top.className = 'top';
  top.innerHTML = '<b></b><span class="category"></span><span class="score"></span>';
  top.children[0].textContent = `#${hit.rank}`;
  top.children[1].textContent = hit.category;
  top.children[2].textContent = hit.score.toFixed(4);
  const id = document.createElement('div');
  id.className = 'id';
  id.textContent = hit.shape_id;
  const path = document.createElement('div');
  path.className = 'path';
  path.textContent = hit.source_path;
  el.append(img, top, id, path);
  el.addEventListener('click', () => openViewer(hit));
  return el;
}

function makeViewer() {
  const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(1);
  renderer.setSize(VIEWER_SIZE, VIEWER_SIZE);
  $('viewer-canvas').append(renderer.domElement);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xffffff);
  scene.add(new THREE.AmbientLight(0xffffff, 0.35));
  const key = new THREE.DirectionalLight(0xffffff, 1.6);
  key.position.copy(KEY_LIGHT);
  scene.add(key);
  const camera = new THREE.PerspectiveCamera(rig.fov_deg, 1, 0.01, 100);  // square: fov = the rig's
  const headlight = new THREE.DirectionalLight(0xffffff, 1.3);  // light at the camera, as in the index
  camera.add(headlight);
  scene.add(camera);
  const controls = new OrbitControls(camera, renderer.domElement);
  const render = () => renderer.render(scene, camera);
  controls.addEventListener('change', render);
  return { renderer, scene, camera, controls, render, object: null };
}

async function openViewer(hit) {
  rig = rig || await (await api('rig')).json();
  viewer = viewer || makeViewer();
  const box = $('viewer-canvas');
  box.dataset.state = 'loading';
  $('viewer-title').textContent = `#${hit.rank} ${hit.shape_id} (${hit.category}, score ${hit.score.toFixed(4)})`;
  const cam = rig.cameras[hit.best_view];
  $('viewer-note').textContent = `Seen from the camera of its best-matching view ${hit.best_view} ` +
    `(azimuth ${cam.azimuth_deg}°, elevation ${cam.elevation_deg}°). Drag to turn, scroll to zoom.`;
  if (!$('viewer').open) $('viewer').showModal();
  const response = await api(shapeUrl(hit.shape_id, 'mesh.glb'));
  if (!response.ok) {
    box.dataset.state = 'error';
    $('viewer-note').textContent = await errorText(response);
    return;
  }
  new GLTFLoader().parse(await response.arrayBuffer(), '', (gltf) => {
    if (viewer.object) viewer.scene.remove(viewer.object);
    gltf.scene.traverse((node) => {
      if (node.isMesh) {
        // Gray and flat, like the index renderings the hit was matched against.
        node.material = new THREE.MeshStandardMaterial({
          color: 0xc8c8c8, roughness: 0.85, metalness: 0, flatShading: true, side: THREE.DoubleSide });
      }
    });
    viewer.object = gltf.scene;
    viewer.scene.add(gltf.scene);
    viewer.camera.position.fromArray(cam.position);
    viewer.camera.up.fromArray(rig.up);
    viewer.controls.target.fromArray(rig.target);
    viewer.controls.update();
    viewer.render();
    box.dataset.state = 'ready';
  }, (error) => {
    box.dataset.state = 'error';
    $('viewer-note').textContent = `cannot show this mesh: ${error.message || error}`;
  });
}

// ---- the object box: drag on the photo; sent as `box` in the photo's own pixels

function setBox(value) {
  box = value || null;
  drawBox(box);
  $('clear-box').hidden = !box;
  $('photo-caption').textContent = box ? `photo, box ${box.join(',')}` : 'photo: drag a box around the object';
}

function drawBox(b) {
  const img = $('photo');
  const rect = $('box-rect');
  rect.hidden = !b || !img.naturalWidth;
  if (rect.hidden) return;
  const sx = img.clientWidth / img.naturalWidth;
  const sy = img.clientHeight / img.naturalHeight;
  rect.style.left = `${img.clientLeft + b[0] * sx}px`;
  rect.style.top = `${img.clientTop + b[1] * sy}px`;
  rect.style.width = `${(b[2] - b[0]) * sx}px`;
  rect.style.height = `${(b[3] - b[1]) * sy}px`;
}

// The pointer's position in the photo's own pixels, clamped to the photo.
function photoPoint(event) {
  const img = $('photo');
  const r = img.getBoundingClientRect();
  const x = (event.clientX - r.left - img.clientLeft) * img.naturalWidth / img.clientWidth;
  const y = (event.clientY - r.top - img.clientTop) * img.naturalHeight / img.clientHeight;
  return [Math.min(Math.max(x, 0), img.naturalWidth), Math.min(Math.max(y, 0), img.naturalHeight)];
}

function dragged(start, end) {
  return [Math.round(Math.min(start[0], end[0])), Math.round(Math.min(start[1], end[1])),
          Math.round(Math.max(start[0], end[0])), Math.round(Math.max(start[1], end[1]))];
}

function setupBox() {
  const frame = $('photo-frame');
  let start = null;
  let startPx = null;
  frame.addEventListener('pointerdown', (e) => {
    if (!$('photo').naturalWidth || e.button !== 0) return;
    e.preventDefault();  // no native image drag, no text selection
    frame.setPointerCapture(e.pointerId);
    start = photoPoint(e);
    startPx = [e.clientX, e.clientY];
  });
  frame.addEventListener('pointermove', (e) => { if (start) drawBox(dragged(start, photoPoint(e))); });
  frame.addEventListener('pointerup', (e) => {
    if (!start) return;
    const b = dragged(start, photoPoint(e));
    const small = Math.abs(e.clientX - startPx[0]) < MIN_DRAG_PX || Math.abs(e.clientY - startPx[1]) < MIN_DRAG_PX;
    start = null;
    if (small || b[0] >= b[2] || b[1] >= b[3]) { drawBox(box); return; }  // a click keeps the box there was
    setBox(b);
    run();
  });
  frame.addEventListener('pointercancel', () => { start = null; drawBox(box); });
  $('clear-box').addEventListener('click', () => { setBox(null); run(); });
  $('photo').addEventListener('load', () => drawBox(box));
}

function setupDrop() {
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files.length) {
      $('image').files = e.dataTransfer.files;
      setBox(null);  // a box belongs to the photo it was drawn on
      run();
    }
  });
}

const run = () => search().catch((e) => setStatus(`search failed: ${e.message || e}`, true));
$('search-form').addEventListener('submit', (e) => { e.preventDefault(); run(); });
$('image').addEventListener('change', () => { setBox(null); run(); });
$('viewer-close').addEventListener('click', () => $('viewer').close());
setupDrop();
setupBox();
takeKeyFromUrl();
loadInfo().then(loadOptions);  // after /health, which asks for the key once if one is needed
