// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The CMOS real-time clock (MC146818) at ports 0x70/0x71, reading the host's clock.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{reply_byte, BusDevice};

/// The index port; the data port follows it.
pub const CMOS_PORT: u64 = 0x70;
/// The two ports.
pub const CMOS_PORT_LEN: u64 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// Status A: 32.768 kHz time base, 1024 Hz rate; the update-in-progress bit stays 0
/// because every read takes the time afresh.
const STATUS_A_DEFAULT: u8 = 0x26;
/// Status B bit 1: 24-hour mode.
const STATUS_B_24H: u8 = 0x02;
/// Status B bit 2: binary (not BCD) values.
const STATUS_B_BINARY: u8 = 0x04;
/// Status D bit 7: the CMOS battery is good.
const STATUS_D_VALID: u8 = 0x80;
/// Bit 7 of the index port disables NMIs on real hardware; it is not part of the index.
const INDEX_MASK: u8 = 0x7f;

/// A calendar date and time of day, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2026.
    pub year: u32,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=59.
    pub second: u32,
    /// 1 (Sunday) ..= 7 (Saturday), as the RTC counts.
    pub weekday: u32,
}

impl DateTime {
    /// The UTC date and time `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rest = secs % 86_400;
        let (year, month, day) = civil_from_days(days as i64);
        DateTime {
            year,
            month,
            day,
            hour: (rest / 3600) as u32,
            minute: (rest / 60 % 60) as u32,
            second: (rest % 60) as u32,
            // 1970-01-01 was a Thursday (RTC weekday 5).
            weekday: ((days + 4) % 7) as u32 + 1,
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // month and day are in range by construction; a year past u32 (a clock set
    // billions of years ahead) saturates.
    let small = |value: i64| u32::try_from(value).unwrap_or(u32::MAX);
    (small(year), small(month), small(day))
}

/// Where the RTC takes the time from.
pub type Clock = Box<dyn Fn() -> SystemTime + Send + Sync>;

struct State {
    index: u8,
    nvram: [u8; 128],
}

/// The CMOS RTC and its 128 bytes of NVRAM. Time registers read the clock (the host's
/// wall clock by default) at each access, in BCD or binary and 12- or 24-hour form as
/// the guest sets in status register B; writes to them are ignored.
pub struct CmosRtc {
    state: Mutex<State>,
    clock: Clock,
}

impl Default for CmosRtc {
    fn default() -> Self {
        Self::new()
    }
}

impl CmosRtc {
    /// An RTC on the host's wall clock.
    pub fn new() -> Self {
        Self::with_clock(Box::new(SystemTime::now))
    }

    /// An RTC on another clock, e.g. a fixed time in tests.
    pub fn with_clock(clock: Clock) -> Self {
        let mut nvram = [0u8; 128];
        nvram[REG_STATUS_A as usize] = STATUS_A_DEFAULT;
        nvram[REG_STATUS_B as usize] = STATUS_B_24H;
        nvram[REG_STATUS_D as usize] = STATUS_D_VALID;
        CmosRtc {
            state: Mutex::new(State { index: 0, nvram }),
            clock,
        }
    }

    fn now(&self) -> DateTime {
        let secs = (self.clock)()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        DateTime::from_unix(secs)
    }

    fn register(&self, state: &State, index: u8) -> u8 {
        let status_b = state.nvram[REG_STATUS_B as usize];
        let encode = |value: u32| {
            // Every field is below 100 (the year is given modulo 100): BCD holds two
            // digits.
            let value = (value % 100) as u8;
            if status_b & STATUS_B_BINARY != 0 {
                value
            } else {
                ((value / 10) << 4) | (value % 10)
            }
        };
        let time_register = matches!(
            index,
            REG_SECONDS
                | REG_MINUTES
                | REG_HOURS
                | REG_WEEKDAY
                | REG_DAY
                | REG_MONTH
                | REG_YEAR
                | REG_CENTURY
        );
        if !time_register {
            return state.nvram[index as usize];
        }
        let now = self.now();
        match index {
            REG_SECONDS => encode(now.second),
            REG_MINUTES => encode(now.minute),
            REG_HOURS if status_b & STATUS_B_24H != 0 => encode(now.hour),
            REG_HOURS => {
                let pm = if now.hour >= 12 { 0x80 } else { 0 };
                let hour12 = match now.hour % 12 {
                    0 => 12,
                    h => h,
                };
                encode(hour12) | pm
            }
            REG_WEEKDAY => encode(now.weekday),
            REG_DAY => encode(now.day),
            REG_MONTH => encode(now.month),
            REG_YEAR => encode(now.year % 100),
            _ => encode(now.year / 100),
        }
    }
}

impl BusDevice for CmosRtc {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let value = match offset {
            1 => self.register(&state, state.index),
            _ => 0xff,
        };
        reply_byte(data, value);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match (offset, state.index) {
            (0, _) => state.index = value & INDEX_MASK,
            (1, REG_STATUS_A | REG_STATUS_C | REG_STATUS_D) => {}
            (1, REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH) => {}
            (1, REG_YEAR | REG_CENTURY) => {}
            (1, index) => state.nvram[index as usize] = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2026-11-25 14:05:09 UTC, a Wednesday.
    const WHEN: u64 = 1_795_615_509;

    fn rtc_at(secs: u64) -> CmosRtc {
        CmosRtc::with_clock(Box::new(move || UNIX_EPOCH + Duration::from_secs(secs)))
    }

    fn read(rtc: &CmosRtc, index: u8) -> u8 {
        rtc.write(0, &[index]);
        let mut data = [0u8];
        rtc.read(1, &mut data);
        data[0]
    }

    #[test]
    fn unix_time_converts_to_the_civil_date() {
        assert_eq!(
            DateTime::from_unix(WHEN),
            DateTime {
                year: 2026,
                month: 11,
                day: 25,
                hour: 14,
                minute: 5,
                second: 9,
                weekday: 4
            }
        );
        assert_eq!(DateTime::from_unix(951_782_400).day, 29); // 2000-02-29
        assert_eq!(DateTime::from_unix(0).weekday, 5); // Thursday
    }

    #[test]
    fn time_reads_in_bcd_by_default() {
        let rtc = rtc_at(WHEN);

        assert_eq!(read(&rtc, REG_SECONDS), 0x09);
        assert_eq!(read(&rtc, REG_MINUTES), 0x05);
        assert_eq!(read(&rtc, REG_HOURS), 0x14);
        assert_eq!(read(&rtc, REG_DAY), 0x25);
        assert_eq!(read(&rtc, REG_MONTH), 0x11);
        assert_eq!(read(&rtc, REG_YEAR), 0x26);
        assert_eq!(read(&rtc, REG_CENTURY), 0x20);
    }

    #[test]
    fn guest_selects_binary_and_12_hour_mode_in_status_b() {
        let rtc = rtc_at(WHEN);

        rtc.write(0, &[REG_STATUS_B]);
        rtc.write(1, &[STATUS_B_BINARY]);

        assert_eq!(read(&rtc, REG_MINUTES), 5);
        assert_eq!(read(&rtc, REG_YEAR), 26);
        assert_eq!(read(&rtc, REG_HOURS), 0x80 | 2); // 2 PM
    }

    #[test]
    fn nmi_bit_of_the_index_is_ignored_and_nvram_keeps_writes() {
        let rtc = rtc_at(WHEN);

        rtc.write(0, &[0x80 | 0x40]);
        rtc.write(1, &[0xab]);

        assert_eq!(read(&rtc, 0x40), 0xab);
        assert_eq!(read(&rtc, REG_STATUS_D), STATUS_D_VALID);
    }
}
