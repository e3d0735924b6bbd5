//! Watched topics: an exact topic names one device, a pattern with one `{id}`
//! level names every device whose topic matches it.
//!
//! Pure string logic: parsing a configured topic, turning it into the MQTT
//! subscription filter, and matching an incoming topic back to a device id.
//! It knows nothing of sockets or of device state.

use std::fmt;

/// The placeholder that marks the device-id level of a pattern.
pub const ID_PLACEHOLDER: &str = "{id}";

/// A configured status topic: either one exact topic or a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchedTopic {
    Exact(String),
    Pattern(TopicPattern),
}

/// A topic with exactly one `{id}` level and optionally `+` levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    levels: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    AnyOne,
    Id,
}

/// Why a configured topic cannot be watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    Empty,
    HashWildcard,
    WildcardInExactTopic,
    PartialIdLevel,
    IdMoreThanOnce,
    PartialWildcardLevel,
    NulCharacter,
    TooLong,
    WildcardInPublish,
}

/// The longest topic (and client id) MQTT can carry: a 16-bit length.
pub const MAX_MQTT_STRING: usize = 65_535;

/// Whether `topic` can be published to: not empty, no wildcard, no NUL,
/// and short enough for MQTT. Checked on every topic an action builds from
/// an event, since a device id can make it anything.
pub fn check_publish_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        Err(TopicError::Empty)
    } else if topic.len() > MAX_MQTT_STRING {
        Err(TopicError::TooLong)
    } else if topic.contains('\0') {
        Err(TopicError::NulCharacter)
    } else if topic.contains(['+', '#']) {
        Err(TopicError::WildcardInPublish)
    } else {
        Ok(())
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::Empty => "topic is empty",
            TopicError::HashWildcard => "`#` is not allowed: a device is one topic, not a subtree",
            TopicError::WildcardInExactTopic => {
                "wildcards are not allowed in a topic; use `{id}` for the level that names the device"
            }
            TopicError::PartialIdLevel => "`{id}` must be a whole topic level, like `sensors/{id}/status`",
            TopicError::IdMoreThanOnce => "`{id}` may appear only once in a topic",
            TopicError::PartialWildcardLevel => "`+` must be a whole topic level",
            TopicError::NulCharacter => "topic contains a NUL character",
            TopicError::TooLong => "topic is longer than MQTT's 65,535 bytes",
            TopicError::WildcardInPublish => "a topic to publish to cannot contain `+` or `#`",
        })
    }
}

