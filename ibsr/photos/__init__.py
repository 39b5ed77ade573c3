"""Query photos, from file to network input: decoding (`image.py`), the user's box (`box.py`),
the object mask (`mask.py`; the mask network's inference in `mask_model.py`), and the cropped
4-channel query tensor (`query.py`). Shared by search, evaluation, training and Ray workers.
"""
