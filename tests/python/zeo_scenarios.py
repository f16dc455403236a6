"""Client-side scenarios for tests/zeo_interop.rs and tests/zeo_ops.rs, each run against a
`zodbctl serve` the Rust test started. usage: zeo_scenarios.py SCENARIO ARGS...

Every scenario prints "OK ..." on success and raises on failure.
"""
import os
import sys
import threading
import time

import transaction
import ZEO
import ZEO.ClientStorage
import ZEO.nagios
import ZODB
import ZODB.FileStorage
import ZODB.POSException
from persistent.mapping import PersistentMapping
from ZODB.utils import p64, u64


def addr(s):
    """HOST:PORT, [V6]:PORT or a Unix socket path, as ZEO takes it."""
    if "/" in s:
        return s
    host, port = s.rsplit(":", 1)
    return (host.strip("[]"), int(port))


def eventually(tm, read, want, what, seconds=10):
    """Begin transactions on `tm` until `read()` returns `want`.

    Invalidations reach another client asynchronously: runzeo and zodbctl both write them to
    that client's socket before they answer the committer, but the other client's I/O thread
    may not have read them yet when its next transaction begins (ZEO's `sync()` is a no-op
    unless the client asks for `server_sync`). So a second client's view of a commit is
    checked with a bounded wait, never with a single read.
    """
    deadline = time.time() + seconds
    while True:
        tm.begin()
        try:
            got = read()
        except (KeyError, ZODB.POSException.ReadConflictError) as e:
            # Not there yet, or (memory storage) only in a revision already dropped.
            got = e
        if got == want:
            return
        assert time.time() < deadline, "%s: still %r after %ss" % (what, got, seconds)
        time.sleep(0.01)


def two_dbs(address):
    """Two DBs see each other's commits and get ConflictError on concurrent writes."""
    a = ZEO.DB(addr(address), wait_timeout=20)
    b = ZEO.DB(addr(address), wait_timeout=20)
    tma, tmb = transaction.TransactionManager(), transaction.TransactionManager()
    ca, cb = a.open(tma), b.open(tmb)
    ca.root()["counter"] = PersistentMapping(n=0)
    tma.commit()
    # B sees A's commits.
    eventually(tmb, lambda: cb.root()["counter"]["n"], 0, "B seeing A's first commit")
    for i in range(1, 6):
        ca.root()["counter"]["n"] = i
        tma.commit()
        eventually(tmb, lambda: cb.root()["counter"]["n"], i, "B seeing A's commit %d" % i)
    # Concurrent writes of the same object: the second committer conflicts.
    tma.begin()
    tmb.begin()
    ca.root()["counter"]["n"] = 100
    cb.root()["counter"]["n"] = 200
    tma.commit()
    try:
        tmb.commit()
    except ZODB.POSException.ConflictError:
        tmb.abort()
    else:
        raise AssertionError("no ConflictError on a concurrent write")
    eventually(tmb, lambda: cb.root()["counter"]["n"], 100, "B seeing the winning write")
    a.close()
    b.close()
    print("OK two_dbs")


def cache_fill(address, cache_dir):
    """Phase 1 of the restart test: fill a persistent client cache."""
    db = ZEO.DB(addr(address), client="c1", var=cache_dir, cache_size=10 << 20,
                wait_timeout=20)
    tm = transaction.TransactionManager()
    c = db.open(tm)
    root = c.root()
    for i in range(50):
        root["o%d" % i] = PersistentMapping(v=i)
    tm.commit()
    for i in range(50):
        root["o%d" % i]["v"]
    tm.commit()
    last = db.storage.lastTransaction()
    db.close()
    print("OK cache_fill %s" % last.hex())


def other_commit(address):
    """Commit a change from another client (while the first one is away)."""
    db = ZEO.DB(addr(address), wait_timeout=20)
    tm = transaction.TransactionManager()
    c = db.open(tm)
    c.root()["o7"]["v"] = "changed"
    tm.commit()
    db.close()
    print("OK other_commit")


def cache_reuse(address, cache_dir):
    """Phase 2: after a server restart the persistent cache is kept (quick verification
    through getInvalidations) and the change made meanwhile is seen."""
    import logging

    class Catch(logging.Handler):
        messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    h = Catch()
    logging.getLogger("ZEO").addHandler(h)
    logging.getLogger("ZEO").setLevel(logging.INFO)
    db = ZEO.DB(addr(address), client="c1", var=cache_dir, cache_size=10 << 20,
                wait_timeout=20)
    cache = db.storage._cache
    assert len(cache) > 40, "persistent cache was dropped: %d entries" % len(cache)
    text = "\n".join(h.messages)
    assert "cache too old" not in text and "dropping stale cache" not in text.lower(), text
    tm = transaction.TransactionManager()
    c = db.open(tm)
    root = c.root()
    assert root["o7"]["v"] == "changed", root["o7"]["v"]
    assert root["o8"]["v"] == 8
    db.close()
    print("OK cache_reuse entries=%d" % len(cache))


