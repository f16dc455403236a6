//! `time` values of `history()`, `undoLog()` and `undoInfo()` must be bit for bit what
//! Python's `persistent.TimeStamp(tid).timeTime()` gives (issue 14, item 8): first for many
//! tids computed directly, then through `zodbctl serve` with a real ZEO client.

mod support;

use zodbctl::storage::timestamp::tid_time;

/// A deterministic spread of tids: calendar edges (leap days, month ends, year ends, the
/// 31-day month encoding's impossible dates), the low word's extremes, and pseudo-random
/// tids from 1900 to 2100.
fn sample_tids() -> Vec<u64> {
    let mut tids = vec![
        0,
        1,
        0xffff_ffff,
        0x03f5_8e00_3333_3333,
        0x03f6_df7f_ffff_ffb8,
        0x03fd_ba7f_0222_2222,
        0x040d_27f2_e326_9966,
        0x040d_27f2_ffff_ffff,
    ];
    // a = minutes in the 31-day-month calendar: 200 years * 12 * 31 * 1440.
    let max_a: u64 = 200 * 12 * 31 * 1440;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..3000 {
        // xorshift64*: enough spread, no dependency.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let a = (r >> 20) % max_a;
        let b = r & 0xffff_ffff;
        tids.push((a << 32) | b);
    }
    // Every month end and leap day of a few years, last minute, largest low word.
    for year in [1900u64, 1970, 2000, 2024, 2026, 2099] {
        for month in 0..12u64 {
            for day in [27u64, 28, 29, 30] {
                let a = (((year - 1900) * 12 + month) * 31 + day) * 1440 + 1439;
                tids.push((a << 32) | 0xffff_ffff);
                tids.push((a << 32) | 0x8000_0000);
            }
        }
    }
    tids
}

#[test]
fn tid_time_matches_persistent_timestamp_bit_for_bit() {
    let tids = sample_tids();
    let input: String = tids.iter().map(|t| format!("{t:016x}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tids.txt");
    std::fs::write(&file, input).unwrap();
    let script = r#"
import struct, sys
from persistent.timestamp import TimeStamp
from persistent import _timestamp  # the C implementation must be the one in use
assert TimeStamp is _timestamp.TimeStamp, TimeStamp
for line in open(sys.argv[1]):
    t = TimeStamp(bytes.fromhex(line.strip())).timeTime()
    print(struct.pack('>d', t).hex())
"#;
    let out = support::python_stdout(script, &[support::path_str(&file)]);
    let python: Vec<&str> = out.lines().collect();
    assert_eq!(python.len(), tids.len());
    let mut wrong = Vec::new();
    for (tid, py) in tids.iter().zip(&python) {
        let ours = tid_time(&tid.to_be_bytes());
        let ours_hex = format!("{:016x}", ours.to_bits());
        if ours_hex != *py {
            let theirs = f64::from_bits(u64::from_str_radix(py, 16).unwrap());
            wrong.push(format!("{tid:016x}: ours {ours:?}, Python {theirs:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} differ:\n{}",
        wrong.len(),
        tids.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );
}

#[test]
fn history_and_undo_times_through_serve_equal_timestamp_time() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("Data.fs");
    let mut server = support::Serve::in_dir(dir.path())
        .file(&fs)
        .memory("sessions")
        .start();
    let script = r#"
import base64, sys
import transaction
import ZEO, ZODB
from persistent.mapping import PersistentMapping
from persistent.timestamp import TimeStamp
addr = sys.argv[1]
host, port = addr.rsplit(':', 1)
bad = []
for storage_name in ('1', 'sessions'):
    db = ZEO.DB((host, int(port)), storage=storage_name, wait_timeout=30)
    conn = db.open()
    root = conn.root()
    for i in range(40):
        root['x'] = PersistentMapping({'i': i})
        transaction.get().note('txn %d' % i)
        transaction.commit()
    oid = root['x']._p_oid
    for h in db.history(oid, size=40) + db.history(b'\0' * 8, size=40):
        if h['time'] != TimeStamp(h['tid']).timeTime():
            bad.append(('history', storage_name, h['tid'].hex(), h['time']))
    if storage_name == '1':
        entries = db.storage.undoLog(0, 40) + db.undoInfo(0, 40)
        assert len(entries) >= 40, len(entries)
        for e in entries:
            tid = base64.decodebytes(e['id'] + b'\n')
            if e['time'] != TimeStamp(tid).timeTime():
                bad.append(('undo', tid.hex(), e['time']))
    conn.close()
    db.close()
print('bad', bad)
"#;
    let out = support::python_stdout(script, &[&server.addr()]);
    assert!(out.contains("bad []"), "{out}");
    assert_eq!(server.terminate(), 0, "{}", server.log());
}
