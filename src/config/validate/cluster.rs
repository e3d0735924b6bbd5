//! `[cluster]`: the group's name and this instance's, and what a cluster
//! changes elsewhere (the client id's default, the presence topic).

use toml::Spanned;

use super::Validator;
use crate::cluster::Settings;
use crate::config::error::Problem;
use crate::config::raw::RawCluster;

/// Longest group or instance name: they are topic levels and log fields.
const MAX_NAME: usize = 64;

impl Validator<'_> {
    /// `None` when there is no `[cluster]`; `Some(None)` when it is wrong.
    pub(super) fn cluster(&mut self, raw: Option<Spanned<RawCluster>>) -> Option<Option<Settings>> {
        let raw = raw?;
        let span = raw.span();
        let raw = raw.into_inner();
        let Some(name) = raw.name else {
            self.problem(
                Problem::new(span, "[cluster] has no `name`")
                    .hint("write name = \"plant1\": instances with the same name form one group"),
            );
            return Some(None);
        };
        let name_ok = self.cluster_name(&name, "cluster name");
        let instance = match raw.instance {
            Some(i) => self.cluster_name(&i, "instance name").then(|| i.into_inner()),
            None => match self.outside.host_name() {
                Some(host) if name_ok_text(&host) => Some(host),
                _ => {
                    self.problem(
                        Problem::new(span, "[cluster] has no `instance` and the host name cannot serve as one")
                            .hint("write instance = \"a\": each instance of the group needs its own name"),
                    );
                    None
                }
            },
        };
        Some(match (name_ok, instance) {
            (true, Some(instance)) => {
                Some(Settings { name: name.into_inner(), instance, host: self.outside.host_name().unwrap_or_default() })
            }
            _ => None,
        })
    }

    /// A group or instance name: one topic level, no wildcard, short.
    fn cluster_name(&mut self, raw: &Spanned<String>, what: &str) -> bool {
        let ok = name_ok_text(raw.get_ref());
        if !ok {
            self.problem(
                Problem::new(raw.span(), format!("{what} `{}` is not usable in a topic", raw.get_ref()))
                    .hint(format!("use 1 to {MAX_NAME} letters, digits, `-`, `_` or `.`")),
            );
        }
        ok
    }
}

fn name_ok_text(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Validator<'_> {
    /// In a cluster the presence is the instance's membership: its peers
    /// watch it (`willwatch/cluster/<name>/members/<instance>`), so only its
    /// payloads may be set.
    pub(super) fn cluster_presence(
        &mut self,
        raw: Option<Spanned<crate::config::raw::RawPresence>>,
        cluster: &Settings,
    ) -> Option<crate::config::Presence> {
        let span = raw.as_ref().map_or(0..0, Spanned::span);
        let (mut online, mut offline) = (None, None);
        if let Some(raw) = raw.map(Spanned::into_inner) {
            for key in [raw.topic, raw.sparkplug_host_id].into_iter().flatten() {
                self.problem(
                    Problem::new(key.span(), "in a [cluster] the presence topic is the instance's membership").hint(
                        format!(
                            "its peers watch {}: remove `topic` and `sparkplug_host_id`",
                            crate::cluster::wire::member_topic(&cluster.name, &cluster.instance)
                        ),
                    ),
                );
            }
            (online, offline) = (raw.online, raw.offline);
        }
        let online = self.payload(online, "online");
        let offline = self.payload(offline, "offline");
        if online.is_some() && online == offline {
            self.problem(Problem::new(span, "presence `online` and `offline` are the same payload"));
            return None;
        }
        Some(crate::config::Presence {
            topic: crate::cluster::wire::member_topic(&cluster.name, &cluster.instance),
            online: online?,
            offline: offline?,
            sparkplug_host: false,
        })
    }
}
