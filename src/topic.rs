//! Watched topics: an exact topic names one device, a pattern with one `{id}`
//! level names every device whose topic matches it, and one `{*id}` (one or
//! more whole levels: Zigbee2MQTT's `kitchen/floor_light`) names them by
//! the levels it covers.
//!
//! Pure string logic: parsing a configured topic, turning it into the MQTT
//! subscription filter, and matching an incoming topic back to a device id.
//! It knows nothing of sockets or of device state.

use std::fmt;

/// The placeholder that marks the device-id level of a pattern.
pub const ID_PLACEHOLDER: &str = "{id}";

/// The placeholder for a device id of one or more whole levels.
pub const MULTI_ID_PLACEHOLDER: &str = "{*id}";

/// A configured status topic: either one exact topic or a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchedTopic {
    Exact(String),
    Pattern(TopicPattern),
}

/// A topic with exactly one `{id}` or `{*id}` level and optionally `+`
/// levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    levels: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    AnyOne,
    Id,
    /// One or more levels.
    MultiId,
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

/// The longest topic a device is watched on, configured or heard: past it
/// a topic is someone filling the device table, not a device.
pub const MAX_DEVICE_TOPIC: usize = 1_024;

/// The longest device id, configured (an `id`, a pattern's id template) or
/// made from a topic.
pub const MAX_DEVICE_ID: usize = 256;

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
            TopicError::IdMoreThanOnce => "`{id}` (or `{*id}`) may appear only once in a topic",
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
        let id_count = topic.matches(ID_PLACEHOLDER).count() + topic.matches(MULTI_ID_PLACEHOLDER).count();
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
                MULTI_ID_PLACEHOLDER => Ok(Level::MultiId),
                "+" => Ok(Level::AnyOne),
                l if l.contains(ID_PLACEHOLDER) || l.contains(MULTI_ID_PLACEHOLDER) => Err(TopicError::PartialIdLevel),
                l if l.contains('+') => Err(TopicError::PartialWildcardLevel),
                l => Ok(Level::Literal(l.to_string())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WatchedTopic::Pattern(TopicPattern { levels }))
    }
}

impl TopicPattern {
    /// The subscription filter: `{id}` becomes `+`; `{*id}` and what
    /// follows it become `#` (MQTT has no wildcard for "some levels, then
    /// these"), and `device_id` sorts out the rest.
    pub fn filter(&self) -> String {
        let mut out = Vec::new();
        for level in &self.levels {
            match level {
                Level::Literal(l) => out.push(l.as_str()),
                Level::AnyOne | Level::Id => out.push("+"),
                Level::MultiId => {
                    out.push("#");
                    break;
                }
            }
        }
        out.join("/")
    }

    /// Whether the pattern starts with a level that matches anything
    /// (`{id}/status`, `+/{id}`): it catches other software's topics.
    pub fn starts_with_wildcard(&self) -> bool {
        !matches!(self.levels.first(), Some(Level::Literal(_)))
    }

    /// The device id if `topic` matches, taken from the `{id}` level or
    /// the levels `{*id}` covers. An empty id level (`sensors//status`)
    /// matches nothing.
    pub fn device_id<'t>(&self, topic: &'t str) -> Option<&'t str> {
        // Each level of the topic with where it starts.
        let mut parts: Vec<(usize, &str)> = Vec::new();
        let mut start = 0;
        for part in topic.split('/') {
            parts.push((start, part));
            start += part.len() + 1;
        }
        let multi = self.levels.iter().position(|l| *l == Level::MultiId);
        let (before, after) = match multi {
            Some(i) => (&self.levels[..i], &self.levels[i + 1..]),
            None => (&self.levels[..], &[][..]),
        };
        if parts.len() < before.len() + after.len() + usize::from(multi.is_some())
            || (multi.is_none() && parts.len() != before.len())
        {
            return None;
        }
        let mut id = None;
        let aligned = before.iter().zip(&parts).chain(after.iter().zip(&parts[parts.len() - after.len()..]));
        for (level, &(at, part)) in aligned {
            match level {
                Level::Literal(l) if l != part => return None,
                Level::Id if part.is_empty() => return None,
                Level::Id => id = Some(&topic[at..at + part.len()]),
                _ => {}
            }
        }
        if multi.is_some() {
            let covered = &parts[before.len()..parts.len() - after.len()];
            if covered.iter().any(|(_, p)| p.is_empty()) {
                return None;
            }
            let (first, last) = (covered[0], covered[covered.len() - 1]);
            id = Some(&topic[first.0..last.0 + last.1.len()]);
        }
        id
    }
}

impl TopicPattern {
    /// Whether every topic this pattern matches also matches the MQTT
    /// filter `filter` (an `exclude` that would leave it nothing): `#`
    /// covers whatever is left, `+` one level of any name (not `{*id}`,
    /// which may be several), a name only itself.
    pub fn covered_by(&self, filter: &str) -> bool {
        let wants: Vec<&str> = filter.split('/').collect();
        // A filter that starts with a wildcard does not match `$` topics.
        if matches!(self.levels.first(), Some(Level::Literal(l)) if l.starts_with('$'))
            && matches!(wants.first(), Some(&("+" | "#")))
        {
            return false;
        }
        let mut levels = self.levels.iter();
        for want in wants {
            match (want, levels.next()) {
                ("#", _) => return true,
                (_, None) => return false,
                ("+", Some(Level::Literal(_) | Level::AnyOne | Level::Id)) => {}
                (want, Some(Level::Literal(l))) if want == l => {}
                _ => return false,
            }
        }
        levels.next().is_none()
    }
}

