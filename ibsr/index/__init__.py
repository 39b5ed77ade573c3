"""The index directory: its layout and formats (layout.py), the LanceDB table (table.py), the
flat sidecar (flat.py), the FAISS prefilter (faiss_index.py), the score bounds (bounds.py), the
write lock (lock.py), the one writer (writer.py), snapshots of one version (snapshot.py) and
verify (verify.py).

    with IndexWriteLock(index_dir):
        writer = IndexWriter(index_dir, meta)
        writer.add(shapes, views)              # one atomic commit
        writer.refresh_derived()               # the sidecar, then FAISS, from the new version
    snapshot = IndexSnapshot.open(index_dir)   # rows, views, bounds, FAISS of one pinned version

Nothing is imported here: render workers import `layout` (`ShapeEntry`) without paying for
LanceDB, FAISS and torch.
"""
