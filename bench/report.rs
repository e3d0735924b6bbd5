//! BENCHMARKS.md: the figures with the machine, versions, broker settings
//! and the command that reproduces them.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use crate::broker;
use crate::chat_storm::ChatStorm;
use crate::contestants::{Latency, Steady};
use crate::ecosystem::Ecosystem;
use crate::failover::Run as Failover;
use crate::flat::Flat;
use crate::history::Run as HistoryRun;
use crate::reads::Reads;
use crate::reread::Reread;
use crate::soak::Soak;
use crate::sparkplug::Run as Sparkplug;
use crate::storm::Storm;

#[derive(Default)]
pub struct Times {
    pub mosquitto_sub: Vec<Duration>,
    pub rumqttc: Vec<Duration>,
    pub willwatch: Vec<Duration>,
    pub mosquitto_sub_cpu: Vec<Duration>,
    pub willwatch_cpu: Vec<Duration>,
    pub rss_kib: u64,
    pub paho: Vec<Duration>,
    pub paho_rss_kib: u64,
}

pub struct Report {
    machine: String,
    versions: String,
    smoke: bool,
    pub bursts: Vec<(usize, Times)>,
    pub latency: Vec<Latency>,
    pub throughput: Vec<Steady>,
    pub storms: Vec<Storm>,
    pub chat_storm: Option<ChatStorm>,
    pub rereads: Vec<Reread>,
    pub ecosystem: Option<Ecosystem>,
    pub sparkplug: Option<Sparkplug>,
    pub history: Option<HistoryRun>,
    pub failover: Option<Failover>,
    pub soak: Option<Soak>,
    pub reads: Option<Reads>,
    pub flats: Vec<Flat>,
}

/// BENCHMARKS.md keeps what follows this line when the benchmark rewrites it.
pub const KEPT: &str = "<!-- Below: figures measured by other means; the benchmark keeps them. -->";

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn command(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(if o.stdout.is_empty() { &o.stderr } else { &o.stdout })
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|_| "unknown".into())
}

