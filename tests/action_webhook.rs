//! The webhook action against a real HTTP receiver: the event JSON, the
//! Standard Webhooks signature (checked here independently), retries with
//! one webhook-id, Retry-After, the dead-letter file, a hanging endpoint
//! that delays nothing else, and the Alertmanager format.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use support::receiver::Received;
use support::{Behaviour, Broker, Daemon, Receiver, SOON, config, publish};

fn hook(name: &str, receiver: &Receiver, extra: &str) -> String {
    format!("[action.{name}]\ntype = \"webhook\"\nurl = \"{}\"\n{extra}\n", receiver.url)
}

fn pump(actions: &str) -> String {
    format!("[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\nactions = [{actions}]\n")
}

/// Verifies a Standard Webhooks signature from the spec alone.
fn signature_is_valid(request: &Received, secret: &[u8]) -> bool {
    let signed = format!(
        "{}.{}.{}",
        request.header("webhook-id"),
        request.header("webhook-timestamp"),
        String::from_utf8_lossy(&request.body)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(signed.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    request.header("webhook-signature").split(' ').any(|s| s == format!("v1,{expected}"))
}

/// A daemon whose pump-7 notifies action `ops` (a webhook with `extra`
/// settings) at a receiver behaving so, and pump-7 just gone offline.
async fn pump_offline_through(behaviour: Behaviour, extra: &str) -> (Broker, Receiver, Daemon) {
    let broker = Broker::start();
    let receiver = Receiver::start(behaviour).await;
    let daemon = Daemon::start(&config(&broker, &format!("{}{}", hook("ops", &receiver, extra), pump("\"ops\""))));
    daemon.wait_connected().await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    (broker, receiver, daemon)
}

fn dead_letters(daemon: &Daemon) -> Vec<serde_json::Value> {
    std::fs::read_to_string(daemon.dir().join("state/dead-letter.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn webhook_posts_the_signed_event_json_with_templated_headers() {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::Accept).await;
    let key = b"0123456789abcdef0123456789abcdef";
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), &secret).unwrap();
    let extra = format!(
        "secret_file = \"{}\"\nheaders = {{ \"X-Team\" = \"${{WW_TEAM}}\", \"X-Device\" = \"{{id}}\" }}",
        dir.path().join("secret").display()
    );
    let text = config(&broker, &format!("{}{}", hook("ops", &receiver, &extra), pump("\"ops\"")));
    let daemon = Daemon::start_with(&text, &[("WW_TEAM", "plant-north")]);
    daemon.wait_connected().await;

    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let request = receiver.wait_for(1, SOON).await.remove(0);
    let body = request.json();
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("x-team"), "plant-north");
    assert_eq!(request.header("x-device"), "pump-7");
    assert_eq!(body["event"], "offline");
    assert_eq!(body["device"], "pump-7");
    assert_eq!(body["topic"], "plant/pump-7/status");
    assert_eq!(body["payload"], "offline");
    assert_eq!(body["previous"], "unknown");
    assert!(humantime::parse_rfc3339(body["at"].as_str().unwrap()).is_ok(), "{body}");
    assert!(body["offline_since"].is_string(), "{body}");
    assert_eq!(request.header("webhook-id"), body["id"].as_str().unwrap());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let sent: u64 = request.header("webhook-timestamp").parse().unwrap();
    assert!(now.abs_diff(sent) < 30, "timestamp {sent} vs now {now}");
    assert!(signature_is_valid(&request, key), "bad signature on {request:?}");
    assert!(!signature_is_valid(&request, b"another key"));

    publish(broker.port, "plant/pump-7/status", "online", false).await;
    let online = receiver.wait_for(2, SOON).await.remove(1).json();
    assert_eq!(online["event"], "online");
    assert!(online["offline_for_s"].as_f64().unwrap() >= 0.0, "{online}");
    assert_ne!(online["id"], body["id"]);
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_webhook_id() {
    let (_broker, receiver, daemon) = pump_offline_through(Behaviour::FailFirst { n: 2, status: 503 }, "").await;
    let requests = receiver.wait_for(3, SOON).await;
    let ids: Vec<&str> = requests.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.iter().all(|id| *id == ids[0] && !id.is_empty()), "{ids:?}");
    assert!(requests[2].at - requests[0].at >= Duration::from_millis(500), "no backoff between retries");
    daemon.wait_log("the delivery", SOON, |l| l["what"] == "webhook_delivered" && l["attempt"] == 3).await;
    assert!(dead_letters(&daemon).is_empty());
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (_broker, receiver, _daemon) =
        pump_offline_through(Behaviour::TooManyFirst { n: 1, retry_after_secs: 2 }, "").await;
    let requests = receiver.wait_for(2, SOON).await;
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5), "waited {waited:?}");
}

