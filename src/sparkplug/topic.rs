//! Sparkplug B topics: `spBv1.0/<group>/<verb>/<edge node>[/<device>]`.

/// The first level of every Sparkplug B topic.
pub const NAMESPACE: &str = "spBv1.0";

/// The message types willwatch reads (commands and STATE are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    NBirth,
    NDeath,
    NData,
    DBirth,
    DDeath,
    DData,
}

impl Verb {
    pub const NODE: [Verb; 3] = [Verb::NBirth, Verb::NDeath, Verb::NData];
    pub const DEVICE: [Verb; 3] = [Verb::DBirth, Verb::DDeath, Verb::DData];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::NBirth => "NBIRTH",
            Verb::NDeath => "NDEATH",
            Verb::NData => "NDATA",
            Verb::DBirth => "DBIRTH",
            Verb::DDeath => "DDEATH",
            Verb::DData => "DDATA",
        }
    }

    /// Whether it is about a device of the node rather than the node.
    pub fn of_device(self) -> bool {
        Verb::DEVICE.contains(&self)
    }
}

/// A Sparkplug topic willwatch reads, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'t> {
    pub group: &'t str,
    pub verb: Verb,
    pub node: &'t str,
    /// Present exactly for the device verbs.
    pub device: Option<&'t str>,
}

impl<'t> Topic<'t> {
    /// Splits `topic`; `None` for anything but a node or device message
    /// of a verb willwatch reads.
    pub fn parse(topic: &'t str) -> Option<Topic<'t>> {
        let mut levels = topic.strip_prefix(NAMESPACE)?.strip_prefix('/')?.split('/');
        let group = levels.next().filter(|g| !g.is_empty())?;
        let verb = levels.next()?;
        let verb = Verb::NODE.into_iter().chain(Verb::DEVICE).find(|v| v.as_str() == verb)?;
        let node = levels.next().filter(|n| !n.is_empty())?;
        let device = levels.next();
        if levels.next().is_some() || device.is_some() != verb.of_device() || device == Some("") {
            return None;
        }
        Some(Topic { group, verb, node, device })
    }

    /// The id of what it is about: `<group>/<node>`, or
    /// `<group>/<node>/<device>`.
    pub fn id(&self) -> String {
        match self.device {
            None => format!("{}/{}", self.group, self.node),
            Some(device) => format!("{}/{}/{}", self.group, self.node, device),
        }
    }

    /// The id of its edge node.
    pub fn node_id(&self) -> String {
        format!("{}/{}", self.group, self.node)
    }

    /// The topic a device records as its own: its death's.
    pub fn death_topic(&self) -> String {
        match self.device {
            None => format!("{NAMESPACE}/{}/NDEATH/{}", self.group, self.node),
            Some(device) => format!("{NAMESPACE}/{}/DDEATH/{}/{}", self.group, self.node, device),
        }
    }
}

/// Where a node takes commands (a rebirth request): from the topic any of
/// its messages or its devices' came on.
pub fn command_topic(topic: &str) -> Option<String> {
    Topic::parse(topic).map(|t| format!("{NAMESPACE}/{}/NCMD/{}", t.group, t.node))
}

/// The subscription filter for `verb` in `group` (or `+`) for `node` (or
/// `+`); device verbs cover every device of the node.
pub fn filter(group: &str, verb: Verb, node: &str) -> String {
    let tail = if verb.of_device() { "/+" } else { "" };
    format!("{NAMESPACE}/{group}/{}/{node}{tail}", verb.as_str())
}

/// The topic of a host application's STATE (Sparkplug 3.0).
pub fn state_topic(host_id: &str) -> String {
    format!("{NAMESPACE}/STATE/{host_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_node_and_device_topics() {
        let node = Topic::parse("spBv1.0/plant/NDEATH/press-1").unwrap();
        assert_eq!((node.group, node.verb, node.node, node.device), ("plant", Verb::NDeath, "press-1", None));
        assert_eq!(node.id(), "plant/press-1");
        let device = Topic::parse("spBv1.0/plant/DBIRTH/press-1/motor").unwrap();
        assert_eq!(device.id(), "plant/press-1/motor");
        assert_eq!(device.node_id(), "plant/press-1");
        assert_eq!(device.death_topic(), "spBv1.0/plant/DDEATH/press-1/motor");
        assert_eq!(command_topic("spBv1.0/plant/DDATA/press-1/motor").unwrap(), "spBv1.0/plant/NCMD/press-1");
    }

    #[test]
    fn refuses_what_is_not_a_node_or_device_message() {
        for topic in [
            "spBv1.0/STATE/host",
            "spBv1.0/plant/NCMD/press-1",
            "spBv1.0/plant/NBIRTH/press-1/extra",
            "spBv1.0/plant/DBIRTH/press-1",
            "spBv1.0//NBIRTH/n",
            "spAv1.0/plant/NBIRTH/n",
            "spBv1.0/plant/DDEATH/n/",
        ] {
            assert_eq!(Topic::parse(topic), None, "{topic}");
        }
    }

    #[test]
    fn filters_cover_devices_with_one_level() {
        assert_eq!(filter("+", Verb::NBirth, "+"), "spBv1.0/+/NBIRTH/+");
        assert_eq!(filter("plant", Verb::DDeath, "n1"), "spBv1.0/plant/DDEATH/n1/+");
    }

    proptest! {
        /// A topic built from its parts splits back into them, and its
        /// filter matches it.
        #[test]
        fn topics_round_trip(group in "[a-z0-9-]{1,8}", node in "[a-z0-9-]{1,8}", device in proptest::option::of("[a-z0-9]{1,8}"), v in 0..3usize) {
            let verb = if device.is_some() { Verb::DEVICE[v] } else { Verb::NODE[v] };
            let tail = device.as_ref().map(|d| format!("/{d}")).unwrap_or_default();
            let text = format!("{NAMESPACE}/{group}/{}/{node}{tail}", verb.as_str());
            let topic = Topic::parse(&text).unwrap();
            prop_assert_eq!((topic.group, topic.node, topic.device), (group.as_str(), node.as_str(), device.as_deref()));
            prop_assert!(crate::topic::filter_matches(&filter(&group, verb, "+"), &text));
        }
    }
}