def writer(address, name, seconds, ack_file):
    """Commit continuously, appending each acknowledged tid and key to ack_file."""
    open(ack_file, "a").close()
    db = ZEO.DB(addr(address), wait_timeout=20)
    tm = transaction.TransactionManager()
    c = db.open(tm)
    root = c.root()
    if name not in root:
        while True:
            try:
                tm.begin()
                if name not in root:
                    root[name] = PersistentMapping()
                tm.commit()
                break
            except ZODB.POSException.ConflictError:
                tm.abort()
    n = 0
    end = time.time() + float(seconds)
    with open(ack_file, "a") as ack:
        while time.time() < end:
            try:
                tm.begin()
                bucket = root[name]
                bucket["k%d" % n] = PersistentMapping(payload="x" * (n % 500), n=n)
                tm.commit()
            except ZODB.POSException.ConflictError:
                tm.abort()
                continue
            except Exception:
                # The server was killed: everything acknowledged so far is in ack_file.
                break
            ack.write("%s %d\n" % (name, n))
            ack.flush()
            os.fsync(ack.fileno())
            n += 1
    try:
        db.close()
    except Exception:
        pass
    print("OK writer %s %d" % (name, n))


def check_acks(path, *ack_files):
    """Every acknowledged commit is in the Data.fs (opened by Python FileStorage)."""
    fs = ZODB.FileStorage.FileStorage(path, read_only=True)
    db = ZODB.DB(fs)
    c = db.open()
    root = c.root()
    total = 0
    for ack_file in ack_files:
        with open(ack_file) as f:
            for line in f:
                name, n = line.split()
                assert root[name]["k%s" % n]["n"] == int(n), (name, n)
                total += 1
    db.close()
    print("OK check_acks %d" % total)


def records(target, out):
    """Canonical dump: every object's every revision via the iterator, plus the current
    revision of every object via loads."""
    if target.endswith(".fs"):
        storage = ZODB.FileStorage.FileStorage(target, read_only=True)
    else:
        storage = ZEO.ClientStorage.ClientStorage(addr(target), wait_timeout=20,
                                                  read_only=True)
    lines = []
    oids = set()
    for t in storage.iterator():
        ext = sorted(t.extension.items())
        lines.append("T %s %r %r %r %r" % (t.tid.hex(), t.status, t.user,
                                           t.description, ext))
        for r in t:
            oids.add(r.oid)
            lines.append("R %s %s %s" % (r.oid.hex(), r.tid.hex(),
                                         r.data.hex() if r.data else None))
    for oid in sorted(oids):
        try:
            data, serial = storage.load(oid, "")
            lines.append("L %s %s %s" % (oid.hex(), serial.hex(), data.hex()))
        except ZODB.POSException.POSKeyError:
            lines.append("L %s deleted" % oid.hex())
    lines.append("last %s len %d" % (storage.lastTransaction().hex(), len(storage)))
    storage.close()
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("OK records %d" % len(lines))


def write_some(address):
    """Write a variety of transactions through ZEO: new objects, updates, a deletion
    through undo, extension metadata, a large object."""
    db = ZEO.DB(addr(address), wait_timeout=20)
    tm = transaction.TransactionManager()
    c = db.open(tm)
    root = c.root()
    for i in range(20):
        t = tm.begin()
        t.note("txn %d" % i)
        t.setUser("alice", "/site")
        t.setExtendedInfo("k", [i, "v%d" % i])
        root["m%d" % (i % 7)] = PersistentMapping(i=i, s="é" * i)
        tm.commit()
    root["big"] = PersistentMapping(data=b"x" * (2 << 20))
    tm.commit()
    undo_id = db.undoLog(0, 1)[0]["id"]
    db.undo(undo_id)
    tm.commit()
    db.close()
    print("OK write_some")