#[tokio::test]
async fn a_final_4xx_is_not_retried_and_goes_to_the_dead_letter_file() {
    let (_broker, receiver, daemon) = pump_offline_through(Behaviour::FailFirst { n: 100, status: 404 }, "").await;
    daemon.wait_log("the give-up", SOON, |l| l["what"] == "webhook_given_up").await;
    assert_eq!(receiver.received().len(), 1);
    // Written after the give-up is logged: waited for, not raced.
    let letters =
        support::eventually("the dead letter", SOON, || Some(dead_letters(&daemon)).filter(|l| !l.is_empty())).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["action"], "ops");
    assert_eq!(letters[0]["error"], "HTTP 404 Not Found");
    assert_eq!(letters[0]["events"][0]["device"], "pump-7");
}

#[tokio::test]
async fn a_delivery_out_of_attempts_goes_to_the_dead_letter_file() {
    let (_broker, receiver, daemon) =
        pump_offline_through(Behaviour::FailFirst { n: 100, status: 500 }, "max_attempts = 3").await;
    let given_up = daemon.wait_log("the give-up", SOON, |l| l["what"] == "webhook_given_up").await;
    assert_eq!(given_up["level"], "ERROR");
    assert_eq!(receiver.received().len(), 3);
    let letters = dead_letters(&daemon);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["id"], receiver.received()[0].header("webhook-id"));
}

/// Guards the retry budget by time: a receiver down for longer than the
/// old eight attempts (about a minute) still gets the alert, once, with
/// the id it was first tried with.
#[tokio::test]
async fn a_receiver_down_past_many_attempts_gets_the_alert_once_when_it_is_back() {
    let (_broker, receiver, daemon) =
        pump_offline_through(Behaviour::FailFirst { n: 20, status: 503 }, "max_interval = \"100ms\"").await;
    let all = receiver.wait_for(21, Duration::from_secs(20)).await;
    let ids: std::collections::BTreeSet<&str> = all.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "one id across every attempt");
    support::eventually("the delivery to be logged", SOON, || {
        let retries = daemon.logs(|l| l["what"] == "webhook_retry");
        let waits: Vec<f64> = retries
            .iter()
            .map(|l| humantime::parse_duration(l["retry_in"].as_str().unwrap()).unwrap().as_secs_f64())
            .collect();
        (retries.len() == 20).then_some(waits)
    })
    .await
    .iter()
    .for_each(|wait| assert!(*wait <= 0.1, "a wait past max_interval: {wait}"));
    support::wait::observe(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 21, "nothing after the success");
    assert!(dead_letters(&daemon).is_empty());
}

#[tokio::test]
async fn a_delivery_older_than_max_age_is_given_up() {
    let extra = "max_age = \"1s\"\nmax_interval = \"300ms\"";
    let (_broker, receiver, daemon) =
        pump_offline_through(Behaviour::FailFirst { n: usize::MAX, status: 500 }, extra).await;
    let given_up = daemon.wait_log("the give-up", SOON, |l| l["what"] == "webhook_given_up").await;
    let attempts = given_up["attempts"].as_u64().unwrap();
    assert!((4..=7).contains(&attempts), "about 1 s of 300 ms waits: {attempts} attempts");
    let received = receiver.received();
    let span = received.last().unwrap().at.duration_since(received[0].at);
    assert!(span <= Duration::from_millis(1500), "the last attempt falls at max_age: {span:?}");
    assert_eq!(dead_letters(&daemon).len(), 1);
}