impl Report {
    pub fn new(willwatch: &Path, smoke: bool) -> Report {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0) / 1024 / 1024)
            })
            .unwrap_or(0);
        let machine = format!("{cpu}, {cores} cores, {memory} GiB, {}", command("uname", &["-sr"]));
        let versions = format!(
            "{}; mosquitto {}; {}",
            command(willwatch.to_str().unwrap_or("willwatch"), &["--version"]),
            command("sh", &["-c", "mosquitto -h | head -1 | sed 's/.*version //'"]),
            command("rustc", &["--version"])
        );
        Report {
            machine,
            versions,
            smoke,
            bursts: Vec::new(),
            latency: Vec::new(),
            throughput: Vec::new(),
            storms: Vec::new(),
            chat_storm: None,
            rereads: Vec::new(),
            ecosystem: None,
            sparkplug: None,
            history: None,
            failover: None,
            soak: None,
            reads: None,
            flats: Vec::new(),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::from("# willwatch benchmarks\n\n");
        if self.smoke {
            out.push_str("**Smoke run: toy sizes, figures mean nothing.**\n\n");
        }
        let _ = writeln!(
            out,
            "Reproduce: `cargo build --release && cargo run --release --example bench` (writes this file).\n"
        );
        let _ = writeln!(out, "- Machine: {}", self.machine);
        let _ = writeln!(out, "- Versions: {}", self.versions);
        let _ = writeln!(
            out,
            "- Broker: one local mosquitto started by the benchmark with:\n\n```\n{}```\n",
            broker::CONFIG
        );
        let _ = writeln!(
            out,
            "Contestants run interleaved (mosquitto_sub, rumqttc, willwatch, then again), medians of the rounds.\n"
        );

        if !self.bursts.is_empty() {
            out.push_str("## Retained burst: subscribe → every status known\n\n");
            out.push_str("| devices | mosquitto_sub -C N (ms) | bare rumqttc (ms) | willwatch (ms) | willwatch / mosquitto_sub | mosquitto_sub CPU (s) | willwatch CPU (s) | willwatch peak RSS | paho-mqtt script (ms) | its peak RSS |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for (n, t) in &self.bursts {
                let (m, r, w) = (median(&t.mosquitto_sub), median(&t.rumqttc), median(&t.willwatch));
                let paho = if t.paho.is_empty() {
                    "not run | -".to_string()
                } else {
                    format!("{} | {:.1} MB", ms(median(&t.paho)), t.paho_rss_kib as f64 / 1024.0)
                };
                let _ = writeln!(
                    out,
                    "| {n} | {} | {} | {} | {:.2}× | {:.2} | {:.2} | {:.1} MB | {paho} |",
                    ms(m),
                    ms(r),
                    ms(w),
                    w.as_secs_f64() / m.as_secs_f64(),
                    median(&t.mosquitto_sub_cpu).as_secs_f64(),
                    median(&t.willwatch_cpu).as_secs_f64(),
                    t.rss_kib as f64 / 1024.0
                );
            }
            out.push_str("\nwillwatch is timed from process start (config load included) until `/metrics` reports every device online; the paho-mqtt script (`bench/peer_paho.py`, the plain script users write for this job) from process start until it knows every device. CPU is user + system time from the kernel: willwatch's from `/proc/PID/stat` when every device is known (start-up included), mosquitto_sub's from `getrusage(RUSAGE_CHILDREN)` once it exits; medians of the rounds. The peak RSS is the kernel's high-water mark (`VmHWM`) a second after the burst, the state database's writes included.\n\n");
        }
        if !self.latency.is_empty() {
            out.push_str("## Detection latency: will seen by a plain subscriber → webhook request received\n\n");
            out.push_str(
                "| watcher | samples | p50 (ms) | p99 (ms) | max (ms) | peak RSS |\n|---|---:|---:|---:|---:|---:|\n",
            );
            for l in &self.latency {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.2} | {:.2} | {:.2} | {:.1} MB |",
                    l.watcher,
                    l.samples,
                    l.p50.as_secs_f64() * 1e3,
                    l.p99.as_secs_f64() * 1e3,
                    l.max.as_secs_f64() * 1e3,
                    l.peak_rss_kib as f64 / 1024.0
                );
            }
            let _ = write!(
                out,
                "\nDevices are killed 20 ms apart; willwatch with `grace = 0`, `settle = 0`; each offline is committed to the state database before its webhook goes out: with `state_sync = \"full\"` (the default) that commit waits for an fsync, with `\"normal\"` only for the OS.{}\n\n",
                if self.latency.iter().any(|l| l.watcher == "mqttwarn") {
                    " mqttwarn (PyPI) with its `http_urllib` service, one GET per message."
                } else {
                    ""
                }
            );
        }
        if !self.throughput.is_empty() {
            out.push_str("## Steady flips (open loop, QoS 0, 1,000 devices)\n\n| rate (msg/s) | sent | bare counter received | willwatch received | willwatch / counter | willwatch CPU (s) |\n|---:|---:|---:|---:|---:|---:|\n");
            for s in &self.throughput {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {:.3} | {:.2} |",
                    s.rate,
                    s.sent,
                    s.counter,
                    s.willwatch,
                    s.willwatch as f64 / s.counter.max(1) as f64,
                    s.cpu.as_secs_f64()
                );
            }
        }
        if !self.storms.is_empty() {
            out.push_str("\n## Alert storm: every device offline at once → every webhook received\n\n| devices | first will → last webhook (ms) | per offline (ms) | willwatch peak RSS |\n|---:|---:|---:|---:|\n");
            for s in &self.storms {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.3} | {:.1} MB |",
                    s.devices,
                    ms(s.elapsed),
                    s.elapsed.as_secs_f64() * 1e3 / s.devices as f64,
                    s.peak_rss_kib as f64 / 1024.0
                );
            }
            out.push_str("\nEach offline is committed to the state database (fsync) before its webhook goes out; the wills are published back to back by one client, retained, QoS 1; the webhook action at its defaults (concurrency 4).\n");
        }
        if let Some(c) = &self.chat_storm {
            out.push_str("\n## Alert storm to a chat service: one message a second\n\n| devices | messages taken | refused for coming early | devices named | most in one message | shortest gap (ms) | first will → last device named (s) | given up |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {} |",
                c.devices,
                c.requests,
                c.refused,
                c.named,
                c.largest,
                ms(c.min_gap),
                c.elapsed.as_secs_f64(),
                c.given_up
            );
            out.push_str("\nEvery device goes offline at once; a `slack` action at its defaults (`min_interval = \"1s\"`) notifies a local receiver that answers 429 with `Retry-After: 1` to a request sooner than 950 ms after the one before (as a rate-limited service would) and reads every device name out of each message's text. A digest holds up to 100 events and 500 bytes of names.\n");
        }
        if let Some(e) = &self.ecosystem {
            out.push_str("\n## Retained burst through a preset and a multi-level pattern\n\n| devices | telemetry messages in the tree | mosquitto_sub -C 2N (ms) | willwatch (ms) | willwatch / mosquitto_sub | mosquitto_sub CPU (s) | willwatch CPU (s) | willwatch peak RSS |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            let (m, w) = (median(&e.mosquitto_sub), median(&e.willwatch));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2}× | {:.2} | {:.2} | {:.1} MB |",
                e.devices,
                e.devices,
                ms(m),
                ms(w),
                w.as_secs_f64() / m.as_secs_f64(),
                median(&e.mosquitto_sub_cpu).as_secs_f64(),
                median(&e.willwatch_cpu).as_secs_f64(),
                e.peak_rss_kib as f64 / 1024.0
            );
            out.push_str("\nwillwatch with `preset = \"zigbee2mqtt\"` (`zigbee2mqtt/{*id}/availability`, JSON `/state`): devices named `room-7/dev-42`, each with its retained availability and its retained telemetry, so its `zigbee2mqtt/#` subscription replays twice as many messages as there are devices; mosquitto_sub on the same filter receives all of them. Timed as the burst above.\n");
            if let Some((rate, devices, sent, received)) = e.steady {
                let _ = writeln!(
                    out,
                    "\nSteady through the same preset, open loop, QoS 0, {devices} devices: {rate} messages a second (an availability flip, then a telemetry message, in turn): {sent} sent, {received} taken in by willwatch{}.",
                    if received > sent { " (every one, and the re-read a storm of offlines asks for)" } else { "" }
                );
            }
        }
        if let Some(s) = &self.sparkplug {
            render_sparkplug(&mut out, s);
        }
        if let Some(h) = &self.history {
            render_history(&mut out, h);
        }
        if let Some(f) = &self.failover {
            render_failover(&mut out, f);
        }
        if !self.rereads.is_empty() {
            out.push_str("\n## Re-reads: what offlines cost beyond their wills\n\n| devices | offlines at once | extra messages received | first will → intake quiet (ms) |\n|---:|---:|---:|---:|\n");
            for r in &self.rereads {
                let _ = writeln!(out, "| {} | {} | {} | {} |", r.devices, r.offlines, r.extra_messages, ms(r.settled));
            }
            out.push_str("\nThe devices are known online (retained), then that many retained offlines are published back to back; extra messages are those willwatch received beyond the wills until its intake was quiet for 3 s. Fewer than 500 offlines in 10 s re-read nothing; a storm above it re-reads, once, the devices not known offline (a broker may have dropped some of their wills).\n");
        }
        if let Some(r) = &self.reads {
            render_reads(&mut out, r);
        }
        if let Some(s) = &self.soak {
            out.push_str("\n## Hostile soak: everything at once\n\n");
            let _ = writeln!(
                out,
                "For {:.0} s: {} QoS 0 flips on 1,000 devices, {} invented device ids (with `max_devices = 5000`), one 17 MiB retained message on a watched topic; {} live streams (`/api/events`) never read and {} HTTP clients that send half a request and hold it (both renewed when closed), {} clients looping over `/api/uptime?since=90d&limit=10000` and one over `/status?limit=10000`. Meanwhile a probe device goes offline and back once a second, and `/healthz` is asked every 100 ms on a new connection. The attackers and the flood run on threads of their own at the lowest priority (nice 19): they stand for machines elsewhere, and take only the CPU the daemon, its broker and the probe's timing leave. The broker {}.\n",
                s.duration.as_secs_f64(),
                s.flood_sent,
                s.invented_ids,
                s.streams,
                s.slow_clients,
                s.history_queries,
                if s.nodelay {
                    "sends small packets at once (`set_tcp_nodelay true`, as docs/operations.md recommends)"
                } else {
                    "runs at its default (Nagle on: `--soak-nagle`)"
                }
            );
            out.push_str("| peak RSS | probe offlines | detected | will → webhook p50 (ms) | p99 (ms) | max (ms) | `/healthz` answered | slowest (ms) | oversized dropped | messages from refused devices | HTTP connections closed for room | refused | streams refused |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            let _ = writeln!(
                out,
                "| {:.1} MB | {} | {} | {:.2} | {:.2} | {:.2} | {} of {} | {:.1} | {} | {} | {} | {} | {} |",
                s.peak_rss_kib as f64 / 1024.0,
                s.probe_samples + s.probe_missed,
                s.probe_samples,
                s.probe_p50.as_secs_f64() * 1e3,
                s.probe_p99.as_secs_f64() * 1e3,
                s.probe_max.as_secs_f64() * 1e3,
                s.health_ok,
                s.health_asked,
                s.health_max.as_secs_f64() * 1e3,
                s.oversized,
                s.refused_devices,
                s.closed_for_room,
                s.refused_http,
                s.streams_refused
            );
            out.push_str("\nThe peak RSS includes the 17 MiB message, which is read whole before it is dropped (MQTT cannot skip part of a message).\n");
        }
        if !self.flats.is_empty() {
            out.push_str("\n## Flat memory: long runs of flips\n\n| run | devices | flips a second | QoS | duration (s) | sent | received | RSS at the mark | RSS at the end | growth | peak RSS |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for f in &self.flats {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {:.0} | {} | {} | {:.1} MB ({:.0} s) | {:.1} MB | {:+.1} MB | {:.1} MB |",
                    f.name,
                    f.devices,
                    f.rate,
                    f.qos as u8,
                    f.duration.as_secs_f64(),
                    f.sent,
                    f.received,
                    f.rss_mark_kib as f64 / 1024.0,
                    f.mark.as_secs_f64(),
                    f.rss_end_kib as f64 / 1024.0,
                    (f.rss_end_kib as f64 - f.rss_mark_kib as f64) / 1024.0,
                    f.peak_rss_kib as f64 / 1024.0
                );
            }
            out.push_str("\nOpen-loop flips at QoS 1, each one an event (committed to the state database, logged); 30,000 a second is about what this broker delivers at QoS 1 on this machine. RSS is read from `/proc/PID/status` at the mark (the first minute) and after the last message was taken in.\n");
        }
        out
    }
}

