//! Sparkplug B, the industrial convention for MQTT presence: its topics
//! (`topic.rs`), its protobuf payloads (`payload.rs`) and the host
//! application's STATE message (here).
//!
//! Pure code: the fleet applies the session rules (`monitor/fleet/
//! sparkplug.rs`), the MQTT session publishes the STATE, the `reconnect`
//! action sends rebirth requests.

pub mod payload;
pub mod topic;

use std::time::SystemTime;

/// A host application's STATE payload (Sparkplug 3.0): JSON with whether
/// it is online and the moment its current connection was made, the same
/// in the birth and in the will of one connection.
pub fn state_payload(online: bool, timestamp_ms: u64) -> Vec<u8> {
    serde_json::json!({ "online": online, "timestamp": timestamp_ms }).to_string().into_bytes()
}

/// Whether a STATE payload says its host is offline.
pub fn says_offline(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload).is_ok_and(|v| v["online"] == false)
}

/// Milliseconds since the Unix epoch, Sparkplug's timestamps.
pub fn timestamp_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn state_is_the_specified_json() {
        let state: serde_json::Value = serde_json::from_slice(&super::state_payload(false, 17)).unwrap();
        assert_eq!(state, serde_json::json!({"online": false, "timestamp": 17}));
        assert!(super::says_offline(&super::state_payload(false, 17)));
        assert!(!super::says_offline(&super::state_payload(true, 17)) && !super::says_offline(b"offline"));
    }
}
