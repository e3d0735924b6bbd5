//! `willwatch status`: asks a running daemon for `/status` and prints a
//! table with how long each device has been in its state. It walks the
//! pages by id, the order that meets every device once however the fleet
//! changes during the walk; a fleet that fits one page is printed offline
//! devices first.
//!
//! Exit codes make it a monitoring check (Nagios' OK, WARNING, CRITICAL
//! order is not followed: these say what an operator acts on): 0 when no
//! device has an outage notified, 1 when one has, 2 when the picture
//! cannot be trusted: the daemon cannot be reached, or is not connected to
//! its broker. A device waiting out its grace period is shown with the
//! time left and does not make the exit 1.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde_json::Value;

pub const EXIT_ALL_ONLINE: u8 = 0;
pub const EXIT_NOTIFIED_OFFLINE: u8 = 1;
pub const EXIT_CANNOT_TELL: u8 = 2;

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

/// GETs the status document a page at a time (`state`: one state only),
/// handing each page to `each` as it comes, so a fleet of any size costs
/// one page of memory; returns the first page (its broker, counts and
/// cluster are the whole fleet's). A user and password in the URL
/// (`http://ops:secret@host:9818/status`) are sent as basic
/// authentication (`[http] users_file`), and never shown.
pub async fn fetch(url: &str, state: Option<&str>, mut each: impl FnMut(&Value)) -> Result<Value, String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
    let mut target = url::Url::parse(url).map_err(|e| format!("`{}` is not a URL: {e}", crate::redact::url(url)))?;
    let credentials =
        (!target.username().is_empty()).then(|| (target.username().to_string(), target.password().map(String::from)));
    let _ = (target.set_username(""), target.set_password(None));
    let url = target.as_str();
    let shown = crate::redact::url(url);
    let mut first: Option<Value> = None;
    let mut after: Option<String> = None;
    loop {
        let mut request = client.get(url);
        if let Some((user, password)) = &credentials {
            request = request.basic_auth(user, password.as_deref());
        }
        request = request.query(&[("sort", "id")]);
        if let Some(state) = state {
            request = request.query(&[("state", state)]);
        }
        if let Some(after) = &after {
            request = request.query(&[("after", after)]);
        }
        let response = request.send().await.map_err(|e| format!("cannot reach willwatch at {shown}: {}", why(e)))?;
        if !response.status().is_success() {
            return Err(format!("willwatch at {shown} answered {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| format!("reading from willwatch at {shown}: {}", why(e)))?;
        let mut page: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("willwatch at {shown} sent something unreadable: {e}"))?;
        after = page.get_mut("next").map(Value::take).and_then(|n| n.as_str().map(String::from));
        each(&page);
        if first.is_none() {
            page["devices"] = Value::Array(Vec::new());
            first = Some(page);
        }
        if after.is_none() {
            return Ok(first.expect("set above"));
        }
    }
}

/// What went wrong with a request, down to its cause (`operation timed
/// out`, `connection refused`), without the URL (it may hold a password).
fn why(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// The exit code for a status document, and why when it is not 0.
pub fn verdict(doc: &Value, now: SystemTime) -> (u8, Option<String>) {
    let broker = &doc["broker"];
    if broker["connected"] != true {
        let why = format!(
            "willwatch is not connected to its broker {} (for {}): what it shows may be stale",
            broker["url"].as_str().unwrap_or(""),
            ago(&broker["since"], now)
        );
        return (EXIT_CANNOT_TELL, Some(why));
    }
    let counts = &doc["counts"];
    // A daemon without the count predates it: its offlines were notified.
    let notified = counts["notified"].as_u64().or_else(|| counts["offline"].as_u64()).unwrap_or(0);
    if notified > 0 {
        (EXIT_NOTIFIED_OFFLINE, Some(format!("{notified} device(s) offline and notified")))
    } else {
        (EXIT_ALL_ONLINE, None)
    }
}

/// What the state column says: `offline (grace 12s left)` while an
/// offline waits out its grace period.
fn state_text(d: &Value) -> String {
    let state = d["state"].as_str().unwrap_or("");
    match (d["grace_left"].as_f64(), d["cause"].as_str()) {
        (Some(left), _) => format!("{state} (grace {}s left)", left.ceil() as u64),
        (None, Some(cause)) => format!("{state} ({cause})"),
        (None, None) => state.to_string(),
    }
}

/// How `willwatch status` prints what it reads, a page at a time: the
/// table people read, or one JSON document (`{"broker", "counts",
/// "cluster", "devices": [...]}`).
pub struct Printer {
    json: bool,
    now: SystemTime,
    /// Rows printed so far.
    rows: usize,
    /// The columns' widths, set by the first page (a longer id later only
    /// pushes its own row); `None` until the first page is printed.
    widths: Option<(usize, usize)>,
}

impl Printer {
    pub fn new(json: bool, now: SystemTime) -> Printer {
        Printer { json, now, rows: 0, widths: None }
    }

    /// What to print for one page.
    pub fn page(&mut self, page: &Value) -> String {
        let mut devices: Vec<&Value> = page["devices"].as_array().map(|d| d.iter().collect()).unwrap_or_default();
        if !self.json && self.widths.is_none() && page["next"].is_null() {
            // The whole fleet in one page: offline first, then unknown.
            devices.sort_by_key(|d| match d["state"].as_str() {
                Some("offline") => 0,
                Some("unknown") => 1,
                _ => 2,
            });
        }
        let mut out = String::new();
        let (width, state_width) = match self.widths {
            Some(widths) => widths,
            None => {
                let widths = if self.json {
                    // The first page's document, its devices to follow.
                    let mut head = page.clone();
                    if let Some(map) = head.as_object_mut() {
                        map.remove("devices");
                        map.remove("next");
                    }
                    let head = head.to_string();
                    let _ = write!(out, "{},\"devices\":[", &head[..head.len() - 1]);
                    (0, 0)
                } else {
                    self.header(&mut out, page);
                    let id = devices.iter().map(|d| d["id"].as_str().unwrap_or("").chars().count()).max();
                    let state = devices.iter().map(|d| state_text(d).chars().count()).max();
                    let widths = (id.unwrap_or(0).max(6), state.unwrap_or(0).max(8));
                    let _ = writeln!(
                        out,
                        "{:<w$} {:<iw$} {:<10} TOPIC",
                        "STATE",
                        "DEVICE",
                        "FOR",
                        w = widths.1,
                        iw = widths.0
                    );
                    widths
                };
                self.widths = Some(widths);
                widths
            }
        };
        for d in devices {
            if self.json {
                let _ = write!(out, "{}\n{d}", if self.rows == 0 { "" } else { "," });
            } else {
                let _ = writeln!(
                    out,
                    "{:<state_width$} {:<width$} {:<10} {}",
                    state_text(d),
                    d["id"].as_str().unwrap_or(""),
                    ago(&d["since"], self.now),
                    d["topic"].as_str().unwrap_or("")
                );
            }
            self.rows += 1;
        }
        out
    }

    /// What closes the output once every page was printed.
    pub fn finish(&self) -> &'static str {
        if self.json { "\n]}\n" } else { "" }
    }

    fn header(&self, out: &mut String, doc: &Value) {
        let broker = &doc["broker"];
        let link = if broker["connected"] == true { "connected" } else { "NOT CONNECTED" };
        let _ = writeln!(
            out,
            "broker  {} ({link} for {})",
            broker["url"].as_str().unwrap_or(""),
            ago(&broker["since"], self.now)
        );
        if let Some(cluster) = doc["cluster"].as_object() {
            let peers: Vec<String> = cluster["peers"]
                .as_object()
                .map(|p| {
                    p.iter()
                        .map(|(name, up)| if *up == true { name.clone() } else { format!("{name} (gone)") })
                        .collect()
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "cluster {} as {}: {} at epoch {}, leader {}; instances {}",
                cluster["name"].as_str().unwrap_or(""),
                cluster["instance"].as_str().unwrap_or(""),
                cluster["role"].as_str().unwrap_or(""),
                cluster["epoch"],
                cluster["leader"].as_str().unwrap_or("none"),
                peers.join(", ")
            );
        }
        let c = &doc["counts"];
        let _ = writeln!(out, "devices {} online, {} offline, {} unknown\n", c["online"], c["offline"], c["unknown"]);
    }
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

    fn doc(offline: u64, notified: u64) -> Value {
        json!({
            "broker": {"url": "mqtt://b:1883", "connected": true, "since": "2026-01-01T00:00:00Z"},
            "devices": [
                {"id": "pump-7", "topic": "plant/pump-7/status", "state": "offline", "since": "2026-01-01T00:10:00Z"},
                {"id": "fan", "topic": "plant/fan/status", "state": "online", "since": null},
            ],
            "counts": {"online": 1, "offline": offline, "unknown": 1, "notified": notified},
        })
    }

    #[test]
    fn exit_code_says_whether_an_outage_was_notified_or_the_picture_is_stale() {
        let now = humantime::parse_rfc3339("2026-01-01T01:00:00Z").unwrap();
        assert_eq!(verdict(&doc(0, 0), now), (EXIT_ALL_ONLINE, None), "unknown devices are no outage");
        assert_eq!(verdict(&doc(1, 0), now).0, EXIT_ALL_ONLINE, "an offline in its grace period is not notified");
        assert_eq!(verdict(&doc(1, 1), now).0, EXIT_NOTIFIED_OFFLINE);
        let mut stale = doc(0, 0);
        stale["broker"]["connected"] = json!(false);
        let (code, why) = verdict(&stale, now);
        assert_eq!(code, EXIT_CANNOT_TELL);
        assert_eq!(
            why.as_deref(),
            Some("willwatch is not connected to its broker mqtt://b:1883 (for 1h): what it shows may be stale")
        );
    }

    fn table(doc: &Value, now: SystemTime) -> String {
        Printer::new(false, now).page(doc)
    }

    #[test]
    fn json_output_is_one_document_whatever_the_pages() {
        let now = humantime::parse_rfc3339("2026-01-01T01:00:00Z").unwrap();
        let mut printer = Printer::new(true, now);
        let mut second = doc(1, 0);
        second["devices"] = json!([{"id": "later", "state": "online"}]);
        let empty = json!({"devices": []});
        let text =
            [printer.page(&doc(1, 0)), printer.page(&second), printer.page(&empty), printer.finish().into()].concat();
        let read: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let ids: Vec<&str> = read["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["pump-7", "fan", "later"]);
        assert_eq!(read["counts"]["offline"], 1);
        let mut nothing = Printer::new(true, now);
        let text = [nothing.page(&json!({"broker": {}, "devices": []})), nothing.finish().into()].concat();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["devices"], json!([]));
    }

    #[test]
    fn a_device_in_its_grace_period_shows_the_time_left() {
        let mut d = doc(1, 0);
        d["devices"][0]["grace_left"] = json!(11.2);
        let now = humantime::parse_rfc3339("2026-01-01T00:10:05Z").unwrap();
        let text = table(&d, now);
        assert!(text.contains("offline (grace 12s left) pump-7 5s"), "{text}");
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