def read_only(address):
    """A read-only server: writable clients are refused, read-only and fallback clients
    connect and read."""
    cs = ZEO.ClientStorage.ClientStorage(addr(address), read_only=True, wait_timeout=20)
    db = ZODB.DB(cs)
    c = db.open()
    assert c.root()["m1"]["i"] >= 0
    db.close()
    cs = ZEO.ClientStorage.ClientStorage(addr(address), read_only_fallback=True,
                                         wait_timeout=20)
    assert cs.isReadOnly()
    try:
        cs.new_oid()
    except ZODB.POSException.ReadOnlyError:
        pass
    else:
        raise AssertionError("new_oid on a read-only connection")
    cs.close()
    print("OK read_only")


def sessions(address):
    """Two storages on one server: the file storage '1' and a memory storage 'sessions'."""
    main = ZEO.DB(addr(address), storage="1", wait_timeout=20)
    sess = ZEO.DB(addr(address), storage="sessions", wait_timeout=20)
    tm = transaction.TransactionManager()
    c = sess.open(tm)
    c.root()["session"] = PersistentMapping(user="bob")
    tm.commit()
    c.root()["session"]["user"] = "carol"
    tm.commit()
    info = sess.storage._info
    assert not info["supportsUndo"]
    assert sess.storage.lastTransaction() != main.storage.lastTransaction()
    sess2 = ZEO.DB(addr(address), storage="sessions", wait_timeout=20)
    c2 = sess2.open()
    assert c2.root()["session"]["user"] == "carol"
    main.close()
    sess.close()
    sess2.close()
    print("OK sessions")


def status(address):
    """server_status and the ruok handshake (zeo-nagios)."""
    cs = ZEO.ClientStorage.ClientStorage(addr(address), wait_timeout=20)
    st = cs.server_status()
    for key in ("connections", "loads", "stores", "commits", "aborts", "active_txns",
                "lock_time", "conflicts", "conflicts_resolved", "start", "waiting",
                "timeout-thread-is-alive", "last-transaction"):
        assert key in st, key
    cs.close()
    a = addr(address)
    rc = ZEO.nagios.check("%s:%s" % a if isinstance(a, tuple) else a, None, None, None)
    assert rc in (0, None), rc
    print("OK status")




def commit(address, label):
    """A DB commits under root[label] and a second DB reads it back."""
    db = ZEO.DB(addr(address), wait_timeout=20)
    tm = transaction.TransactionManager()
    c = db.open(tm)
    c.root()[label] = PersistentMapping(ok=True)
    tm.commit()
    db.close()
    db = ZEO.DB(addr(address), wait_timeout=20)
    c = db.open()
    assert c.root()[label]["ok"] is True
    db.close()
    print("OK commit " + label)


def txn_timeout(address):
    """A client that votes and then sits on the commit lock past transaction-timeout: the
    server aborts its transaction, releases the lock and closes its connection, so another
    client commits. Prints how long that commit waited (the hog is reconnected
    automatically, so its disconnection itself is too brief to watch)."""
    from ZODB.Connection import TransactionMetaData
    from ZODB.tests.MinPO import MinPO
    from ZODB.tests.StorageTestBase import zodb_pickle
    from ZODB.utils import z64
    hog = ZEO.ClientStorage.ClientStorage(addr(address), wait_timeout=20)
    t = TransactionMetaData()
    hog.tpc_begin(t)
    oid = hog.new_oid()
    hog.store(oid, z64, zodb_pickle(MinPO(1)), "", t)
    hog.tpc_vote(t)
    start = time.time()
    other = ZEO.DB(addr(address), wait_timeout=20)
    tm = transaction.TransactionManager()
    c = other.open(tm)
    c.root()["after"] = 1
    tm.commit()
    waited = time.time() - start
    assert waited < 15, waited
    try:
        hog.tpc_finish(t)
    except Exception:
        pass
    else:
        raise AssertionError("the timed-out transaction was committed")
    hog.close()
    other.close()
    print("OK txn_timeout held=%.3f" % waited)


def tls_context(ca, cert=None, key=None, tls_max=None):
    """A client context trusting `ca`, presenting `cert` if given, at most TLS `tls_max`
    ("1.2") if given."""
    import ssl
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False
    if tls_max:
        ctx.maximum_version = ssl.TLSVersion["TLSv" + tls_max.replace(".", "_")]
    return ctx


