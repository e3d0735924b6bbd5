//! What a status payload says: online, offline, cleared, or nothing known.
//!
//! Plain payloads are compared with the configured lists, ignoring
//! surrounding whitespace. With `state_field`, the payload is JSON and the
//! state is the string at that JSON pointer; with `seq_field`, the number at
//! that pointer is the session sequence (Sparkplug's `bdSeq`) that lets a
//! late will be recognised as stale.
//!
//! A JSON payload over `MAX_JSON` is not parsed at all (a status fits in a
//! few hundred bytes; a parsed document can take tens of times its size),
//! and a sequence field that is there but not an integer makes the payload
//! unrecognised rather than a death that no birth can make stale.

use crate::config::Rules;

/// The largest JSON status payload parsed.
pub const MAX_JSON: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    Online {
        seq: Option<i64>,
    },
    Offline {
        seq: Option<i64>,
    },
    /// An empty payload: a retained message was cleared.
    Cleared,
    Unrecognised,
}

pub fn read(payload: &[u8], rules: &Rules) -> Reading {
    if payload.is_empty() {
        return Reading::Cleared;
    }
    let wants_json = rules.state_field.is_some() || rules.seq_field.is_some();
    if wants_json && payload.len() > MAX_JSON {
        return Reading::Unrecognised;
    }
    let json = wants_json.then(|| serde_json::from_slice::<serde_json::Value>(payload).ok()).flatten();
    let seq = match (&rules.seq_field, &json) {
        (Some(pointer), Some(json)) => match json.pointer(pointer) {
            None => None,
            Some(v) => match as_integer(v) {
                Some(seq) => Some(seq),
                None => return Reading::Unrecognised,
            },
        },
        _ => None,
    };
    let state: Option<&[u8]> = match &rules.state_field {
        Some(pointer) => json.as_ref().and_then(|j| j.pointer(pointer)).and_then(|v| v.as_str()).map(str::as_bytes),
        None => Some(payload.trim_ascii()),
    };
    let Some(state) = state else { return Reading::Unrecognised };
    let state = state.trim_ascii();
    if rules.offline.iter().any(|p| p.as_bytes() == state) {
        Reading::Offline { seq }
    } else if rules.online.iter().any(|p| p.as_bytes() == state) {
        Reading::Online { seq }
    } else {
        Reading::Unrecognised
    }
}

/// A sequence number written as a JSON number or a numeric string.
fn as_integer(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rules(state_field: Option<&str>, seq_field: Option<&str>) -> Rules {
        Rules {
            online: vec!["online".into(), "ONLINE".into()],
            offline: vec!["offline".into()],
            actions: vec![],
            grace: Duration::ZERO,
            heartbeat_timeout: None,
            state_field: state_field.map(str::to_string),
            seq_field: seq_field.map(str::to_string),
            severity: None,
        }
    }

    #[test]
    fn plain_payloads_are_compared_without_surrounding_whitespace() {
        let r = rules(None, None);
        assert_eq!(read(b" online\r\n", &r), Reading::Online { seq: None });
        assert_eq!(read(b"offline", &r), Reading::Offline { seq: None });
        assert_eq!(read(b"", &r), Reading::Cleared);
        assert_eq!(read(b"Online", &r), Reading::Unrecognised);
        assert_eq!(read(&[0xff, 0x00], &r), Reading::Unrecognised);
    }

    #[test]
    fn json_state_and_sequence_are_read_by_pointer() {
        let r = rules(Some("/state"), Some("/bdSeq"));
        assert_eq!(read(br#"{"state":"ONLINE","bdSeq":7}"#, &r), Reading::Online { seq: Some(7) });
        assert_eq!(read(br#"{"state":"offline","bdSeq":"6"}"#, &r), Reading::Offline { seq: Some(6) });
        assert_eq!(read(br#"{"state":"offline"}"#, &r), Reading::Offline { seq: None });
        assert_eq!(read(br#"{"bdSeq":7}"#, &r), Reading::Unrecognised);
        assert_eq!(read(b"offline", &r), Reading::Unrecognised);
        assert_eq!(read(br#"{"state":"#, &r), Reading::Unrecognised);
    }

    #[test]
    fn a_sequence_that_is_not_a_number_is_not_a_death_beyond_staleness() {
        let r = rules(Some("/state"), Some("/bdSeq"));
        assert_eq!(read(br#"{"state":"offline","bdSeq":"x"}"#, &r), Reading::Unrecognised);
        assert_eq!(read(br#"{"state":"offline","bdSeq":null}"#, &r), Reading::Unrecognised);
    }

    #[test]
    fn json_over_the_limit_is_not_parsed() {
        let r = rules(Some("/state"), None);
        let mut big = br#"{"state":"offline","pad":""#.to_vec();
        big.resize(MAX_JSON + 1, b'x');
        big.extend_from_slice(br#""}"#);
        assert_eq!(read(&big, &r), Reading::Unrecognised);
    }
}
