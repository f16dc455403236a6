import json, sys, hashlib
import ZODB.FileStorage
from ZODB.utils import p64, u64, maxtid
from ZODB.POSException import POSKeyError
from ZODB.blob import is_blob_record

def h(b):
    return None if b is None else b.hex()

def guard(f):
    try:
        return f()
    except POSKeyError:
        return "POSKeyError"

def describe(st):
    out = {"last_transaction": h(st.lastTransaction()), "len": len(st), "size": st.getSize()}
    txns = []
    for t in st.iterator():
        recs = [[h(r.oid), h(r.tid), h(r.data), h(r.data_txn)] for r in t]
        txns.append({"tid": h(t.tid), "status": t.status, "user": h(t.user),
                     "description": h(t.description), "extension": h(t.extension_bytes),
                     "records": recs})
    out["transactions"] = txns
    tids = [bytes.fromhex(t["tid"]) for t in txns]
    ranges = []
    for k in range(0, len(tids), 4):
        after = p64(u64(tids[k]) + 1)
        stop = tids[min(k + 3, len(tids) - 1)]
        for start, stop in ((tids[k], None), (after, stop), (None, p64(u64(tids[k]) - 1))):
            ranges.append([h(t.tid) for t in st.iterator(start, stop)])
    out["ranges"] = ranges
    objects = []
    blobs = []
    for oid in sorted(st._index.keys()):
        o = {"oid": h(oid)}
        o["load"] = guard(lambda: [h(x) for x in st.load(oid)])
        def it():
            r = st.record_iternext(oid)
            return [h(r[0]), h(r[1]), h(r[2]), h(r[3])]
        o["iternext"] = guard(it)
        hist = st.history(oid, size=1 << 30)
        o["history"] = [[h(e["tid"]), e["size"], h(e["user_name"]), h(e["description"])] for e in hist]
        serial = []
        before = []
        for e in hist:
            t = e["tid"]
            data = guard(lambda: st.loadSerial(oid, t))
            serial.append(h(data) if isinstance(data, bytes) else data)
            if isinstance(data, bytes) and is_blob_record(data) and st.blob_dir:
                with open(st.loadBlob(oid, t), 'rb') as f:
                    blobs.append([h(oid), h(t), f.read().hex()])
            for q in (t, p64(u64(t) + 1)):
                r = guard(lambda: st.loadBefore(oid, q))
                before.append(r if isinstance(r, str) else (None if r is None else [h(x) for x in r]))
        before.append(guard(lambda: [h(x) for x in st.loadBefore(oid, maxtid)] if st.loadBefore(oid, maxtid) else None))
        o["load_serial"] = serial
        o["load_before"] = before
        objects.append(o)
    out["objects"] = objects
    out["blobs"] = blobs
    out["undo_log"] = [[d["id"].decode(), h(d["user_name"]), h(d["description"]), d["size"]]
                       for d in st.undoLog(0, 1 << 30)]
    return out

def app_view(st):
    """What an application sees through ZODB.DB: every document, the BTree, the blobs."""
    import ZODB
    db = ZODB.DB(st)
    root = db.open().root()
    view = {"root": sorted(root.keys())}
    view["docs"] = {k: dict(v) for k, v in root["docs"].items()}
    view["tree"] = list(root["tree"].items())
    for name in ("b1", "b2"):
        with root[name].open() as f:
            view[name] = f.read().hex()
    db.close()
    return view

if __name__ == "__main__":
    path, blob_dir = sys.argv[1], sys.argv[2]
    st = ZODB.FileStorage.FileStorage(path, read_only=True, blob_dir=blob_dir)
    d = describe(st)
    d["used_index"] = st._used_index
    st.close()
    if len(sys.argv) > 3:
        st = ZODB.FileStorage.FileStorage(path, read_only=True, blob_dir=blob_dir)
        d["app"] = app_view(st)
    json.dump(d, sys.stdout)
