"""ZODB's generic storage tests through ZEO.ClientStorage against `zodbctl serve`.

The test classes are ZEO's own (ZEO/tests/testZEO.py), which combine ZODB's storage test
mixins for FileStorage-backed servers; the only change is how a server is started:
`forker.start_zeo_server` is replaced by a launcher that runs `zodbctl serve` on 127.0.0.1
with a free port (or, with --server runzeo, the reference runzeo from the same venv, to tell
our failures from the suite's own).

usage: zeo_generic.py ZODBCTL {pickle|msgpack} SUITE[,SUITE...] [-k PATTERN] [--server runzeo]

SUITE: file, blob, sharedblob, recovery, memory, conflict, blobreuse, all
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time
import unittest

import ZEO.ClientStorage
import ZEO._forker
import ZEO.tests.forker
import ZODB.tests.testblob
from ZODB.tests import HistoryStorage
from ZODB.tests import PersistentStorage

from ZEO.tests import testZEO

ARGS = None


def _parse_storage_conf(text):
    """name, kind, path, blob_dir of the ZConfig storage sections the suites use."""
    blob_dir = None
    m = re.search(r"blob-dir\s+(\S+)", text)
    if m:
        blob_dir = m.group(1)
    m = re.search(r"^\s*path\s+(\S+)", text, re.M)
    path = m.group(1) if m else None
    kind = "memory" if "<mappingstorage" in text else "file"
    return kind, path, blob_dir


def _zeo_options(zeo_conf):
    opts = {}
    if zeo_conf is None:
        return opts
    if isinstance(zeo_conf, dict):
        return dict(zeo_conf)
    if isinstance(zeo_conf, ZEO._forker.ZEOConfig):
        return dict(zeo_conf.__dict__)
    text = str(zeo_conf)
    for key in ("read-only", "transaction-timeout", "invalidation-queue-size"):
        m = re.search(r"^\s*%s\s+(\S+)" % key, text, re.M)
        if m:
            opts[key.replace("-", "_")] = m.group(1)
    return opts


_counter = [0]
_servers = []


def _kill_leftovers():
    for proc in _servers:
        if proc.poll() is None:
            proc.kill()


def start_zodbctl(storage_conf=None, zeo_conf=None, port=None, keep=False,
                  path='Data.fs', protocol=None, blob_dir=None, **_ignored):
    if not storage_conf:
        storage_conf = '<filestorage>\npath %s\n</filestorage>' % path
    kind, fs_path, conf_blob_dir = _parse_storage_conf(storage_conf)
    blob_dir = blob_dir or conf_blob_dir
    opts = _zeo_options(zeo_conf)
    _counter[0] += 1
    logdir = os.environ.get("ZEO_GENERIC_LOGDIR", os.getcwd())
    log = os.path.join(os.path.abspath(logdir), "server-%d-%d.log" % (os.getpid(), _counter[0]))
    if ARGS.server == "runzeo":
        return _start_runzeo(storage_conf, opts, blob_dir, log)
    text = zeo_conf if isinstance(zeo_conf, str) else ""
    if "<ssl>" in text:
        # TLS is configured in a zeo.conf (<ssl> has no command-line flags), as runzeo -C.
        conf = os.path.abspath("zodbctl-%d.conf" % _counter[0])
        with open(conf, "w") as f:
            f.write(re.sub(r"address\s+\S+", "address 127.0.0.1:0", text))
            f.write("\n" + storage_conf + "\n")
            f.write("<eventlog>\n<logfile>\npath STDERR\n</logfile>\n</eventlog>\n")
        cmd = [ARGS.zodbctl, "serve", "-C", conf] + threads_args()
        if ARGS.encoding == "msgpack":
            cmd.append("--msgpack")
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        return _wait_listening(proc, log)
    cmd = [ARGS.zodbctl, "serve", "-a", "127.0.0.1:0"] + threads_args()
    if kind == "memory":
        cmd += ["--memory", "1"]
    else:
        cmd += ["-f", os.path.abspath(fs_path)]
        if blob_dir:
            cmd += ["--blob-dir", os.path.abspath(blob_dir)]
    if ARGS.encoding == "msgpack":
        cmd.append("--msgpack")
    ro = opts.get("read_only")
    if ro and str(ro).lower() in ("true", "1"):
        cmd.append("--read-only")
    if opts.get("transaction_timeout"):
        cmd += ["-t", str(int(float(opts["transaction_timeout"])))]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    return _wait_listening(proc, log)


def _start_runzeo(storage_conf, opts, blob_dir, log):
    if blob_dir and "blob-dir" not in storage_conf:
        storage_conf = "<blobstorage>\nblob-dir %s\n%s\n</blobstorage>" % (
            blob_dir, storage_conf)
    # runzeo logs the configured port, not the bound one: pick a free port here.
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    lines = ["<zeo>", "address 127.0.0.1:%d" % port]
    for k, v in opts.items():
        if k in ("read_only", "transaction_timeout", "invalidation_queue_size",
                 "client_conflict_resolution") and v not in (None, False):
            lines.append("%s %s" % (k.replace("_", "-"),
                                    "true" if v is True else v))
    if "client_conflict_resolution" not in opts:
        lines.append("client-conflict-resolution true")
    if ARGS.encoding == "msgpack":
        lines.append("msgpack true")
    lines.append("</zeo>")
    conf = os.path.abspath("runzeo-%d.conf" % _counter[0])
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n" + storage_conf)
    runzeo = os.path.join(os.path.dirname(sys.executable), "runzeo")
    with open(log, "wb") as out:
        proc = subprocess.Popen([runzeo, "-C", conf], stdout=out,
                                stderr=subprocess.STDOUT)
    return _wait_listening(proc, log, port)


def _wait_listening(proc, log, port=None):
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(log, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        m = re.search(r"listening on \('([^']*)', (\d+)\)", text)
        if m:
            break
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s:\n%s" % (proc.returncode, text))
        time.sleep(0.02)
    else:
        proc.kill()
        raise RuntimeError("server did not start:\n" + text)
    addr = (m.group(1), port or int(m.group(2)))
    _servers.append(proc)

    def stop(stop_timeout=10):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("server did not stop on SIGTERM")
        if ARGS.server == "zodbctl" and proc.returncode != 0:
            with open(log, "rb") as f:
                sys.stderr.write(f.read().decode("utf-8", "replace"))
            raise AssertionError("server exited with status %s" % proc.returncode)
        with open(log, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        if "panicked" in text:
            sys.stderr.write(text)
            raise AssertionError("the server panicked")

    return addr, stop


ZEO._forker.start_zeo_server = start_zodbctl
ZEO.tests.forker.start_zeo_server = start_zodbctl


SERVER_SIDE_RESOLUTION = (
    "undo that needs conflict resolution: only a server running the application's "
    "Python classes can resolve it (zodbctl resolves conflicts client-side, like runzeo "
    "with client-conflict-resolution, which fails these tests too)")


def _skip(reason):
    def test(self):
        raise unittest.SkipTest(reason)
    return test


class UndoSkips:
    testUndoConflictResolution = _skip(SERVER_SIDE_RESOLUTION)
    testUndoMultipleConflictResolution = _skip(SERVER_SIDE_RESOLUTION)
    testUndoMultipleConflictResolutionReversed = _skip(SERVER_SIDE_RESOLUTION)
    checkUndoConflictResolution = testUndoConflictResolution
    checkUndoMultipleConflictResolution = testUndoMultipleConflictResolution
    checkUndoMultipleConflictResolutionReversed = \
        testUndoMultipleConflictResolutionReversed


class FileStorageTests(UndoSkips, testZEO.FileStorageTests,
                       HistoryStorage.HistoryStorage,
                       PersistentStorage.PersistentStorage):
    """ZEO's FileStorageTests, plus the History and Persistent mixins."""


