//! `persistent.TimeStamp`: how a tid encodes UTC time (spec §3).
//!
//! ```text
//! bytes 0..3  a = ((((Y - 1900) * 12 + (M - 1)) * 31 + (D - 1)) * 24 + h) * 60 + m
//! bytes 4..7  b = (u32) (S / (60.0 / 65536.0 / 65536.0))
//! ```
//!
//! Every month counts 31 days in `a`, so `a` orders like time without being minutes since
//! 1900. `b` is computed with exactly the C implementation's double arithmetic so the same
//! time gives the same tid as Python (pack times and tests depend on it).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::types::Tid;

/// 60 / 2^32: seconds per unit of the low word (C `SCONV`).
const SCONV: f64 = 60.0 / 65536.0 / 65536.0;

/// A decoded tid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeStamp(Tid);

impl TimeStamp {
    pub fn from_tid(tid: Tid) -> TimeStamp {
        TimeStamp(tid)
    }

    pub fn tid(self) -> Tid {
        self.0
    }

    /// `TimeStamp(Y, M, D, h, m, S)` with C semantics: seconds ≥ 60 wrap like the C cast.
    pub fn from_date(year: i32, month: u32, day: u32, hour: u32, minute: u32, sec: f64) -> Self {
        let a = ((((i64::from(year) - 1900) * 12 + i64::from(month) - 1) * 31 + i64::from(day)
            - 1)
            * 24
            + i64::from(hour))
            * 60
            + i64::from(minute);
        // The C code casts the double to unsigned int; values ≥ 2^32 wrap modulo 2^32.
        let scaled = sec / SCONV;
        let b = if scaled >= 0.0 {
            (scaled as u64 & 0xffff_ffff) as u32
        } else {
            0
        };
        TimeStamp(Tid(((a as u64 & 0xffff_ffff) << 32) | u64::from(b)))
    }

    /// The timestamp for a Unix time (seconds since the epoch, UTC), as ZODB's `newTid`
    /// builds it: the calendar fields from `gmtime(t)` and the seconds as `t % 60`.
    pub fn from_unix(t: f64) -> TimeStamp {
        let whole = t.floor() as i64;
        let days = whole.div_euclid(86400);
        let secs_of_day = whole.rem_euclid(86400);
        let (y, m, d) = civil_from_days(days);
        let hour = (secs_of_day / 3600) as u32;
        let minute = ((secs_of_day % 3600) / 60) as u32;
        TimeStamp::from_date(y, m, d, hour, minute, t.rem_euclid(60.0))
    }

    /// The current time.
    pub fn now() -> TimeStamp {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        TimeStamp::from_unix(t)
    }

    fn a(self) -> u32 {
        (self.0.0 >> 32) as u32
    }

    fn b(self) -> u32 {
        self.0.0 as u32
    }

    pub fn year(self) -> i32 {
        (self.a() / 535_680) as i32 + 1900
    }
    pub fn month(self) -> u32 {
        (self.a() / 44_640) % 12 + 1
    }
    pub fn day(self) -> u32 {
        (self.a() / 1440) % 31 + 1
    }
    pub fn hour(self) -> u32 {
        (self.a() / 60) % 24
    }
    pub fn minute(self) -> u32 {
        self.a() % 60
    }
    pub fn second(self) -> f64 {
        SCONV * f64::from(self.b())
    }

    /// Seconds since the Unix epoch, bit for bit what `persistent`'s C `TimeStamp.timeTime()`
    /// returns: whole seconds since 1900 as a double, plus the seconds of the low word, minus
    /// the epoch's offset, in that order. The order matters: adding the fraction to a number
    /// near 4e9 before subtracting rounds differently from adding it to seconds since 1970,
    /// and clients compare `history()`/`undoLog()` times with runzeo's.
    pub fn time_time(self) -> f64 {
        let minute_of_day = (self.a() % 1440) as i32;
        c_abst(
            self.year(),
            self.month() - 1,
            self.day() - 1,
            minute_of_day,
            0,
        ) + self.second()
            - c_abst(1970, 0, 0, 0, 0)
    }

    /// `x.laterThan(y)`: `x` if it is after `y`, else the smallest timestamp after `y`
    /// (carry inside the low word; when it is all ones, the next minute, calendar-aware).
    pub fn later_than(self, other: TimeStamp) -> TimeStamp {
        if self.0 > other.0 {
            return self;
        }
        if other.b() != u32::MAX {
            return TimeStamp(Tid(other.0.0 + 1));
        }
        let (mut y, mut mo, mut d) = (other.year(), other.month(), other.day());
        let mut mi = other.hour() * 60 + other.minute();
        if mi >= 1439 {
            mi = 0;
            if d >= month_len(y, mo) {
                d = 1;
                if mo >= 12 {
                    mo = 1;
                    y += 1;
                } else {
                    mo += 1;
                }
            } else {
                d += 1;
            }
        } else {
            mi += 1;
        }
        TimeStamp::from_date(y, mo, d, mi / 60, mi % 60, 0.0)
    }
}