impl WatchedTopic {
    /// Parses a configured topic. A topic with `{id}` is a pattern; `+` is
    /// allowed only in patterns (for levels such as a site name), `#` never.
    pub fn parse(topic: &str) -> Result<WatchedTopic, TopicError> {
        if topic.is_empty() {
            return Err(TopicError::Empty);
        }
        if topic.contains('\0') {
            return Err(TopicError::NulCharacter);
        }
        if topic.len() > MAX_MQTT_STRING {
            return Err(TopicError::TooLong);
        }
        if topic.contains('#') {
            return Err(TopicError::HashWildcard);
        }
        let id_count = topic.matches(ID_PLACEHOLDER).count();
        if id_count == 0 {
            if topic.contains('+') {
                return Err(TopicError::WildcardInExactTopic);
            }
            return Ok(WatchedTopic::Exact(topic.to_string()));
        }
        if id_count > 1 {
            return Err(TopicError::IdMoreThanOnce);
        }
        let levels = topic
            .split('/')
            .map(|level| match level {
                ID_PLACEHOLDER => Ok(Level::Id),
                "+" => Ok(Level::AnyOne),
                l if l.contains(ID_PLACEHOLDER) => Err(TopicError::PartialIdLevel),
                l if l.contains('+') => Err(TopicError::PartialWildcardLevel),
                l => Ok(Level::Literal(l.to_string())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WatchedTopic::Pattern(TopicPattern { levels }))
    }
}

impl TopicPattern {
    /// The subscription filter: `{id}` becomes `+`.
    pub fn filter(&self) -> String {
        self.levels
            .iter()
            .map(|level| match level {
                Level::Literal(l) => l.as_str(),
                Level::AnyOne | Level::Id => "+",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The device id if `topic` matches, taken from the `{id}` level.
    /// An empty id level (`sensors//status`) matches nothing.
    pub fn device_id<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let mut id = None;
        let mut parts = topic.split('/');
        for level in &self.levels {
            let part = parts.next()?;
            match level {
                Level::Literal(l) if l != part => return None,
                Level::Id if part.is_empty() => return None,
                Level::Id => id = Some(part),
                _ => {}
            }
        }
        if parts.next().is_some() {
            return None;
        }
        id
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self
            .levels
            .iter()
            .map(|level| match level {
                Level::Literal(l) => l.as_str(),
                Level::AnyOne => "+",
                Level::Id => ID_PLACEHOLDER,
            })
            .collect::<Vec<_>>()
            .join("/");
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(topic: &str) -> TopicPattern {
        match WatchedTopic::parse(topic).unwrap() {
            WatchedTopic::Pattern(p) => p,
            WatchedTopic::Exact(t) => panic!("{t} parsed as exact"),
        }
    }

    #[test]
    fn topics_mqtt_cannot_carry_are_refused() {
        let long = "a/".repeat(40_000);
        assert_eq!(WatchedTopic::parse(&long).unwrap_err(), TopicError::TooLong);
        assert_eq!(check_publish_topic(&long), Err(TopicError::TooLong));
        assert_eq!(check_publish_topic("alerts/+"), Err(TopicError::WildcardInPublish));
        assert_eq!(check_publish_topic("alerts/#"), Err(TopicError::WildcardInPublish));
        assert_eq!(check_publish_topic(""), Err(TopicError::Empty));
        assert_eq!(check_publish_topic("a\0b"), Err(TopicError::NulCharacter));
        assert_eq!(check_publish_topic("alerts/pump-7"), Ok(()));
    }

    #[test]
    fn exact_topic_is_kept_as_written() {
        let topic = WatchedTopic::parse("plant/pump-7/status").unwrap();
        assert_eq!(topic, WatchedTopic::Exact("plant/pump-7/status".into()));
    }

    #[test]
    fn pattern_subscribes_with_plus_and_extracts_the_id() {
        let p = pattern("sensors/{id}/status");
        assert_eq!(p.filter(), "sensors/+/status");
        assert_eq!(p.device_id("sensors/t-1/status"), Some("t-1"));
        assert_eq!(p.device_id("sensors/t-1/other"), None);
        assert_eq!(p.device_id("sensors/t-1/status/extra"), None);
        assert_eq!(p.device_id("sensors/t-1"), None);
        assert_eq!(p.device_id("sensors//status"), None);
        assert_eq!(p.to_string(), "sensors/{id}/status");
    }

    #[test]
    fn pattern_may_have_plus_levels_besides_the_id() {
        let p = pattern("site/+/{id}/state");
        assert_eq!(p.filter(), "site/+/+/state");
        assert_eq!(p.device_id("site/north/valve-2/state"), Some("valve-2"));
    }

    #[test]
    fn bad_topics_are_rejected_with_a_reason() {
        assert_eq!(WatchedTopic::parse(""), Err(TopicError::Empty));
        assert_eq!(WatchedTopic::parse("a/#"), Err(TopicError::HashWildcard));
        assert_eq!(WatchedTopic::parse("a/+/b"), Err(TopicError::WildcardInExactTopic));
        assert_eq!(WatchedTopic::parse("a/x{id}/b"), Err(TopicError::PartialIdLevel));
        assert_eq!(WatchedTopic::parse("{id}/{id}"), Err(TopicError::IdMoreThanOnce));
        assert_eq!(WatchedTopic::parse("{id}/a+"), Err(TopicError::PartialWildcardLevel));
    }
}
