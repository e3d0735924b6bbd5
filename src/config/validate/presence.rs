//! `[presence]`: willwatch's own will and birth, plain or as a Sparkplug
//! host's STATE, and the payload words of devices.

use toml::Spanned;

use super::Validator;
use crate::config::Presence;
use crate::config::error::Problem;
use crate::config::raw::{RawPresence, SpannedList};
use crate::topic::WatchedTopic;

impl Validator<'_> {
    pub(in crate::config) fn presence(
        &mut self,
        raw: Option<Spanned<RawPresence>>,
        client_id: Option<&str>,
    ) -> Option<Presence> {
        let (span, raw) = match raw {
            Some(r) => (r.span(), r.into_inner()),
            None => (0..0, RawPresence { sparkplug_host_id: None, topic: None, online: None, offline: None }),
        };
        if let Some(host_id) = raw.sparkplug_host_id {
            return self.sparkplug_host(host_id, [raw.topic, raw.online, raw.offline]);
        }
        let topic = match raw.topic {
            Some(t) => match WatchedTopic::parse(t.get_ref()) {
                Ok(WatchedTopic::Exact(topic)) => Some(topic),
                Ok(WatchedTopic::Pattern(_)) => {
                    self.problem(Problem::new(
                        t.span(),
                        "the presence topic is the daemon's own; it cannot have `{id}`",
                    ));
                    None
                }
                Err(e) => {
                    self.problem(Problem::new(t.span(), format!("presence `topic`: {e}")));
                    None
                }
            },
            None => client_id.map(|id| format!("willwatch/{id}/status")),
        };
        let online = self.payload(raw.online, "online");
        let offline = self.payload(raw.offline, "offline");
        if online.is_some() && online == offline {
            self.problem(Problem::new(span, "presence `online` and `offline` are the same payload"));
            return None;
        }
        Some(Presence { topic: topic?, online: online?, offline: offline?, sparkplug_host: false })
    }

    /// `sparkplug_host_id`: the presence is the host application's STATE.
    /// One connection has one will, so it replaces the plain presence.
    pub(in crate::config) fn sparkplug_host(
        &mut self,
        host_id: Spanned<String>,
        plain: [Option<Spanned<String>>; 3],
    ) -> Option<Presence> {
        let mut ok = self.sparkplug_id(&host_id, "host");
        for key in plain.into_iter().flatten() {
            self.problem(
                Problem::new(key.span(), "with `sparkplug_host_id` the presence is the host's Sparkplug STATE")
                    .hint("an MQTT connection has one will: remove `topic`, `online` and `offline`"),
            );
            ok = false;
        }
        ok.then(|| Presence {
            topic: crate::sparkplug::topic::state_topic(host_id.get_ref()),
            online: String::new(),
            offline: String::new(),
            sparkplug_host: true,
        })
    }

    pub(in crate::config) fn payload(&mut self, raw: Option<Spanned<String>>, default: &str) -> Option<String> {
        match raw {
            None => Some(default.to_string()),
            Some(p) if p.get_ref().trim() != p.get_ref() && !p.get_ref().trim().is_empty() => {
                let trimmed = p.get_ref().trim().to_string();
                self.problem(
                    Problem::new(
                        p.span(),
                        format!(
                            "payload `{}` has spaces around it, which are ignored in what devices send",
                            p.get_ref()
                        ),
                    )
                    .hint(format!("write \"{trimmed}\"")),
                );
                None
            }
            Some(p) if p.get_ref().is_empty() => {
                self.problem(Problem::new(
                    p.span(),
                    "an empty payload clears a retained message; it cannot mean a state",
                ));
                None
            }
            Some(p) => Some(p.into_inner()),
        }
    }

    pub(in crate::config) fn payloads(
        &mut self,
        raw: Option<SpannedList>,
        default: &[String],
        key: &str,
    ) -> Vec<String> {
        let Some(list) = raw else {
            return default.to_vec();
        };
        if list.get_ref().is_empty() {
            self.problem(Problem::new(list.span(), format!("`{key}` lists no payloads")));
        }
        let mut out = Vec::new();
        for p in list.into_inner() {
            match self.payload(Some(p), "") {
                Some(p) if !out.contains(&p) => out.push(p),
                _ => {}
            }
        }
        out
    }
}