/// Whether `topic` matches the MQTT subscription filter `filter` (`+` one
/// level, `#` the rest; a filter of `$`-topics only matches those).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') != filter.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut levels = topic.split('/');
    for want in filter.split('/') {
        match (want, levels.next()) {
            ("#", _) => return true,
            (_, None) => return false,
            ("+", Some(_)) => {}
            (want, Some(level)) if want == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
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
                Level::MultiId => MULTI_ID_PLACEHOLDER,
            })
            .collect::<Vec<_>>()
            .join("/");
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_covers_a_pattern_only_when_it_matches_every_topic_of_it() {
        let pattern = |t: &str| match WatchedTopic::parse(t).unwrap() {
            WatchedTopic::Pattern(p) => p,
            WatchedTopic::Exact(_) => panic!("{t} is exact"),
        };
        let p = pattern("fleet/{id}/status");
        for all in ["#", "fleet/#", "+/+/status", "+/#", "fleet/+/+", "fleet/+/status", "fleet/+/status/#"] {
            assert!(p.covered_by(all), "{all}");
        }
        for some in ["fleet/x/status", "fleet/+", "fleet/+/status/x", "other/#", "+/+", "fleet/+/+/+"] {
            assert!(!p.covered_by(some), "{some}");
        }
        let multi = pattern("z2m/{*id}/availability");
        assert!(multi.covered_by("z2m/#") && !multi.covered_by("z2m/+/availability"));
        assert!(pattern("site/+/{id}").covered_by("site/+/+"));
        assert!(!pattern("$SYS/{id}").covered_by("#"), "a wildcard first matches no `$` topic");
        assert!(pattern("$SYS/{id}").covered_by("$SYS/#"));
    }

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

    #[test]
    fn a_multi_level_id_covers_one_or_more_whole_levels() {
        let p = pattern("zigbee2mqtt/{*id}/availability");
        assert_eq!(p.filter(), "zigbee2mqtt/#");
        assert_eq!(p.device_id("zigbee2mqtt/kitchen/floor_light/availability"), Some("kitchen/floor_light"));
        assert_eq!(p.device_id("zigbee2mqtt/bulb/availability"), Some("bulb"));
        assert_eq!(p.device_id("zigbee2mqtt/availability"), None, "at least one level");
        assert_eq!(p.device_id("zigbee2mqtt/bulb/state"), None);
        assert_eq!(p.device_id("zigbee2mqtt/a//b/availability"), None, "no empty level");
        assert_eq!(p.device_id("other/bulb/availability"), None);
        assert_eq!(p.to_string(), "zigbee2mqtt/{*id}/availability");
        let tail = pattern("tele/{*id}");
        assert_eq!(tail.device_id("tele/a/b/c"), Some("a/b/c"));
        assert!(matches!(WatchedTopic::parse("a/{*id}/{id}"), Err(TopicError::IdMoreThanOnce)));
        assert!(matches!(WatchedTopic::parse("a/x{*id}"), Err(TopicError::PartialIdLevel)));
    }

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(filter_matches("homeassistant/status", "homeassistant/status"));
        assert!(filter_matches("octoprint/+", "octoprint/status"));
        assert!(!filter_matches("octoprint/+", "octoprint/a/status"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(filter_matches("a/#", "a"), "`#` includes the parent level");
        assert!(!filter_matches("+/status", "$SYS/status"));
        assert!(!filter_matches("a/b", "a/b/c"));
    }

    proptest::proptest! {
        /// A topic built from a pattern's levels gives back the id it was
        /// built with, and the pattern's subscription filter covers it.
        #[test]
        fn built_topics_give_back_their_id(
            prefix in proptest::collection::vec("[a-z0-9]{1,6}", 0..3),
            id in proptest::collection::vec("[a-z0-9_-]{1,6}", 1..4),
            suffix in proptest::collection::vec("[a-z0-9]{1,6}", 0..3),
            multi in proptest::bool::ANY,
        ) {
            let id_levels = if multi { id.clone() } else { id[..1].to_vec() };
            let placeholder = if multi { MULTI_ID_PLACEHOLDER } else { ID_PLACEHOLDER };
            let join = |v: &[String], mid: &str| {
                prefix.iter().map(String::as_str).chain([mid]).chain(v.iter().map(String::as_str)).collect::<Vec<_>>().join("/")
            };
            let p = pattern(&join(&suffix, placeholder));
            let topic = join(&suffix, &id_levels.join("/"));
            let want = id_levels.join("/");
            proptest::prop_assert_eq!(p.device_id(&topic), Some(want.as_str()));
            proptest::prop_assert!(filter_matches(&p.filter(), &topic));
        }
    }
}