fn render_reads(out: &mut String, r: &Reads) {
    let _ = writeln!(
        out,
        "\n## Reads at {} devices\n\nEvery device retained online and seen once (so each has a row in the history); one request at a time, medians of 5.\n\n| request | time (ms) |\n|---|---:|",
        r.devices
    );
    for (what, took) in &r.pages {
        let _ = writeln!(out, "| {what} | {} |", ms(*took));
    }
    let _ = writeln!(
        out,
        "\n`willwatch status --json` through every page: {:.2} s, peak RSS {:.1} MB. The daemon's RSS before 20 large queries (10 `/status` pages of 10,000 and 10 `/api/uptime` pages of 10,000): {:.1} MB; after: {:.1} MB.\n\nA probe device's will → webhook while 4 clients loop over `/status?limit=10000` and 4 over `/status?q=zzz`: p50 {:.2} ms, p99 {:.2} ms ({} offlines).",
        r.status_command.as_secs_f64(),
        r.status_command_rss_kib as f64 / 1024.0,
        r.rss_before_kib as f64 / 1024.0,
        r.rss_after_kib as f64 / 1024.0,
        r.probe_p50.as_secs_f64() * 1e3,
        r.probe_p99.as_secs_f64() * 1e3,
        r.probe_samples
    );
}

