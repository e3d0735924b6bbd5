//! `[[sparkplug]]` → two device specs (the edge nodes, and their devices
//! unless `devices = false`) and `[presence] sparkplug_host_id`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use toml::Spanned;

use super::Validator;
use crate::config::error::Problem;
use crate::config::raw::RawSparkplug;
use crate::config::{ActionSpec, DeviceSpec, Rules, SparkplugLevel, SparkplugWatch, Watch};

impl Validator<'_> {
    pub(super) fn sparkplug(
        &mut self,
        raw: Vec<Spanned<RawSparkplug>>,
        defaults: &Rules,
        actions: &BTreeMap<String, ActionSpec>,
    ) -> Vec<DeviceSpec> {
        let mut seen: HashMap<(String, Vec<String>), usize> = HashMap::new();
        let mut out = Vec::new();
        for entry in raw {
            let span = entry.span();
            let entry = entry.into_inner();
            let Some(group) = entry.group else {
                self.problem(
                    Problem::new(span, "this [[sparkplug]] has no `group`")
                        .hint("write group = \"plant1\", or group = \"+\" for every group"),
                );
                continue;
            };
            let group_ok = group.get_ref() == "+" || self.sparkplug_id(&group, "group");
            let nodes = self.edge_nodes(entry.edge_nodes);
            if !group_ok {
                continue;
            }
            let Some(nodes) = nodes else { continue };
            if let Some(first) = seen.insert((group.get_ref().clone(), nodes.clone()), group.span().start) {
                self.problem(
                    Problem::new(group.span(), format!("Sparkplug group `{}` is watched twice", group.get_ref()))
                        .hint(self.first_at(first)),
                );
                continue;
            }
            let rules = Rules {
                online: Vec::new(),
                offline: Vec::new(),
                actions: self.action_names(entry.actions, &defaults.actions, actions),
                grace: self.grace(entry.grace, defaults.grace),
                heartbeat_timeout: None,
                state_field: None,
                seq_field: None,
                severity: self.severity(entry.severity).or_else(|| defaults.severity.clone()),
                parent: self.parent(entry.parent),
                sparkplug: Some(SparkplugLevel::Node { with_devices: true }),
                retained: false,
            };
            let max_devices = self.max_devices(entry.max_devices.as_ref());
            let watch = |level| {
                Watch::Sparkplug(SparkplugWatch { group: group.get_ref().clone(), nodes: nodes.clone(), level })
            };
            let spec = |watch, rules| DeviceSpec {
                watch,
                heartbeat: None,
                rules: Arc::new(rules),
                max_devices,
                id_template: None,
                exclude: Vec::new(),
                preset: None,
            };
            let with_devices = entry.devices.as_ref().is_none_or(|d| *d.get_ref());
            let node = SparkplugLevel::Node { with_devices };
            if with_devices {
                let device_rules = Rules { parent: None, sparkplug: Some(SparkplugLevel::Device), ..rules.clone() };
                out.push(spec(watch(node), Rules { sparkplug: Some(node), ..rules }));
                out.push(spec(watch(SparkplugLevel::Device), device_rules));
            } else {
                out.push(spec(watch(node), Rules { sparkplug: Some(node), ..rules }));
            }
        }
        out
    }

    /// `edge_nodes`: ids, or `["+"]` (the same as leaving it out) for every
    /// node. `None` when one is wrong.
    fn edge_nodes(&mut self, raw: Option<crate::config::raw::SpannedList>) -> Option<Vec<String>> {
        let Some(raw) = raw else { return Some(Vec::new()) };
        let span = raw.span();
        let list = raw.into_inner();
        if list.is_empty() {
            self.problem(
                Problem::new(span, "`edge_nodes` lists no node").hint("leave it out (or write [\"+\"]) for every node"),
            );
            return None;
        }
        if list.len() == 1 && list[0].get_ref() == "+" {
            return Some(Vec::new());
        }
        let mut ok = true;
        let mut out = Vec::new();
        for node in list {
            if node.get_ref() == "+" {
                self.problem(Problem::new(node.span(), "`+` stands for every node; it cannot be listed with others"));
                ok = false;
            } else if self.sparkplug_id(&node, "edge node") && !out.contains(node.get_ref()) {
                out.push(node.into_inner());
            }
        }
        ok.then_some(out)
    }

    /// A Sparkplug group or node id: one topic level, no wildcard.
    pub(super) fn sparkplug_id(&mut self, raw: &Spanned<String>, what: &str) -> bool {
        let id = raw.get_ref();
        let ok = !id.is_empty() && !id.contains(['/', '+', '#']) && !id.chars().any(char::is_control);
        if !ok {
            self.problem(Problem::new(
                raw.span(),
                format!("Sparkplug {what} id `{id}` must be one topic level: not empty, without `/`, `+`, `#`"),
            ));
        }
        ok
    }
}