/// `YYYY-MM-DD hh:mm:SS.ffffff`, as Python's `str(TimeStamp)`.
impl fmt::Display for TimeStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:09.6}",
            self.year(),
            self.month(),
            self.day(),
            self.hour(),
            self.minute(),
            self.second()
        )
    }
}

/// `tid`'s time as `TimeStamp(tid).timeTime()` gives it (see [`TimeStamp::time_time`]).
pub fn tid_time(tid: &[u8; 8]) -> f64 {
    TimeStamp::from_tid(Tid(u64::from_be_bytes(*tid))).time_time()
}

/// Days before each month, without and with Feb 29 (`joff` in persistent's `_timestamp.c`).
const JOFF: [[i32; 12]; 2] = [
    [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334],
    [0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335],
];

/// `_yad`: days from 1900-01-01 to the start of year `y`, in the C code's own arithmetic
/// (integer divisions truncating towards zero, then doubles).
fn c_yad(y: i32) -> f64 {
    let mut y = y - 1900;
    let d = f64::from((y - 1) * 365);
    let s = if y > 0 {
        y -= 1;
        1.0
    } else {
        y = -y;
        -1.0
    };
    d + s * f64::from(y / 4 - y / 100 + (y + 300) / 400)
}

/// `_abst`: seconds since 1900 of month `mo` (0-based), day `d` (0-based), minute of the day
/// `m` and second `s`, evaluated in the same order as the C expression.
fn c_abst(y: i32, mo: u32, d: u32, m: i32, s: i32) -> f64 {
    let joff = JOFF[usize::from(is_leap(y))][(mo % 12) as usize];
    (c_yad(y) + f64::from(joff) + f64::from(d)) * 86400.0 + f64::from(m * 60) + f64::from(s)
}

fn is_leap(y: i32) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn month_len(y: i32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
#[cfg(test)]
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(hex: u64) -> TimeStamp {
        TimeStamp::from_tid(Tid(hex))
    }

    #[test]
    fn verified_examples() {
        assert_eq!(TimeStamp::from_date(1900, 1, 1, 0, 0, 0.0).tid(), Tid(0));
        assert_eq!(
            TimeStamp::from_date(2024, 1, 1, 0, 0, 12.0).tid(),
            Tid(0x03f5_8e00_3333_3333)
        );
        assert_eq!(
            TimeStamp::from_date(2024, 2, 29, 23, 59, 59.999999).tid(),
            Tid(0x03f6_df7f_ffff_ffb8)
        );
        assert_eq!(
            TimeStamp::from_date(2024, 12, 31, 23, 59, 0.5).tid(),
            Tid(0x03fd_ba7f_0222_2222)
        );
        assert_eq!(
            ts(0x03f5_8e00_3333_3333).to_string(),
            "2024-01-01 00:00:12.000000"
        );
        assert_eq!(
            ts(0x03f5_8e00_5333_3333).to_string(),
            "2024-01-01 00:00:19.500000"
        );
        // S = 60 wraps to 0 in the C cast.
        assert_eq!(
            TimeStamp::from_date(2024, 1, 1, 0, 0, 60.0).tid().0 & 0xffff_ffff,
            0
        );
    }

    #[test]
    fn later_than_carries() {
        let a = ts(0x040d_27f2_0000_0005);
        assert_eq!(ts(1).later_than(a).tid(), Tid(0x040d_27f2_0000_0006));
        assert_eq!(
            ts(0x040d_27f2_0000_0009).later_than(a),
            ts(0x040d_27f2_0000_0009)
        );
        assert_eq!(
            ts(0).later_than(ts(0x040d_27f2_ffff_ffff)).tid(),
            Tid(0x040d_27f3_0000_0000)
        );
        // 2024-02-29 23:59 with ffffffff -> 2024-03-01 00:00:00
        let end_feb = TimeStamp::from_date(2024, 2, 29, 23, 59, 0.0).tid().0 | 0xffff_ffff;
        let next = ts(0).later_than(ts(end_feb));
        assert_eq!(next, TimeStamp::from_date(2024, 3, 1, 0, 0, 0.0));
        let end_year = TimeStamp::from_date(2023, 12, 31, 23, 59, 0.0).tid().0 | 0xffff_ffff;
        assert_eq!(
            ts(0).later_than(ts(end_year)),
            TimeStamp::from_date(2024, 1, 1, 0, 0, 0.0)
        );
    }

    #[test]
    fn unix_round_trip() {
        // 2024-01-01 00:00:12 UTC
        let t = 1_704_067_212.0;
        let stamp = TimeStamp::from_unix(t);
        assert_eq!(stamp.tid(), Tid(0x03f5_8e00_3333_3333));
        assert!((stamp.time_time() - t).abs() < 1e-6);
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn now_is_recent() {
        assert!(TimeStamp::now().year() >= 2024);
    }
}
