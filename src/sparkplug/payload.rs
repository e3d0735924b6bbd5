//! Sparkplug B payloads: the subset of the protobuf `Payload` willwatch
//! reads (the sequence numbers) and writes (the rebirth request).
//!
//! The message types are written out with prost's derive instead of
//! generated from `sparkplug_b.proto`: only these fields are needed, and
//! prost skips the others (metric values, data sets, templates) unread.
//! Field numbers are the specification's.

use prost::Message;

use super::topic::Verb;

/// The metric an edge node's birth and death carry its session number in.
pub const BD_SEQ: &str = "bdSeq";
/// The metric a host writes `true` to in an NCMD to ask for a new birth.
pub const REBIRTH: &str = "Node Control/Rebirth";
/// Sparkplug's data type numbers used here.
const BOOLEAN: u32 = 11;

#[derive(Clone, PartialEq, Message)]
pub struct Payload {
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(uint32, optional, tag = "10")]
    pub int_value: Option<u32>,
    #[prost(uint64, optional, tag = "11")]
    pub long_value: Option<u64>,
    #[prost(bool, optional, tag = "14")]
    pub boolean_value: Option<bool>,
}

/// What a payload says about the session it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sequence {
    /// The message's place in the edge node's stream (0–255; absent from
    /// an NDEATH).
    pub seq: Option<u8>,
    /// The birth/death session number (NBIRTH and NDEATH).
    pub bd_seq: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("not a Sparkplug B payload: {0}")]
    Protobuf(String),
    #[error("`seq` is {0}, outside 0-255")]
    SeqRange(u64),
    #[error("the `bdSeq` metric has no integer value")]
    BdSeqValue,
    #[error("an {0} must carry a `bdSeq` metric")]
    NoBdSeq(&'static str),
    #[error("an {0} must carry a `seq`")]
    NoSeq(&'static str),
}

/// Reads the sequence numbers of a `verb` message: births and deaths of
/// edge nodes must carry their `bdSeq`, every message but an NDEATH its
/// `seq` (so an empty payload, which protobuf reads as a message with
/// nothing set, is refused).
pub fn decode_for(verb: Verb, bytes: &[u8]) -> Result<Sequence, PayloadError> {
    let sequence = decode(bytes)?;
    if matches!(verb, Verb::NBirth | Verb::NDeath) && sequence.bd_seq.is_none() {
        return Err(PayloadError::NoBdSeq(verb.as_str()));
    }
    if verb != Verb::NDeath && sequence.seq.is_none() {
        return Err(PayloadError::NoSeq(verb.as_str()));
    }
    Ok(sequence)
}

/// Reads the sequence numbers of `bytes`. Anything that is not a protobuf
/// `Payload`, or carries a sequence out of range, is an error.
fn decode(bytes: &[u8]) -> Result<Sequence, PayloadError> {
    let payload = Payload::decode(bytes).map_err(|e| PayloadError::Protobuf(e.to_string()))?;
    let seq = match payload.seq {
        None => None,
        Some(s) => Some(u8::try_from(s).map_err(|_| PayloadError::SeqRange(s))?),
    };
    let bd_seq = match payload.metrics.iter().find(|m| m.name.as_deref() == Some(BD_SEQ)) {
        None => None,
        Some(m) => {
            let value = m.long_value.or(m.int_value.map(u64::from)).ok_or(PayloadError::BdSeqValue)?;
            // Int64 on the wire is the two's-complement bit pattern.
            Some(value as i64)
        }
    };
    Ok(Sequence { seq, bd_seq })
}

/// An NCMD payload asking an edge node for a new birth (NBIRTH and every
/// DBIRTH), stamped `timestamp_ms` (milliseconds since the Unix epoch).
pub fn rebirth_request(timestamp_ms: u64) -> Vec<u8> {
    Payload {
        timestamp: Some(timestamp_ms),
        metrics: vec![Metric {
            name: Some(REBIRTH.to_string()),
            timestamp: Some(timestamp_ms),
            datatype: Some(BOOLEAN),
            boolean_value: Some(true),
            ..Metric::default()
        }],
        seq: None,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn birth(bd_seq: u64, seq: u64) -> Vec<u8> {
        Payload {
            timestamp: Some(1),
            metrics: vec![Metric {
                name: Some(BD_SEQ.into()),
                datatype: Some(8),
                long_value: Some(bd_seq),
                ..Metric::default()
            }],
            seq: Some(seq),
        }
        .encode_to_vec()
    }

    #[test]
    fn reads_bd_seq_and_seq() {
        assert_eq!(decode(&birth(7, 0)), Ok(Sequence { seq: Some(0), bd_seq: Some(7) }));
    }

    #[test]
    fn a_rebirth_request_reads_back_as_one_true_boolean() {
        let request = Payload::decode(rebirth_request(42).as_slice()).unwrap();
        let metric = &request.metrics[0];
        assert_eq!(metric.name.as_deref(), Some(REBIRTH));
        assert_eq!((metric.datatype, metric.boolean_value), (Some(BOOLEAN), Some(true)));
        assert_eq!(request.timestamp, Some(42));
    }

    #[test]
    fn births_and_deaths_without_their_numbers_are_errors() {
        assert_eq!(decode_for(Verb::NDeath, b""), Err(PayloadError::NoBdSeq("NDEATH")));
        assert_eq!(decode_for(Verb::DDeath, b""), Err(PayloadError::NoSeq("DDEATH")));
        assert!(decode_for(Verb::NDeath, &reference("ndeath.bin")).is_ok());
    }

    #[test]
    fn text_and_out_of_range_sequences_are_errors() {
        assert!(matches!(decode(b"offline"), Err(PayloadError::Protobuf(_))));
        assert_eq!(decode(&birth(1, 300)), Err(PayloadError::SeqRange(300)));
    }

    /// Payloads made by pysparkplug (`tests/data/sparkplug/generate.py`).
    fn reference(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/sparkplug/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn reads_what_an_independent_implementation_writes() {
        assert_eq!(decode(&reference("nbirth.bin")), Ok(Sequence { seq: Some(0), bd_seq: Some(3) }));
        assert_eq!(decode(&reference("ndeath.bin")), Ok(Sequence { seq: None, bd_seq: Some(3) }));
        assert_eq!(decode(&reference("ndeath-earlier.bin")), Ok(Sequence { seq: None, bd_seq: Some(2) }));
        assert_eq!(decode(&reference("dbirth.bin")), Ok(Sequence { seq: Some(1), bd_seq: None }));
        assert_eq!(decode(&reference("ndata.bin")), Ok(Sequence { seq: Some(2), bd_seq: None }));
        assert_eq!(decode(&reference("ddeath.bin")), Ok(Sequence { seq: Some(3), bd_seq: None }));
    }

    /// `generate.py` checks that pysparkplug reads this file as a rebirth
    /// command; this keeps the file what willwatch sends.
    #[test]
    fn the_committed_rebirth_request_is_current() {
        assert_eq!(rebirth_request(1_800_000_000_000), reference("rebirth-request.bin"));
    }

    proptest! {
        /// Whatever arrives, decoding returns (never panics), and a valid
        /// birth survives any trailing field it does not know.
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn births_round_trip(bd_seq in 0u64..=255, seq in 0u64..=255) {
            let decoded = decode(&birth(bd_seq, seq)).unwrap();
            prop_assert_eq!(decoded, Sequence { seq: Some(seq as u8), bd_seq: Some(bd_seq as i64) });
        }
    }
}