fn render_sparkplug(out: &mut String, s: &Sparkplug) {
    let _ = writeln!(
        out,
        "\n## Sparkplug B: {} edge nodes\n\nBirths are not retained, so a birth storm stands in for the retained burst: every node's birth published at once by one client (QoS 1, as fast as the broker acknowledges), from the first publish to every node known online, against as many plain `online` messages to a `{{id}}` pattern.\n",
        s.nodes
    );
    out.push_str("| watched as | publisher done (ms) | all known online (ms) | willwatch CPU (s) | willwatch peak RSS |\n|---|---:|---:|---:|---:|\n");
    for (name, runs, rss) in [
        ("Sparkplug (NBIRTH, protobuf)", &s.sparkplug_storm, s.sparkplug_rss_kib),
        ("plain text", &s.plain_storm, s.plain_rss_kib),
    ] {
        let published: Vec<Duration> = runs.iter().map(|r| r.0).collect();
        let known: Vec<Duration> = runs.iter().map(|r| r.1).collect();
        let cpu: Vec<Duration> = runs.iter().map(|r| r.2).collect();
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {:.2} | {:.1} MB |",
            ms(median(&published)),
            ms(median(&known)),
            median(&cpu).as_secs_f64(),
            rss as f64 / 1024.0
        );
    }
    if !s.recovery.is_empty() {
        let times: Vec<Duration> = s.recovery.iter().map(|r| r.0).collect();
        let offline = s.recovery.iter().map(|r| r.1).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "\nRecovery after a restart (SIGKILL, started again on its state): every node asked for a rebirth and every answer in: **{} ms** (median of {}); nodes wrongly offline 16 s later (past the 15 s answer deadline): {offline}. A responder client answers each NCMD with an NBIRTH.",
            ms(median(&times)),
            times.len()
        );
    }
    if !s.latency.is_empty() {
        out.push_str("\nDetection latency with the fleet known: real clients whose will is their NDEATH (or a plain retained `offline`), killed 20 ms apart; from a plain subscriber seeing the will to the webhook arriving (fsynced commit in the path).\n\n| will | samples | p50 (ms) | p99 (ms) |\n|---|---:|---:|---:|\n");
        for (kind, n, p50, p99) in &s.latency {
            let _ = writeln!(out, "| {kind} | {n} | {} | {} |", ms(*p50), ms(*p99));
        }
    }
}