class BlobAdaptedFileStorageTests(UndoSkips, testZEO.BlobAdaptedFileStorageTests):
    pass


class BlobWritableCacheTests(UndoSkips, testZEO.BlobWritableCacheTests):
    pass


class FileStorageRecoveryTests(testZEO.FileStorageRecoveryTests):
    pass


class FileStorageSSLTests(UndoSkips, testZEO.FileStorageSSLTests):
    """ZEO's TLS suite: its own self-signed certificates, mutual authentication."""


MEMORY_PACK = (
    "the memory storage is not historical: superseded revisions expire on their own "
    "(history-seconds) and its pack is a no-op, where these tests expect MappingStorage's "
    "pack to drop revisions and unreachable objects at once")


class MemoryStorageTests(testZEO.MappingStorageTests):
    """ZEO's MappingStorage suite against the non-historical memory storage."""

    testPackAllRevisions = _skip(MEMORY_PACK)
    testPackJustOldRevisions = _skip(MEMORY_PACK)
    testPackOnlyOneObject = _skip(MEMORY_PACK)
    testPackWithMultiDatabaseReferences = _skip(MEMORY_PACK)

    def checkInterfaceFromRemoteStorage(self):
        pass


class ClientConflictResolutionTests(testZEO.ClientConflictResolutionTests):
    pass


