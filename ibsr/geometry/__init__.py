"""Meshes and their renderings: loading and normalizing a mesh file (`mesh.py`), the camera rig
and the grayscale views every index shape is represented by, and their montage (`render.py`).

Imports neither torch nor LanceDB, so render workers, synthetic photos and `ibsr-data` use it
without paying for them.
"""
