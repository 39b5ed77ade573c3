"""What ImageNet alone knows about matching real photos to shapes: EfficientNet-Lite0/1/2 untrained.

A probe, not a model: each packaged ImageNet backbone, frozen, embeds real_dev's photos and the
views of the benchmark's real catalog (real_dev's 22 meshes + the 110 held-out real_train
meshes, as in `benchmarks/generalization.py`'s real rows), and a shape scores the best cosine of
its views' pooled features with the photo's. No attention, no head, no training: the row says
how much of the task each backbone's ImageNet features carry before ibsr trains them, so a
larger backbone (Lite1: 240 px, Lite2: 260 px) is worth a GPU stage only if it knows more here.

    python benchmarks/imagenet_probe.py --json benchmarks/out/imagenet-probe.json

Each photo goes in twice: the crop `ibsr-search` makes around the automatic mask (`crop`), and
the same crop with everything outside the mask painted the views' white (`cutout`: the photo's
background is not in any view). Views are rendered as `ibsr-index build` renders them (12
grayscale views), at each backbone's own input size, and given to it as three equal channels.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from generalization import cpu_name  # noqa: E402

from ibsr.eval.real_sets import dev_entries, family, split_real_train, write_dev_queries  # noqa: E402
from ibsr.geometry.mesh import load_mesh  # noqa: E402
from ibsr.geometry.render import BACKGROUND, render_views  # noqa: E402
from ibsr.model.backbones.efficientnet_lite import VARIANTS, EfficientNetLite, imagenet_state_dict  # noqa: E402
from ibsr.model.inputs import scale_pixels  # noqa: E402
from ibsr.photos.query import crop_to_mask, load_query  # noqa: E402

ARCHS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def backbone(arch: str) -> EfficientNetLite:
    net = EfficientNetLite(arch, embed_dim=None)
    net.load_state_dict(imagenet_state_dict(arch))
    return net.eval()


@torch.no_grad()
def features(net: EfficientNetLite, images: np.ndarray, batch: int = 32) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 1280 L2-normalized pooled ImageNet features ([-1, 1] input,
    EfficientNet-Lite's own scaling)."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(scale_pixels(images[start:start + batch].transpose(0, 3, 1, 2)))
        out.append(F.normalize(net.forward_features(x), dim=-1))
    return torch.cat(out)


def photo_inputs(queries: list[dict], size: int) -> dict[str, np.ndarray]:
    """The `crop` and `cutout` inputs of every photo at `size` (the automatic mask, as searched)."""
    crops, cutouts = [], []
    for q in queries:
        query = load_query(q["image"])
        rgb, mask = crop_to_mask(query.rgb, query.mask)
        crops.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
        cut = np.where(mask[..., None], rgb, np.uint8(BACKGROUND))
        cutouts.append(cv2.resize(cut, (size, size), interpolation=cv2.INTER_AREA))
    return {"crop": np.stack(crops), "cutout": np.stack(cutouts)}


def view_inputs(entries, size: int) -> np.ndarray:
    """S x 12 x size x size x 3 uint8: each shape's grayscale views as three channels."""
    views = [render_views(load_mesh(Path(e.path)), size) for e in entries]
    return np.repeat(np.stack(views)[..., None], 3, axis=-1)


def scores(net: EfficientNetLite, photos: np.ndarray, views: np.ndarray) -> torch.Tensor:
    """Q x S: the best cosine over each shape's views."""
    s, v = views.shape[:2]
    view_features = features(net, views.reshape(s * v, *views.shape[2:])).reshape(s, v, -1)
    return torch.einsum("qd,svd->qsv", features(net, photos), view_features).amax(dim=-1)


def metrics(score: torch.Tensor, queries: list[dict], shape_ids: list[str]) -> dict:
    order = score.argsort(dim=1, descending=True)
    truth = [shape_ids.index(q["shape_id"]) for q in queries]
    first = [shape_ids[int(o[0])] for o in order]
    n = len(queries)
    return {
        "top1": sum(int(order[i, 0]) == truth[i] for i in range(n)) / n,
        "top10": sum(truth[i] in order[i, :10].tolist() for i in range(n)) / n,
        "category": sum(first[i].split("/")[0] == q["shape_id"].split("/")[0] for i, q in enumerate(queries)) / n,
        "family": sum(family(first[i]) == family(q["shape_id"]) for i, q in enumerate(queries)) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-dev", default="../shared/real_dev", help="real_dev folder (read in place)")
    parser.add_argument("--real-train", default="../shared/real_train",
                        help="real_train folder: its held-out part (ibsr.eval.real_sets) is the distractors")
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated EfficientNet-Lite variants")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    dev = Path(args.real_dev)
    if not (dev / "queries.jsonl").is_file() or not Path(args.real_train).is_dir():
        sys.exit(f"error: no real_dev at {dev} or real_train at {args.real_train}: pass --real-dev / --real-train")
    torch.set_num_threads(args.threads)
    entries = dev_entries(dev) + split_real_train(args.real_train)[1]
    shape_ids = [e.shape_id for e in entries]
    with tempfile.TemporaryDirectory() as tmp:
        queries = [json.loads(line) for line in write_dev_queries(dev, Path(tmp) / "q.jsonl").read_text().splitlines()]
    rows = []
    for arch in args.archs.split(","):
        size = VARIANTS[arch][2]
        started = time.perf_counter()
        net, photos, views = backbone(arch), photo_inputs(queries, size), view_inputs(entries, size)
        for variant, images in photos.items():
            rows.append({"arch": arch, "size": size, "input": variant, **metrics(scores(net, images, views),
                                                                               queries, shape_ids)})
            print(" | ".join(f"{v:.1%}" if isinstance(v, float) else str(v) for v in rows[-1].values()), flush=True)
        print(f"  {arch}: {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\n{len(queries)} real photos, {len(entries)} shapes, CPU: {cpu_name()}")
    print("| backbone | px | photo input | top-1 | top-10 | category | family |\n| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['arch']} | {r['size']} | {r['input']} | {r['top1']:.1%} | {r['top10']:.1%} | "
              f"{r['category']:.1%} | {r['family']:.1%} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "photos": len(queries), "shapes": len(entries),
                                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
