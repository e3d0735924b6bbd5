//! `willwatch history [DEVICE] [--since 7d] [--json]`: per device, uptime,
//! outages, the longest outage and the mean time to recovery over the
//! window, worst first; with a device, its transitions too. Reads
//! `history.db` read-only, beside a running daemon or without one.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::pages::{self, DeviceStats, Order};
use super::report::Stats;
use super::{History, HistoryError, Row, ms};
use crate::config::{MAX_HISTORY_KEEP, MAX_HISTORY_KEEP_DAYS};

/// A window back from now (`willwatch history --since`, `?since=` of the
/// history routes): a duration no longer than the longest history kept,
/// so that now minus it is a time any clock can count.
pub fn window(text: &str) -> Result<Duration, String> {
    let since = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if since > MAX_HISTORY_KEEP {
        return Err(format!("{text} reaches back further than any history is kept (at most {MAX_HISTORY_KEEP_DAYS}d)"));
    }
    Ok(since)
}

/// The figures of every device with history in the window (or `device`
/// only), worst uptime first, and the transitions of `device`.
pub fn report(
    state_dir: &Path,
    device: Option<&str>,
    since: Duration,
    now: SystemTime,
) -> Result<(Vec<DeviceStats>, Vec<Row>), HistoryError> {
    let history = History::open_read(state_dir)?;
    let window = (ms(now - since), ms(now));
    let devices = whole(pages::figures(&history, device, window, Order::Uptime, None, usize::MAX, None)?);
    let transitions = match device {
        Some(id) => whole(pages::transitions(&history, id, window.0, None, usize::MAX)?),
        None => Vec::new(),
    };
    Ok((devices, transitions))
}

/// Everything a page without a cursor or a limit holds.
fn whole<T>(page: Result<pages::Page<T>, pages::BadCursor>) -> Vec<T> {
    page.map(|p| p.items).unwrap_or_default()
}

fn seconds(ms: i64) -> String {
    humantime::format_duration(Duration::from_secs((ms / 1000).max(0) as u64)).to_string()
}

fn percent(stats: &Stats) -> String {
    stats.uptime().map_or("-".into(), |u| format!("{:.3}%", u * 100.0))
}

/// The report as a table people read.
pub fn table(devices: &[DeviceStats], transitions: &[Row]) -> String {
    let width = devices.iter().map(|d| d.device.chars().count()).max().unwrap_or(0).max(6);
    let mut out = format!("{:<width$} {:>9} {:>8} {:>14} {:>14}\n", "DEVICE", "UPTIME", "OUTAGES", "LONGEST", "MTTR");
    for d in devices {
        let s = &d.stats;
        out.push_str(&format!(
            "{:<width$} {:>9} {:>8} {:>14} {:>14}\n",
            d.device,
            percent(s),
            s.outages,
            if s.longest_ms > 0 { seconds(s.longest_ms) } else { "-".into() },
            s.mttr_ms().map_or("-".into(), seconds),
        ));
    }
    if !transitions.is_empty() {
        out.push_str("\nAT                        FROM     TO       CAUSE    PAYLOAD\n");
        for t in transitions {
            let at = SystemTime::UNIX_EPOCH + Duration::from_millis(t.at_ms.max(0) as u64);
            out.push_str(&format!(
                "{:<25} {:<8} {:<8} {:<8} {}\n",
                crate::event::rfc3339(at),
                t.from,
                t.to,
                t.cause,
                crate::logging::escape(&t.payload)
            ));
        }
    }
    out
}

/// The report as JSON (what `GET /api/history` serves, a page at a time:
/// `next` is where the next page starts).
pub fn to_json(devices: &[DeviceStats], transitions: &[Row], since: Duration, next: Option<&str>) -> Value {
    json!({
        "since_s": since.as_secs(),
        "next": next,
        "devices": devices.iter().map(|d| json!({
            "id": d.device,
            "uptime": d.stats.uptime(),
            "outages": d.stats.outages,
            "longest_outage_s": d.stats.longest_ms as f64 / 1000.0,
            "mttr_s": d.stats.mttr_ms().map(|m| m as f64 / 1000.0),
            "online_s": d.stats.online_ms as f64 / 1000.0,
            "offline_s": d.stats.offline_ms as f64 / 1000.0,
            "unknown_s": d.stats.unknown_ms as f64 / 1000.0,
        })).collect::<Vec<_>>(),
        "transitions": transitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reaches_back_at_most_as_far_as_history_is_kept() {
        assert_eq!(window("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(window("3650d"), Ok(MAX_HISTORY_KEEP));
        let err = window("3651d").unwrap_err();
        assert!(err.contains("at most 3650d"), "{err}");
        assert!(window("18446744073709551615s").is_err());
        assert!(window("99999999999999999999s").is_err(), "overflows the parser itself");
        assert!(window("soon").is_err());
    }
    use crate::transition::Transition;
    use std::time::UNIX_EPOCH;

    #[test]
    fn worst_uptime_first_with_the_state_from_before_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let e = |device: &str, s: u64, from: &'static str, to: &'static str| Transition {
            device: device.into(),
            at: at(s),
            from,
            to,
            cause: "will",
            payload: Default::default(),
            offline_for: None,
        };
        // `flaky` online since before the window, down half of it; `steady` up all along.
        h.append(&[e("flaky", 10, "unknown", "online"), e("steady", 10, "unknown", "online")]).unwrap();
        h.append(&[e("flaky", 150, "online", "offline"), e("flaky", 200, "offline", "online")]).unwrap();
        let (devices, transitions) = report(dir.path(), None, Duration::from_secs(100), at(200)).unwrap();
        let ids: Vec<(&str, Option<f64>)> = devices.iter().map(|d| (d.device.as_str(), d.stats.uptime())).collect();
        assert_eq!(ids, [("flaky", Some(0.5)), ("steady", Some(1.0))]);
        assert!(transitions.is_empty());
        let (_, transitions) = report(dir.path(), Some("flaky"), Duration::from_secs(100), at(200)).unwrap();
        assert_eq!(transitions.len(), 2, "its transitions in the window");
        let text = table(&devices, &[]);
        assert!(text.contains("flaky    50.000%        1            50s              -"), "{text}");
    }
}
