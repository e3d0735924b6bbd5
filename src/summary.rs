//! The one-screen summary `willwatch check` prints for a valid config.
//!
//! Pure formatting of a `Config`; it never shows secrets, only whether
//! they are set.

use std::fmt::Write;

use crate::config::{ActionKind, BUILTIN_LOG, Config, Watch};

/// Devices listed one per line before the rest is counted.
const LISTED_DEVICES: usize = 20;

pub fn summary(config: &Config) -> String {
    let b = &config.broker;
    let mut out = String::new();
    let _ = writeln!(out, "{}: OK", config.source.display());
    let mut broker = format!("{} as {}, keep-alive {}", b.url, b.client_id, humantime::format_duration(b.keep_alive));
    if let Some(user) = &b.username {
        let password = if b.password.is_some() { "password set" } else { "no password" };
        let _ = write!(broker, ", user {user} ({password})");
    }
    if let Some(tls) = &b.tls {
        let ca = tls.ca_file.as_ref().map_or("system roots".to_string(), |p| p.display().to_string());
        let _ = write!(broker, ", TLS trusting {ca}");
        if let Some(cert) = &tls.client_cert {
            let _ = write!(broker, ", client certificate {}", cert.display());
        }
    }
    let _ = writeln!(out, "broker    {broker}");
    let p = &config.presence;
    if p.sparkplug_host {
        let _ = writeln!(out, "presence  {} (Sparkplug host STATE: birth and will, retained)", p.topic);
    } else {
        let _ = writeln!(out, "presence  {} ({} / will {}, retained)", p.topic, p.online, p.offline);
    }
    if let Some(c) = &config.cluster {
        let _ = writeln!(
            out,
            "cluster   {} as instance {} (client id {}; the leader runs the actions)",
            c.name, c.instance, b.client_id
        );
    }

    let patterns = config.devices.iter().filter(|d| matches!(d.watch, Watch::Pattern(_))).count();
    let sparkplug = config.devices.iter().filter(|d| matches!(d.watch, Watch::Sparkplug(_))).count();
    let exact = config.devices.len() - patterns - sparkplug;
    let sparkplug = if sparkplug > 0 { format!(", {sparkplug} Sparkplug level(s)") } else { String::new() };
    let _ = writeln!(
        out,
        "devices   {exact} by topic, {patterns} pattern(s){sparkplug}, {} subscription(s)",
        config.filters().len()
    );
    let width =
        config.devices.iter().take(LISTED_DEVICES).map(|d| d.watch.label().0.chars().count()).max().unwrap_or(0);
    for device in config.devices.iter().take(LISTED_DEVICES) {
        let (id, topic) = device.watch.label();
        let _ = writeln!(out, "  {id:<width$}  {topic}  → {}", device.rules.actions.join(", "));
    }
    if config.devices.len() > LISTED_DEVICES {
        let _ = writeln!(out, "  … and {} more", config.devices.len() - LISTED_DEVICES);
    }
    let mut actions = vec![format!("{BUILTIN_LOG} (built in)")];
    actions.extend(config.actions.iter().map(|(name, spec)| {
        let on: Vec<&str> = spec.on.iter().map(|k| k.as_str()).collect();
        let on = if spec.on.len() == crate::event::EventKind::ALL.len() { vec!["all events"] } else { on };
        let detail = match &spec.kind {
            ActionKind::Log => String::new(),
            // Only scheme and host: webhook URLs often carry a token.
            ActionKind::Webhook(w) => {
                format!(" {}://{}", w.url.scheme(), w.url.host_str().unwrap_or(""))
            }
            ActionKind::Reconnect(r) => match &r.topic {
                Some(topic) => format!(" → {topic}"),
                None => " → Sparkplug rebirth requests".to_string(),
            },
            ActionKind::Exec(e) => format!(" {}", e.program.display()),
            ActionKind::Publish(p) => format!(" → {}", p.topic),
        };
        format!("{name} ({}{detail}, on {})", spec.kind.name(), on.join("+"))
    }));
    let _ = writeln!(out, "actions   {}", actions.join("\n          "));
    let sync = match config.state_sync {
        crate::config::StateSync::Full => "each decision on disk before its alert",
        crate::config::StateSync::Normal => "each decision with the OS before its alert",
    };
    let _ = writeln!(
        out,
        "state     {} ({sync}); at most {} devices from patterns",
        config.state_dir.display(),
        config.max_devices
    );
    let http = config.http_listen.map_or("off".to_string(), |a| format!("http://{a} (/status, /healthz, /metrics)"));
    let _ = writeln!(out, "http      {http}");
    out
}

/// Every device's effective settings, after `[defaults]` are applied.
pub fn effective(config: &Config) -> String {
    let mut out = String::from("\neffective settings\n");
    let duration = |d: std::time::Duration| humantime::format_duration(d).to_string();
    for device in &config.devices {
        let (id, topic) = device.watch.label();
        let r = &device.rules;
        let _ = writeln!(out, "  {id} on {topic}");
        if let Some(p) = device.preset {
            let _ = writeln!(out, "    preset     {} ({})", p.name, p.source);
        }
        if r.sparkplug.is_some() {
            let _ = writeln!(out, "    payloads   Sparkplug B births and deaths (protobuf)");
        } else {
            let _ = writeln!(out, "    online     {}", r.online.join(", "));
            let _ = writeln!(out, "    offline    {}", r.offline.join(", "));
        }
        let _ = writeln!(out, "    actions    {}", r.actions.join(", "));
        let _ = writeln!(out, "    grace      {}", duration(r.grace));
        if let Some(hb) = r.heartbeat_timeout {
            let topic = device.heartbeat.as_ref().map(|h| format!(" (also {})", h.filter())).unwrap_or_default();
            let _ = writeln!(out, "    heartbeat  {}{topic}", duration(hb));
        }
        if let Some(field) = &r.state_field {
            let _ = writeln!(out, "    state at   {field}");
        }
        if let Some(field) = &r.seq_field {
            let _ = writeln!(out, "    sequence   {field}");
        }
    }
    out
}
