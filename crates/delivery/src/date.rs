//! Dates as mail writes them, from Unix seconds, in UTC (the processes run
//! without `TZ`; readers use these dates for display and sorting):
//! RFC 5322 for headers and reports, ctime(3) style for mbox `From ` lines.

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The calendar fields of a Unix time.
struct Civil {
    year: u64,
    month: &'static str,
    day: u64,
    weekday: &'static str,
    hour: u64,
    minute: u64,
    second: u64,
}

fn civil(unix: u64) -> Civil {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        // Day 0 (1970-01-01) was a Thursday.
        weekday: DAYS.get((days % 7) as usize).copied().unwrap_or("Thu"),
        month: MONTHS
            .get(month.saturating_sub(1) as usize)
            .copied()
            .unwrap_or("Jan"),
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
    }
}

/// `Thu, 26 Nov 2026 20:10:50 +0000`.
pub fn rfc5322(unix: u64) -> String {
    let c = civil(unix);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        c.weekday, c.day, c.month, c.year, c.hour, c.minute, c.second
    )
}

/// `Thu Nov 26 20:10:50 2026`, as ctime(3) (day padded with a space).
pub fn asctime(unix: u64) -> String {
    let c = civil(unix);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        c.weekday, c.month, c.day, c.hour, c.minute, c.second, c.year
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic
/// Gregorian (the classic era-based algorithm, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5322_dates() {
        assert_eq!(rfc5322(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322(1_764_187_850), "Wed, 26 Nov 2025 20:10:50 +0000");
        assert_eq!(rfc5322(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn asctime_dates() {
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(1_700_000_000), "Tue Nov 14 22:13:20 2023");
        assert_eq!(asctime(1_699_000_000), "Fri Nov  3 08:26:40 2023");
        assert_eq!(asctime(951_782_400), "Tue Feb 29 00:00:00 2000");
    }
}