SUITES = {
    "file": [FileStorageTests],
    "blob": [BlobAdaptedFileStorageTests],
    "sharedblob": [BlobWritableCacheTests],
    "recovery": [FileStorageRecoveryTests],
    "ssl": [FileStorageSSLTests],
    "memory": [MemoryStorageTests],
    "conflict": [ClientConflictResolutionTests],
}


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def _excluded(test):
    """Doctests of the reusable blob suite that cannot pass here, with the reason."""
    name = test.id()
    if "blob_transaction" in name and os.geteuid() == 0:
        # It checks that opening a committed blob for writing raises PermissionError;
        # root may write read-only files (the same test fails against runzeo as root).
        return "running as root: read-only blob files are writable by root"
    return None


def _skipped(test, reason):
    def skip():
        raise unittest.SkipTest(reason)
    skip.__name__ = test.id()
    return unittest.FunctionTestCase(skip, description=test.id())


def build(names, pattern):
    suite = unittest.TestSuite()
    if "all" in names:
        names = list(SUITES) + ["blobreuse"]
    for name in names:
        if name == "blobreuse":
            reusable = unittest.TestSuite([
                ZODB.tests.testblob.storage_reusable_suite(
                    'ClientStorageNonSharedBlobs',
                    testZEO.ServerManagingClientStorage),
                ZODB.tests.testblob.storage_reusable_suite(
                    'ClientStorageSharedBlobs', testZEO.create_storage_shared),
            ])
            for test in _flatten(reusable):
                reason = _excluded(test)
                suite.addTest(_skipped(test, reason) if reason else test)
            continue
        for klass in SUITES[name]:
            for prefix in ("check", "test"):
                loader = unittest.TestLoader()
                loader.testMethodPrefix = prefix
                if pattern:
                    loader.testNamePatterns = ["*%s*" % p for p in pattern]
                suite.addTest(loader.loadTestsFromTestCase(klass))
    return suite


def _on_term(signum, frame):
    _kill_leftovers()
    os._exit(1)


def threads_args():
    return ["--threads", str(ARGS.threads)] if ARGS.threads else []


def main():
    global ARGS
    signal.signal(signal.SIGTERM, _on_term)
    p = argparse.ArgumentParser()
    p.add_argument("zodbctl")
    p.add_argument("encoding", choices=["pickle", "msgpack"])
    p.add_argument("suites")
    p.add_argument("-k", action="append", default=[])
    p.add_argument("--server", choices=["zodbctl", "runzeo"], default="zodbctl")
    p.add_argument("--threads", type=int, help="zodbctl serve --threads N")
    p.add_argument("-v", action="store_true")
    ARGS = p.parse_args()
    suite = build(ARGS.suites.split(","), ARGS.k)
    runner = unittest.TextTestRunner(verbosity=2 if ARGS.v else 1, stream=sys.stdout)
    result = runner.run(suite)
    print("RESULT ran=%d failures=%d errors=%d skipped=%d" % (
        result.testsRun, len(result.failures), len(result.errors),
        len(result.skipped)))
    _kill_leftovers()
    sys.stdout.flush()
    sys.stderr.flush()
    # Client I/O threads of failed tests may linger; do not wait for them.
    os._exit(0 if result.wasSuccessful() and result.testsRun > 0 else 1)


if __name__ == "__main__":
    main()