#[tokio::test]
async fn a_hanging_endpoint_delays_no_other_action_or_device() {
    let broker = Broker::start();
    let stuck = Receiver::start(Behaviour::Hang).await;
    let fine = Receiver::start(Behaviour::Accept).await;
    let actions = format!("{}{}", hook("stuck", &stuck, "timeout = \"60s\"\nconcurrency = 1"), hook("fine", &fine, ""));
    let devices = "[[device]]\ntopic = \"plant/{id}/status\"\nactions = [\"log\", \"stuck\", \"fine\"]\n";
    let daemon = Daemon::start(&config(&broker, &format!("{actions}{devices}")));
    daemon.wait_connected().await;
    for id in ["a", "b", "c", "d"] {
        publish(broker.port, &format!("plant/{id}/status"), "offline", false).await;
    }
    let delivered = fine.wait_for(4, SOON).await;
    let devices: std::collections::BTreeSet<String> =
        delivered.iter().map(|r| r.json()["device"].as_str().unwrap().to_string()).collect();
    assert_eq!(devices.len(), 4);
    for id in ["a", "b", "c", "d"] {
        daemon.wait_event(id, "offline", 1).await;
    }
    assert_eq!(stuck.received().len(), 1, "concurrency 1: one request hangs, the rest wait");
}

#[tokio::test]
async fn a_device_whose_deliveries_keep_failing_delays_another_device_by_no_more_than_a_request() {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::FailDevice("a")).await;
    let actions = hook("hook", &receiver, "concurrency = 2\nmax_attempts = 4");
    let devices = "[[device]]\ntopic = \"plant/{id}/status\"\nactions = [\"hook\"]\n";
    let daemon = Daemon::start(&config(&broker, &format!("{actions}{devices}")));
    daemon.wait_connected().await;
    // Device a flaps: its deliveries queue up behind its failing first one.
    // (Each transition decided before the next: a will and a birth closer
    // than a round trip through the broker are a flap, not an outage.)
    for (i, payload) in ["offline", "online"].iter().cycle().take(6).enumerate() {
        publish(broker.port, "plant/a/status", *payload, false).await;
        let sample = format!("willwatch_transitions_total{{event=\"{payload}\"}}");
        let n = (i / 2 + 1) as f64;
        daemon.wait_metric(&sample, n).await;
    }
    receiver.wait_for(1, SOON).await;
    let sent = std::time::Instant::now();
    publish(broker.port, "plant/b/status", "offline", false).await;
    let b = support::eventually("b's webhook", SOON, || {
        receiver.received().into_iter().find(|r| r.json()["device"] == "b").map(|r| r.at)
    })
    .await;
    let waited = b.saturating_duration_since(sent);
    assert!(waited < std::time::Duration::from_millis(500), "b waited {waited:?} behind a's retries");
}

#[tokio::test]
async fn a_receiver_that_answers_too_late_gets_every_attempt_under_one_id_then_a_dead_letter() {
    let broker = Broker::start();
    let slow = Receiver::start(Behaviour::Hang).await;
    let actions = hook("slow", &slow, "timeout = \"200ms\"\nmax_attempts = 3");
    let daemon = Daemon::start(&config(&broker, &format!("{actions}{}", pump("\"slow\""))));
    daemon.wait_connected().await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let attempts = slow.wait_for(3, SOON).await;
    let letter = support::eventually("the dead letter", SOON, || dead_letters(&daemon).into_iter().next()).await;
    let ids: std::collections::BTreeSet<&str> = attempts.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "a timed-out attempt is retried under the same id: {ids:?}");
    assert_eq!(letter["id"], *ids.first().unwrap());
    assert_eq!(slow.received().len(), 3, "no attempt past max_attempts");
}

