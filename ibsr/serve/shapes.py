"""What the page shows of a hit: its thumbnail, its mesh as GLB, and the rig's cameras.

The mesh goes through the indexer's own loader (`load_mesh`: cleaning + `normalize_mesh`,
with the index's up axis), so it sits in the frame the views were rendered in: centred,
unit bounding sphere, +y up, front towards +z. A viewer placed at a rig camera
(`rig_json`) therefore sees what that view of the index saw.
"""

from __future__ import annotations

from pathlib import Path

from ibsr.errors import IbsrError
from ibsr.geometry.mesh import MeshError, load_mesh
from ibsr.geometry.render import CameraRig


class ShapeNotFound(IbsrError):
    """Unknown shape id, or its source mesh is gone: answered 404."""


def mesh_glb(source_path: str, up_axis: str, name: str) -> bytes:
    """The shape's source mesh, normalized exactly as it was indexed, as binary glTF.

    Errors name the shape by `name`, never by its path on the server."""
    path = Path(source_path)
    if not path.is_file():
        raise ShapeNotFound("source mesh is gone (moved or deleted since it was indexed); rebuild the index "
                            "with `ibsr-index build CATALOG --prune`", name)
    try:
        mesh = load_mesh(path, up_axis=up_axis)
    except MeshError as exc:  # its message says what is wrong with the file, its path is kept out
        raise IbsrError(f"source mesh no longer loads ({exc.message}); it changed since it was indexed", name) from None
    return mesh.export(file_type="glb")


def rig_json(rig: CameraRig) -> dict:
    """The index's camera rig with every view's camera, in the normalized mesh's frame."""
    cameras = [{"view": k, "azimuth_deg": float(az), "elevation_deg": rig.elevation_deg,
                "position": [round(float(x), 6) for x in eye]}
               for k, (az, eye) in enumerate(zip(rig.azimuths_deg(), rig.eyes()))]
    return {**rig.to_dict(), "target": [0.0, 0.0, 0.0], "up": [0.0, 1.0, 0.0], "cameras": cameras}
