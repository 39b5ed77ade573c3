#!/usr/bin/env bash
# Refresh the three.js files that ibsr-serve's page uses (ibsr/serve/static/vendor/three/),
# from the npm package, so the page needs no CDN:
#   scripts/vendor_three.sh [VERSION]        (default: the version in vendor/three/VERSION)
# Then open the page (ibsr-serve, http://127.0.0.1:8765/) and run tests/test_serve_browser.py.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=ibsr/serve/static/vendor/three
VERSION="${1:-$(cat "$DEST/VERSION")}"
# package path -> path under $DEST. build/ becomes the folder's root (build/ is git-ignored
# here) and examples/jsm/ becomes addons/, three.js's own import-map name for it.
FILES=(LICENSE build/three.module.js build/three.core.js
       examples/jsm/controls/OrbitControls.js examples/jsm/loaders/GLTFLoader.js
       examples/jsm/utils/BufferGeometryUtils.js examples/jsm/utils/SkeletonUtils.js)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "three@$VERSION" >/dev/null && tar xzf three-*.tgz)
rm -rf "$DEST"
for f in "${FILES[@]}"; do
  target="${f#build/}"
  target="${target/examples\/jsm/addons}"
  mkdir -p "$DEST/$(dirname "$target")"
  cp "$WORK/package/$f" "$DEST/$target"
done
node -p "require('$WORK/package/package.json').version" > "$DEST/VERSION"
echo "vendored three@$(cat "$DEST/VERSION") into $DEST"
