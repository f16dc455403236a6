# Python writes a Data.fs with every kind of record; prints the list of operations (one per
# transaction, in file order) that produced it, for replaying through zodbctl's engine.
import json, sys, transaction, ZODB, ZODB.FileStorage
from persistent.mapping import PersistentMapping
from BTrees.OOBTree import OOBTree
from ZODB.blob import Blob
from ZODB.Connection import TransactionMetaData

path, blob_dir = sys.argv[1], sys.argv[2]
st = ZODB.FileStorage.FileStorage(path, blob_dir=blob_dir)
db = ZODB.DB(st)
conn = db.open()
root = conn.root()
ops = ["commit"]  # the root, created by ZODB.DB

def commit(user=None, note=None, ext=None):
    t = transaction.get()
    if user:
        t.setUser(user)
    if note:
        t.note(note)
    for k, v in (ext or {}).items():
        t.setExtendedInfo(k, v)
    transaction.commit()
    ops.append("commit")
    return st.lastTransaction()

def undo(tid, note):
    idx = tids.index(tid)
    db.undo(__import__('base64').encodebytes(tid).rstrip())
    transaction.get().note(note)
    transaction.commit()
    ops.append(["undo", idx])

tids = [st.lastTransaction()]
root['docs'] = docs = PersistentMapping()
for i in range(120):
    docs['d%03d' % i] = PersistentMapping({'title': 'Document %d' % i, 'body': 'x' * (i * 7)})
tids.append(commit('bob', 'create documents'))
root['tree'] = tree = OOBTree()
for i in range(400):
    tree['k%04d' % i] = 'value %d' % i
tids.append(commit('bob', 'fill a BTree'))
for r in range(6):
    for i in range(20 * r, 20 * r + 20):
        docs['d%03d' % i]['rev'] = r
        docs['d%03d' % i]['body'] += 'rev %d' % r
    tids.append(commit('jürgen', 'révision %d ☕' % r, {'request': '/ü/%d' % r, 'n': r}))
for i in range(0, 400, 7):
    tree['k%04d' % i] = 'changed %d' % i
tids.append(commit('bob', 'change the BTree'))
root['b1'] = Blob(b'first blob\n' * 100)
root['b2'] = Blob(b'\x00\xff' * 5000)
tids.append(commit('bob', 'two blobs'))
with root['b1'].open('w') as f:
    f.write(b'second revision of b1\n')
tids.append(commit('bob', 'blob revision'))
# undo revision 2 (its objects were not touched since): backpointers
undo(tids[5], 'undo révision 2')
tids.append(st.lastTransaction())
# create objects, then undo their creation: George Bailey records
root['tmp'] = PersistentMapping({'a': PersistentMapping()})
tids.append(commit('bob', 'temporary'))
undo(tids[-1], 'undo temporary')
tids.append(st.lastTransaction())
# unlink an object, then delete it (deleteObject, external GC)
victim = docs['d119']
del docs['d119']
tids.append(commit('bob', 'unlink d119'))
t = TransactionMetaData('gc', 'delete d119')
st.tpc_begin(t)
st.deleteObject(victim._p_oid, victim._p_serial, t)
st.tpc_vote(t)
st.tpc_finish(t)
ops.append(["delete", victim._p_oid.hex()])
tids.append(st.lastTransaction())
# an empty transaction, with non-ASCII metadata
t = TransactionMetaData('ünïcode', 'empty ☃')
st.tpc_begin(t)
st.tpc_vote(t)
st.tpc_finish(t)
ops.append("empty")
tids.append(st.lastTransaction())
docs['d000']['final'] = True
tids.append(commit('bob', 'last'))
db.close()
json.dump(ops, sys.stdout)
