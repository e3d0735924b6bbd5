//! What a status payload says: online, offline, cleared, or nothing known.
//!
//! Plain payloads are compared with the configured lists, ignoring
//! surrounding whitespace. With `state_field`, a JSON payload's state is
//! the value at that JSON pointer, by its text: a string as it is, a
//! boolean or number as JSON writes it (`{"online": true}` is `true`); a
//! payload that is not JSON is read as plain text, so a device may say
//! either (Zigbee2MQTT's legacy `online` and its `{"state":"online"}`).
//! With `seq_field`, the number at that pointer is the session sequence
//! (Sparkplug's `bdSeq`) that lets a late will be recognised as stale, and
//! a payload must then be JSON.
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
    let plain_ok = rules.seq_field.is_none();
    let state: Option<std::borrow::Cow<'_, [u8]>> = match (&rules.state_field, &json) {
        (Some(pointer), Some(json)) => match json.pointer(pointer) {
            Some(v) => json_text(v).map(|t| t.into_bytes().into()),
            // A bare `0` or `true` is JSON too, but no document: plain text.
            None if plain_ok && !json.is_object() && !json.is_array() => Some(payload.into()),
            None => None,
        },
        // Not JSON: plain text, unless a sequence is required.
        (Some(_), None) if plain_ok => Some(payload.into()),
        (Some(_), None) => None,
        (None, _) => Some(payload.into()),
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

/// A state value as text: a string as it is, a boolean or a number as
/// JSON writes it; nothing for arrays, objects and null.
fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => Some(v.to_string()),
        _ => None,
    }
}

/// A sequence number written as a JSON number or a numeric string.
fn as_integer(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(state_field: Option<&str>, seq_field: Option<&str>) -> Rules {
        Rules {
            online: vec!["online".into(), "ONLINE".into()],
            actions: vec![],
            state_field: state_field.map(str::to_string),
            seq_field: seq_field.map(str::to_string),
            ..Rules::builtin()
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
        assert_eq!(read(b"offline", &r), Reading::Unrecognised, "with a sequence, plain text is not enough");
        assert_eq!(read(br#"{"state":"#, &r), Reading::Unrecognised);
    }

    #[test]
    fn json_booleans_and_numbers_compare_by_their_json_text_and_plain_text_still_counts() {
        let mut r = rules(Some("/online"), None);
        r.online = vec!["true".into(), "1".into()];
        r.offline = vec!["false".into(), "0".into(), "offline".into()];
        assert_eq!(read(br#"{"online": true}"#, &r), Reading::Online { seq: None });
        assert_eq!(read(br#"{"online": false}"#, &r), Reading::Offline { seq: None });
        assert_eq!(read(br#"{"online": 1}"#, &r), Reading::Online { seq: None });
        assert_eq!(read(br#"{"online": 0}"#, &r), Reading::Offline { seq: None });
        assert_eq!(read(br#"{"online": null}"#, &r), Reading::Unrecognised);
        assert_eq!(read(br#"{"online": [true]}"#, &r), Reading::Unrecognised);
        assert_eq!(read(b"offline", &r), Reading::Offline { seq: None }, "a plain payload beside the JSON form");
        assert_eq!(read(br#"{"other": true}"#, &r), Reading::Unrecognised, "JSON without the field");
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

    proptest::proptest! {
        /// Whatever the words: a word of the online list reads online plain
        /// and as the JSON string at the field; one of neither list never
        /// reads as a state.
        #[test]
        fn plain_and_json_forms_agree(word in "[a-zA-Z0-9_-]{1,12}", other in "[a-zA-Z0-9_-]{1,12}") {
            proptest::prop_assume!(word != other);
            let mut r = rules(Some("/s"), None);
            r.online = vec![word.clone()];
            r.offline = vec![];
            let json = serde_json::json!({ "s": word }).to_string();
            proptest::prop_assert_eq!(read(word.as_bytes(), &r), Reading::Online { seq: None });
            proptest::prop_assert_eq!(read(json.as_bytes(), &r), Reading::Online { seq: None });
            let json_other = serde_json::json!({ "s": other }).to_string();
            proptest::prop_assert_eq!(read(other.as_bytes(), &r), Reading::Unrecognised);
            proptest::prop_assert_eq!(read(json_other.as_bytes(), &r), Reading::Unrecognised);
        }
    }
}