fn render_failover(out: &mut String, f: &Failover) {
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    let _ = writeln!(
        out,
        "\n## Failover: active/standby\n\nTwo instances of one `[cluster]` (keep-alive 5 s) on one broker, one webhook receiver. {} times: {} devices go offline, half just before the leader is SIGKILLed and half right after (while nobody leads); the killed instance is started again (it rejoins as a standby) and the devices come back.\n",
        f.failovers, f.devices_per_round
    );
    out.push_str("| measure | median | worst |\n|---|---:|---:|\n");
    let _ = writeln!(
        out,
        "| takeover: kill → the standby leads (ms) | {} | {} |",
        ms(median(&f.takeover)),
        ms(max(&f.takeover))
    );
    let _ = writeln!(
        out,
        "| a device failing while nobody leads: kill → its webhook (ms) | {} | {} |",
        ms(median(&f.alert_during_failover)),
        ms(max(&f.alert_during_failover))
    );
    let _ = writeln!(
        out,
        "\nOver the {} failovers ({} offlines): **{} lost**, **{} notified under two ids**, {} repeats of an id (the same notification sent again under its id, which Standard Webhooks receivers drop). A crashed leader's will is published at once; a hung one's after 1.5 keep-alives (7.5 s here), which the takeover then adds to.",
        f.failovers,
        f.failovers * f.devices_per_round,
        f.lost,
        f.under_two_ids,
        f.repeats
    );
}

fn render_history(out: &mut String, h: &HistoryRun) {
    let _ = writeln!(
        out,
        "\n## History: what it costs\n\nThe retained burst of {} devices (each first sighting is a transition, so the history writes {} rows meanwhile), with `[history] keep` at its default (90 days) and off, interleaved, medians:\n",
        h.devices, h.devices
    );
    out.push_str("| history | all known (ms) | willwatch CPU (s) | peak RSS |\n|---|---:|---:|---:|\n");
    for (name, runs) in [("on (default)", &h.on), ("off", &h.off)] {
        let elapsed: Vec<Duration> = runs.iter().map(|r| r.elapsed).collect();
        let cpu: Vec<Duration> = runs.iter().map(|r| r.cpu).collect();
        let rss = runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "| {name} | {} | {:.2} | {:.1} MB |",
            ms(median(&elapsed)),
            median(&cpu).as_secs_f64(),
            rss as f64 / 1024.0
        );
    }
    let _ = writeln!(
        out,
        "\nA storm of {} retained offlines published back to back, from the first to the last webhook (each offline committed to the state database first): history on {} ms, off {} ms (medians).",
        h.storm,
        ms(median(&h.storm_on)),
        ms(median(&h.storm_off))
    );
    let _ = writeln!(
        out,
        "\nThe writer alone (`History::append` in its batches of 8,192, a rollback journal, `synchronous = NORMAL`): {} transitions of 10,000 devices in {} ms, **{:.0} transitions a second**; `history.db` takes **{:.1} MB per million transitions** (two indexes: by device and time, by time).",
        h.written,
        ms(h.took),
        h.written as f64 / h.took.as_secs_f64(),
        h.bytes_per_million as f64 / 1_048_576.0
    );
}
