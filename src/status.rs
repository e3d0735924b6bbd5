//! `willwatch status`: asks a running daemon for `/status` and prints a
//! table, offline devices first, with how long each has been in its state.
//!
//! Exit codes make it a monitoring check: 0 when every device is online,
//! 1 when any is offline or unknown, 2 when the daemon cannot be reached.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde_json::Value;

pub const EXIT_ALL_ONLINE: u8 = 0;
pub const EXIT_NOT_ALL_ONLINE: u8 = 1;
pub const EXIT_UNREACHABLE: u8 = 2;

/// The status URL for a listen address (a wildcard listen is asked on loopback).
pub fn url_for(listen: std::net::SocketAddr) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}/status", listen.port())
}

/// GETs the status document, every page of it (`state`: one state only).
pub async fn fetch(url: &str, state: Option<&str>) -> Result<Value, String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
    let mut doc: Option<Value> = None;
    let mut after: Option<String> = None;
    loop {
        let mut request = client.get(url);
        if let Some(state) = state {
            request = request.query(&[("state", state)]);
        }
        if let Some(after) = &after {
            request = request.query(&[("after", after)]);
        }
        let response = request.send().await.map_err(|e| format!("cannot reach willwatch at {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("willwatch at {url} answered {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| format!("reading from willwatch at {url}: {e}"))?;
        let mut page: Value =
            serde_json::from_slice(&body).map_err(|e| format!("willwatch at {url} sent something unreadable: {e}"))?;
        after = page.get_mut("next").map(Value::take).and_then(|n| n.as_str().map(String::from));
        match &mut doc {
            None => doc = Some(page),
            Some(doc) => {
                let more = page["devices"].as_array_mut().map(std::mem::take).unwrap_or_default();
                if let Some(devices) = doc["devices"].as_array_mut() {
                    devices.extend(more);
                }
            }
        }
        if after.is_none() {
            let mut doc = doc.expect("set above");
            if let Some(map) = doc.as_object_mut() {
                map.remove("next");
            }
            return Ok(doc);
        }
    }
}

/// 0 when every device is online, 1 otherwise.
pub fn exit_code(doc: &Value) -> u8 {
    let counts = &doc["counts"];
    let not_online = counts["offline"].as_u64().unwrap_or(0) + counts["unknown"].as_u64().unwrap_or(0);
    if not_online == 0 { EXIT_ALL_ONLINE } else { EXIT_NOT_ALL_ONLINE }
}

/// The table people read.
pub fn table(doc: &Value, now: SystemTime) -> String {
    let mut out = String::new();
    let broker = &doc["broker"];
    let link = if broker["connected"] == true { "connected" } else { "NOT CONNECTED" };
    let _ =
        writeln!(out, "broker  {} ({link} for {})", broker["url"].as_str().unwrap_or(""), ago(&broker["since"], now));
    let c = &doc["counts"];
    let _ = writeln!(out, "devices {} online, {} offline, {} unknown\n", c["online"], c["offline"], c["unknown"]);
    let devices = doc["devices"].as_array().cloned().unwrap_or_default();
    let width = devices.iter().map(|d| d["id"].as_str().unwrap_or("").chars().count()).max().unwrap_or(0).max(6);
    let _ = writeln!(out, "{:<8} {:<width$} {:<10} TOPIC", "STATE", "DEVICE", "FOR");
    for d in &devices {
        let _ = writeln!(
            out,
            "{:<8} {:<width$} {:<10} {}",
            d["state"].as_str().unwrap_or(""),
            d["id"].as_str().unwrap_or(""),
            ago(&d["since"], now),
            d["topic"].as_str().unwrap_or("")
        );
    }
    out
}

/// "3m 12s" since an RFC 3339 time, or "-".
fn ago(time: &Value, now: SystemTime) -> String {
    let Some(t) = time.as_str().and_then(|t| humantime::parse_rfc3339_weak(t).ok()) else { return "-".into() };
    let secs = now.duration_since(t).unwrap_or_default().as_secs();
    humantime::format_duration(Duration::from_secs(secs)).to_string().split(' ').take(2).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(offline: u64, unknown: u64) -> Value {
        json!({
            "broker": {"url": "mqtt://b:1883", "connected": true, "since": "2026-01-01T00:00:00Z"},
            "devices": [
                {"id": "pump-7", "topic": "plant/pump-7/status", "state": "offline", "since": "2026-01-01T00:10:00Z"},
                {"id": "fan", "topic": "plant/fan/status", "state": "online", "since": null},
            ],
            "counts": {"online": 1, "offline": offline, "unknown": unknown},
        })
    }

    #[test]
    fn exit_code_says_whether_everything_is_online() {
        assert_eq!(exit_code(&doc(0, 0)), EXIT_ALL_ONLINE);
        assert_eq!(exit_code(&doc(1, 0)), EXIT_NOT_ALL_ONLINE);
        assert_eq!(exit_code(&doc(0, 2)), EXIT_NOT_ALL_ONLINE);
    }

    #[test]
    fn table_shows_state_device_and_time_in_state() {
        let now = humantime::parse_rfc3339("2026-01-01T01:13:20Z").unwrap();
        let text = table(&doc(1, 0), now);
        assert!(text.contains("broker  mqtt://b:1883 (connected for 1h 13m)"), "{text}");
        assert!(text.contains("offline  pump-7 1h 3m      plant/pump-7/status"), "{text}");
        assert!(text.contains("online   fan    -          plant/fan/status"), "{text}");
    }

    #[test]
    fn wildcard_listen_addresses_are_asked_on_loopback() {
        assert_eq!(url_for("0.0.0.0:9818".parse().unwrap()), "http://127.0.0.1:9818/status");
        assert_eq!(url_for("[::]:9818".parse().unwrap()), "http://[::1]:9818/status");
        assert_eq!(url_for("10.0.0.5:80".parse().unwrap()), "http://10.0.0.5:80/status");
    }
}