/// Alertmanager's webhook payload, written from its documentation
/// (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AlertmanagerMessage {
    version: String,
    group_key: String,
    truncated_alerts: u64,
    status: String,
    receiver: String,
    group_labels: BTreeMap<String, String>,
    common_labels: BTreeMap<String, String>,
    common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: String,
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Alert {
    status: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

fn is_rfc3339(s: &str) -> bool {
    s == "0001-01-01T00:00:00Z" || humantime::parse_rfc3339(s).is_ok()
}

#[tokio::test]
async fn alertmanager_format_fires_then_resolves_one_alert() {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::Accept).await;
    let devices = format!("{}severity = \"page\"\n", pump("\"am\""));
    let text = config(&broker, &format!("{}{devices}", hook("am", &receiver, "format = \"alertmanager\"")))
        .replace("[http]\n", "[http]\nexternal_url = \"https://gw.example.com:9818/\"\n");
    let daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    receiver.wait_for(1, SOON).await;
    publish(broker.port, "plant/pump-7/status", "online", false).await;
    let requests = receiver.wait_for(2, SOON).await;
    let parsed: Vec<AlertmanagerMessage> =
        requests.iter().map(|r| serde_json::from_slice(&r.body).expect("an Alertmanager v4 message")).collect();
    let (firing, resolved) = (&parsed[0], &parsed[1]);
    assert_eq!(
        (firing.version.as_str(), firing.status.as_str(), resolved.status.as_str()),
        ("4", "firing", "resolved")
    );
    assert_eq!(firing.receiver, "am");
    assert_eq!(firing.truncated_alerts, 0);
    assert!(firing.group_key.contains("DeviceOffline"), "{}", firing.group_key);
    assert_eq!(firing.group_labels.get("alertname").map(String::as_str), Some("DeviceOffline"));
    assert_eq!(firing.common_labels.get("device").map(String::as_str), Some("pump-7"));
    assert_eq!(firing.external_url, "https://gw.example.com:9818");
    assert_eq!(firing.common_labels.get("severity").map(String::as_str), Some("page"), "the device's severity");
    assert!(firing.common_annotations["summary"].contains("pump-7"), "one alert: it shares all its annotations");
    let (a, b) = (&firing.alerts[0], &resolved.alerts[0]);
    assert_eq!((a.status.as_str(), b.status.as_str()), ("firing", "resolved"));
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_eq!(a.starts_at, b.starts_at, "the resolved alert keeps its start");
    assert_eq!(a.ends_at, "0001-01-01T00:00:00Z");
    assert!([&a.starts_at, &a.ends_at, &b.starts_at, &b.ends_at].iter().all(|t| is_rfc3339(t)));
    assert!(a.annotations["summary"].contains("pump-7"));
    assert_eq!(a.generator_url, "https://gw.example.com:9818/status?device=pump-7");
    // What the link shows, asked of this daemon.
    let status = reqwest::get(format!("{}/status?device=pump-7", daemon.http_url().await)).await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&status.text().await.unwrap()).unwrap();
    assert_eq!(doc["devices"].as_array().unwrap().len(), 1);
    assert_eq!(doc["devices"][0]["id"], "pump-7");
}

/// A device id with a line break in it (a topic can carry one, through a
/// broker that does not refuse it) neither injects a header where `{id}`
/// is templated into one nor stops the delivery: it is sent escaped.
#[tokio::test]
async fn a_device_id_cannot_inject_or_break_a_templated_header() {
    let broker = Broker::rumqttd();
    let receiver = Receiver::start(Behaviour::Accept).await;
    let hook = hook("ops", &receiver, "headers = { \"X-Device\" = \"{id}\" }");
    let device = "[[device]]\ntopic = \"fleet/{id}/status\"\nactions = [\"ops\"]\n";
    let daemon = Daemon::start(&config(&broker, &format!("{hook}{device}")));
    daemon.wait_connected().await;
    publish(broker.port, "fleet/a\r\nX-Injected: 1/status", "offline", false).await;
    let request = receiver.wait_for(1, SOON).await.remove(0);
    assert_eq!(request.header("x-device"), "a\\r\\nX-Injected: 1");
    assert!(request.headers.get("x-injected").is_none(), "{request:?}");
    assert_eq!(request.json()["device"], "a\r\nX-Injected: 1");
}
