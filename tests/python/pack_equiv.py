"""Python side of tests/pack_python.rs: a history made by Python ZODB, packed by Python's
FileStorage.pack for comparison with zodbctl's pack of a copy, and the checks.

usage:
  pack_equiv.py make DATA_FS BLOB_DIR
      write a history with BTrees, an unlinked subtree, an undo, a deleted object (IExternalGC
      deleteObject), blobs (changed and unlinked), then commits after the pack time, among
      them an undo of a pre-pack transaction (a backpointer into the pre-pack region);
      print the pack time (unix seconds)
  pack_equiv.py pack DATA_FS BLOB_DIR T
      Python's FileStorage.pack(T, referencesf) (GC on, keep-old on)
  pack_equiv.py compare OURS OUR_BLOBS PYTHONS PYTHON_BLOBS
      same transactions and records, byte-identical files; our index used by Python without
      a rescan; loads of every object work; blob trees (and their .old) identical
"""
import base64
import os
import sys
import time

import transaction
import ZODB
import ZODB.FileStorage
import ZODB.serialize
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob
from ZODB.Connection import TransactionMetaData


def make(path, blobs):
    st = ZODB.FileStorage.FileStorage(path, blob_dir=blobs)
    db = ZODB.DB(st)
    conn = db.open()
    root = conn.root()
    root["tree"] = OOBTree()
    for i in range(400):
        root["tree"]["k%04d" % i] = PersistentMapping({"v": i, "pad": "x" * (i % 50)})
    transaction.commit()
    for rnd in range(3):
        for i in range(0, 400, 3):
            root["tree"]["k%04d" % i]["v"] = (rnd, i)
        transaction.get().note("round %d" % rnd)
        transaction.commit()
    # A subtree, later unlinked.
    root["sub"] = PersistentMapping()
    for i in range(30):
        root["sub"][i] = PersistentMapping({"leaf": PersistentMapping({"i": i})})
    transaction.commit()
    # An undone change.
    root["tree"]["k0001"]["v"] = "to be undone"
    transaction.commit()
    undo_me = st.lastTransaction()
    db.undo(base64.encodebytes(undo_me)[:-1])
    transaction.commit()
    del root["sub"]
    transaction.get().note("unlink sub")
    transaction.commit()
    # Blobs: one changed, one unlinked.
    root["b1"] = Blob(b"one")
    root["b2"] = Blob(b"gone")
    transaction.commit()
    with root["b1"].open("w") as f:
        f.write(b"two")
    transaction.commit()
    del root["b2"]
    transaction.commit()
    # An orphan deleted through IExternalGC.
    root["orphan"] = PersistentMapping({"x": 1})
    transaction.commit()
    orphan = root["orphan"]
    del root["orphan"]
    transaction.commit()
    t = TransactionMetaData()
    st.tpc_begin(t)
    st.deleteObject(orphan._p_oid, orphan._p_serial, t)
    st.tpc_vote(t)
    st.tpc_finish(t)
    # A change that a post-pack undo reverts.
    root["tree"]["k0002"]["v"] = "before the pack time"
    transaction.commit()
    pre_undo = st.lastTransaction()
    time.sleep(0.05)
    pack_time = time.time()
    time.sleep(0.05)
    # After the pack time.
    conn.sync()
    for i in range(0, 400, 7):
        root["tree"]["k%04d" % i]["v"] = "after"
    transaction.commit()
    db.undo(base64.encodebytes(pre_undo)[:-1])
    transaction.commit()
    with root["b1"].open("w") as f:
        f.write(b"three")
    transaction.commit()
    db.close()
    print(repr(pack_time))


def pack(path, blobs, t):
    st = ZODB.FileStorage.FileStorage(path, blob_dir=blobs)
    st.pack(float(t), ZODB.serialize.referencesf)
    st.close()


def records(path):
    out = []
    it = ZODB.FileStorage.FileIterator(path)
    for txn in it:
        recs = [(r.oid, r.tid, r.data, r.data_txn) for r in txn]
        out.append((txn.tid, txn.status, txn.user, txn.description, txn.extension_bytes, recs))
    it.close()
    return out


def tree(root):
    files = {}
    if not os.path.isdir(root):
        return files
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            if rel.startswith("tmp" + os.sep):
                continue
            with open(p, "rb") as f:
                files[rel] = f.read()
    return files


def compare(ours, our_blobs, pythons, python_blobs):
    a, b = records(ours), records(pythons)
    assert len(a) == len(b), ("transactions", len(a), len(b))
    for x, y in zip(a, b):
        assert x == y, ("transaction differs", x[0], x[:5], y[:5])
    with open(ours, "rb") as f:
        ob = f.read()
    with open(pythons, "rb") as f:
        pb = f.read()
    assert ob == pb, "files are not byte-identical (%d vs %d bytes)" % (len(ob), len(pb))
    # Python opens ours with our index, without a rescan.
    FS = ZODB.FileStorage.FileStorage
    used = []
    orig = FS._restore_index

    def restore(self):
        r = orig(self)
        used.append(r is not None)
        return r

    FS._restore_index = restore
    st = FS(ours, blob_dir=our_blobs, read_only=True)
    FS._restore_index = orig
    assert used == [True], "Python rescanned our file (index not used): %r" % used
    n = 0
    for oid in st._index.keys():
        try:
            st.load(oid)
        except ZODB.POSException.POSKeyError:
            pass
        n += 1
    st.close()
    for suffix in ("", ".old"):
        ta, tb = tree(our_blobs + suffix), tree(python_blobs + suffix)
        assert sorted(ta) == sorted(tb), ("blob trees differ", suffix, sorted(set(ta) ^ set(tb)))
        assert ta == tb, ("blob contents differ", suffix)
    print("equivalent: %d transactions, %d objects, %d bytes" % (len(a), n, len(ob)))


if __name__ == "__main__":
    {"make": make, "pack": pack, "compare": compare}[sys.argv[1]](*sys.argv[2:])
