"""Client-side scenarios for tests/zeo_ops.rs (operational gaps: fractional transaction
timeouts, bare-port dual-stack listening, TLS with password-protected keys), each run against
a `zodbctl serve` the Rust test started. usage: zeo_ops.py SCENARIO ARGS...

Every scenario prints "OK ..." on success and raises on failure.
"""
import sys
import time

import transaction
import ZEO
import ZEO.ClientStorage
from persistent.mapping import PersistentMapping


def addr(s):
    if "/" in s:
        return s
    host, port = s.rsplit(":", 1)
    return (host.strip("[]"), int(port))


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
    """A client votes and sits on the commit lock: the server drops it after the timeout,
    its transaction is not committed and another client's commit, which waited for the lock,
    goes through. Prints how long that commit waited (the hog is reconnected automatically,
    so its disconnection itself is too brief to watch)."""
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
    held = time.time() - start
    try:
        hog.tpc_finish(t)
    except Exception:
        pass
    else:
        raise AssertionError("the timed-out transaction was committed")
    hog.close()
    other.close()
    print("OK txn_timeout held=%.3f" % held)


def tls_commit(address, ca, cert, key):
    """A client with a certificate the server trusts commits over TLS."""
    import ssl
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False
    db = ZEO.DB(addr(address), ssl=ctx, wait_timeout=20)
    tm = transaction.TransactionManager()
    c = db.open(tm)
    c.root()["tls"] = PersistentMapping(ok=True)
    tm.commit()
    db.close()
    print("OK tls_commit")


def tls(address, ca, cert, key):
    """tls_commit, and without a client certificate the client cannot connect."""
    import ssl
    tls_commit(address, ca, cert, key)
    ctx2 = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx2.check_hostname = False
    try:
        cs = ZEO.ClientStorage.ClientStorage(addr(address), ssl=ctx2, wait_timeout=3)
    except Exception:
        pass
    else:
        cs.close()
        raise AssertionError("connected without a client certificate")
    print("OK tls")


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
    import os
    import ZEO.tests
    print(os.path.dirname(ZEO.tests.__file__))


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    globals()[name](*args)