def tls_commit(address, ca, cert, key, tls_max=None):
    """A client with a certificate the server authenticates commits over TLS, and a second
    client reads it back."""
    ctx = tls_context(ca, cert, key, tls_max)
    if tls_max:
        # The version the server agreed to, with this certificate: in TLS 1.2 the client's
        # handshake ends only after the server has checked its certificate and signature.
        import socket
        with socket.create_connection(addr(address), 10) as raw:
            with ctx.wrap_socket(raw) as s:
                assert s.version() == "TLSv" + tls_max, s.version()
    db = ZEO.DB(addr(address), ssl=ctx, wait_timeout=20)
    tm = transaction.TransactionManager()
    c = db.open(tm)
    c.root()["tls"] = PersistentMapping(ok=True)
    tm.commit()
    db.close()
    db = ZEO.DB(addr(address), ssl=ctx, wait_timeout=20)
    assert db.open().root()["tls"]["ok"] is True
    db.close()
    print("OK tls_commit" + (" TLSv" + tls_max if tls_max else ""))


def tls_refused(address, ca, cert=None, key=None, tls_max=None):
    """The server refuses a client with `cert` (or with none)."""
    ctx = tls_context(ca, cert, key, tls_max)
    try:
        cs = ZEO.ClientStorage.ClientStorage(addr(address), ssl=ctx, wait_timeout=3)
    except Exception:
        pass
    else:
        cs.close()
        raise AssertionError("connected with client certificate %s" % cert)
    print("OK tls_refused")


def tls(address, ca, cert, key):
    """tls_commit, and without a client certificate the server refuses the connection."""
    tls_commit(address, ca, cert, key)
    tls_refused(address, ca)
    print("OK tls")


def tls_zeo_certs(address):
    """ZEO's own test certificates and client context (self-signed; the server's
    authenticate file is the client's certificate itself)."""
    from ZEO.tests.testssl import client_ssl
    db = ZEO.DB(addr(address), ssl=client_ssl(), wait_timeout=20)
    tm = transaction.TransactionManager()
    c = db.open(tm)
    c.root()["tls"] = 1
    tm.commit()
    db.close()
    print("OK tls_zeo_certs")


def memory_snapshot(address):
    """A memory storage keeps no revision beyond history-seconds: a reader whose snapshot
    needs a dropped revision gets ReadConflictError (Zope retries the request); after
    syncing it reads the current state."""
    a = ZEO.DB(addr(address), storage="sessions", wait_timeout=20)
    b = ZEO.DB(addr(address), storage="sessions", wait_timeout=20)
    tma, tmb = transaction.TransactionManager(), transaction.TransactionManager()
    ca, cb = a.open(tma), b.open(tmb)
    ca.root()["s"] = PersistentMapping(v=1)
    tma.commit()
    eventually(tmb, lambda: cb.root()["s"]["v"], 1, "B seeing A's commit")
    # A's next view is fixed here; neither its connection nor its ZEO cache holds "s".
    ca.cacheMinimize()
    a.storage._cache.clear()
    tma.begin()
    root = ca.root()
    tmb.begin()
    cb.root()["s"]["v"] = 2
    tmb.commit()
    time.sleep(0.2)
    try:
        root["s"]["v"]
    except ZODB.POSException.ReadConflictError:
        pass
    else:
        raise AssertionError("no ReadConflictError for a dropped revision")
    tma.abort()
    eventually(tma, lambda: ca.root()["s"]["v"], 2, "A seeing B's commit")
    a.close()
    b.close()
    print("OK memory_snapshot")


def tls_zconfig(address, ca, cert, key):
    """The same client configured the way a zope.conf / ZODB config does it: a ZConfig
    <clientstorage> with an <ssl> section (ZEO.zconfig builds the context)."""
    from ZODB.config import databaseFromString
    host, port = addr(address)
    db = databaseFromString(
        f"""
        %import ZEO
        <zodb>
          <clientstorage>
            server {host}:{port}
            wait-timeout 20
            <ssl>
              certificate {cert}
              key {key}
              authenticate {ca}
              check-hostname false
            </ssl>
          </clientstorage>
        </zodb>
        """
    )
    tm = transaction.TransactionManager()
    c = db.open(tm)
    c.root()["tls_zconfig"] = 1
    tm.commit()
    db.close()
    print("OK tls_zconfig")


def python_loads_keys(cert, password_file, *keys):
    """Python's own ssl module (runzeo's TLS) loads each key with the passphrase, as
    <ssl> password-function would hand it over."""
    import ssl
    with open(password_file) as f:
        password = f.readline().rstrip("\r\n")
    for key in keys:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key, password)
    print("OK python_loads_keys %d" % len(keys))


def zeo_tests_dir():
    """Where ZEO keeps its test certificates (serverpw_key.pem is encrypted, passphrase
    1234 from ZEO.tests.testssl.pwfunc)."""
    import ZEO.tests
    print(os.path.dirname(ZEO.tests.__file__))


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
