//! What instances of a cluster say to each other, and where: every topic
//! lives under `willwatch/cluster/<name>/`.
//!
//! - `leader` (retained): the current claim, `{"instance","epoch"}`, with
//!   `"released": true` once its holder stopped cleanly;
//! - `members/<instance>` (retained): each instance's presence, its will
//!   saying it is gone (so a claim whose holder is gone is void);
//! - `hello/<instance>`: a marker each instance sends itself after it
//!   subscribed; when it comes back, every retained message is in;
//! - `who/<instance>`: a run about to join asks whether its name is held
//!   (`twin`); `here/<instance>`: the run that holds it answers;
//! - `sync`: a standby asks the leader for what the group has notified;
//! - `notified`: the leader's word that a transition was notified (its
//!   actions are done with it), or a snapshot of every notified outage.

use serde::{Deserialize, Serialize};

/// The subtree every instance subscribes to.
pub fn filter(cluster: &super::Settings) -> String {
    format!("{}#", prefix(&cluster.name))
}

/// `willwatch/cluster/<name>/`.
pub fn prefix(name: &str) -> String {
    format!("willwatch/cluster/{name}/")
}

/// Where an instance's presence (birth and will) lives.
pub fn member_topic(name: &str, instance: &str) -> String {
    format!("{}members/{instance}", prefix(name))
}

/// A claim of leadership. Claims order by `(epoch, instance)`: the higher
/// one wins, whoever sees them in whatever order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub instance: String,
    pub epoch: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

impl Claim {
    pub fn key(&self) -> (u64, &str) {
        (self.epoch, &self.instance)
    }
}

/// A leader's word on the `notified` topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The instance that says it, and its epoch.
    pub by: String,
    pub epoch: u64,
    /// Numbers the sayer's words, so it knows which came back.
    #[serde(default)]
    pub seq: u64,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum What {
    /// Transitions the leader decided (`done: false`, said before its
    /// actions run) or is done with, by device.
    Transitions { transitions: Vec<(String, Told)> },
    /// What the leader said of every device, in parts; a part 0 begins a
    /// new snapshot, `last` ends it.
    Snapshot { part: u32, last: bool, told: Vec<(String, super::Words)> },
}

/// The leader's last word on one device: its latest transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Told {
    /// `offline` or `online`.
    pub event: String,
    pub id: String,
    /// When the transition was established (ms since the Unix epoch).
    pub at: u64,
    /// Its actions are done with it (delivered, or given up on).
    #[serde(default)]
    pub done: bool,
}

/// Two instances see one transition established this close together, at
/// most (ms): two of a device's transitions this close are one.
pub const SAME_TRANSITION: u64 = 1000;

impl Told {
    pub fn is_offline(&self) -> bool {
        self.event == "offline"
    }

    /// Whether a transition to `event` established at `at_ms` is this one.
    pub fn is(&self, event: &str, at_ms: u64) -> bool {
        self.event == event && self.at.abs_diff(at_ms) <= SAME_TRANSITION
    }
}

/// A run about to join asks whether its instance name is held; `asking`
/// is its own nonce, which the answer carries back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Who {
    pub asking: String,
}

/// This process's `Who::asking`: its own question, delivered back to it
/// later by its persistent session, is known as its own.
pub fn asking(host: &str) -> String {
    format!("{host}/{}", std::process::id())
}

/// This run of an instance, as the shell reads it: when it started
/// (microseconds since the Unix epoch: later runs number their words
/// higher), and how its join question names it (`asking`).
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub at: u64,
    pub asking: String,
}

/// The run that holds an instance name answers a `Who`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Here {
    pub asking: String,
    /// The holder's run (microseconds since the Unix epoch at its start).
    pub run: u64,
    /// The host it runs on.
    pub host: String,
}

/// `who/<instance>` and `here/<instance>`.
pub fn who_topic(name: &str, instance: &str) -> String {
    format!("{}who/{instance}", prefix(name))
}

pub fn here_topic(name: &str, instance: &str) -> String {
    format!("{}here/{instance}", prefix(name))
}

/// A standby's request for a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub instance: String,
}

/// A message heard under the cluster's prefix, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    Claim(Option<Claim>),
    Member {
        instance: String,
        online: bool,
    },
    Hello {
        instance: String,
        nonce: String,
    },
    Who {
        instance: String,
        who: Who,
    },
    /// An answer to another run's `Who`: nothing for a member to do.
    Here,
    Sync(SyncRequest),
    Notice(Notice),
}

/// Why a message under the prefix is not understood.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("no cluster message is published on this topic")]
    Topic,
    #[error("the payload is not what this topic carries: {0}")]
    Payload(#[from] serde_json::Error),
}

/// Reads `payload` heard on `rest` (the topic after the prefix). A member
/// is offline when its payload is `offline` or empty (a cleared retained
/// message); an empty claim is no claim.
pub fn read(rest: &str, payload: &[u8], offline: &str) -> Result<Heard, WireError> {
    let heard = match rest.split_once('/') {
        None if rest == "leader" => {
            Heard::Claim(if payload.is_empty() { None } else { Some(serde_json::from_slice(payload)?) })
        }
        None if rest == "sync" => Heard::Sync(serde_json::from_slice(payload)?),
        None if rest == "notified" => Heard::Notice(serde_json::from_slice(payload)?),
        Some(("members", instance)) if !instance.contains('/') => Heard::Member {
            instance: instance.to_string(),
            online: !payload.is_empty() && payload != offline.as_bytes(),
        },
        Some(("who", instance)) if !instance.contains('/') => {
            Heard::Who { instance: instance.to_string(), who: serde_json::from_slice(payload)? }
        }
        Some(("here", instance)) if !instance.contains('/') => Heard::Here,
        Some(("hello", instance)) if !instance.contains('/') => {
            Heard::Hello { instance: instance.to_string(), nonce: String::from_utf8_lossy(payload).into_owned() }
        }
        _ => return Err(WireError::Topic),
    };
    Ok(heard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_as_written() {
        let claim = Claim { instance: "a".into(), epoch: 3, released: false };
        let bytes = serde_json::to_vec(&claim).unwrap();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), r#"{"instance":"a","epoch":3}"#);
        assert_eq!(read("leader", &bytes, "offline").unwrap(), Heard::Claim(Some(claim)));
        assert_eq!(read("leader", b"", "offline").unwrap(), Heard::Claim(None));
        let told = Told { event: "offline".into(), id: "i".into(), at: 5, done: false };
        let notice = Notice {
            by: "a".into(),
            epoch: 3,
            seq: 1,
            what: What::Transitions { transitions: vec![("d".into(), told)] },
        };
        let bytes = serde_json::to_vec(&notice).unwrap();
        assert_eq!(read("notified", &bytes, "offline").unwrap(), Heard::Notice(notice));
        assert_eq!(
            read("members/b", b"offline", "offline").unwrap(),
            Heard::Member { instance: "b".into(), online: false }
        );
        assert_eq!(
            read("members/b", b"online", "offline").unwrap(),
            Heard::Member { instance: "b".into(), online: true }
        );
    }

    #[test]
    fn what_is_not_a_cluster_message_is_an_error_not_a_panic() {
        assert!(matches!(read("leader", b"{", "offline"), Err(WireError::Payload(_))));
        assert!(matches!(read("members/a/b", b"online", "offline"), Err(WireError::Topic)));
        assert!(matches!(read("other", b"", "offline"), Err(WireError::Topic)));
        assert!(matches!(
            read("notified", br#"{"by":"a","epoch":1,"type":"x"}"#, "offline"),
            Err(WireError::Payload(_))
        ));
    }
}
