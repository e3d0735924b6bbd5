//! `cargo run --release --example bench`: how close willwatch comes to what
//! the broker itself can deliver, written to BENCHMARKS.md.
//!
//! Everything runs against one mosquitto started here with a recorded
//! config, contestants interleaved round by round, medians reported:
//! - retained burst: N retained statuses, from subscribe to all N known
//!   (willwatch via `/metrics`) vs `mosquitto_sub -C N` vs a bare rumqttc
//!   subscriber that only counts;
//! - detection latency: from a plain subscriber seeing a will to the
//!   webhook request arriving at a local receiver;
//! - footprint: peak RSS per fleet size, CPU seconds per 100k messages;
//! - steady throughput: open-loop flips at fixed rates, received vs sent;
//! - an alert storm: every device of a fleet offline at once, to the last
//!   webhook; and to a chat service that takes one message a second;
//! - a hostile soak: flood, id blast, oversized message and slow HTTP
//!   clients at once, with a probe device's detection latency;
//! - Sparkplug B: a birth storm of 10,000 edge nodes, recovery after a
//!   restart by rebirth requests, detection latency, against plain devices;
//! - history: the 100k burst with history on and off, the writer's
//!   transitions a second, `history.db` per million transitions;
//! - failover: two instances of a `[cluster]`, the leader SIGKILLed 20
//!   times while devices fail: takeover time, alerts lost or doubled;
//! - a peer: the plain paho-mqtt script users write for this job, in the
//!   retained burst (when Python and paho-mqtt are installed).
//!
//! `--smoke` runs every measurement at toy sizes in seconds (CI does, so
//! this never rots) and writes nothing unless `--out` is given.

mod broker;
mod chat_storm;
mod contestants;
mod ecosystem;
mod failover;
mod flat;
mod history;
mod load;
mod reads;
mod receiver;
mod report;
mod reread;
mod soak;
mod sparkplug;
mod storm;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Tiny sizes, one round: checks that the benchmark still works.
    #[arg(long)]
    smoke: bool,
    /// Where to write the report (default: BENCHMARKS.md, unless --smoke).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rounds per measurement (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Fleet sizes for the retained burst (default 1000,10000,100000).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Run only these sections (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Section>,
    /// Length of each flat-memory run, in seconds.
    #[arg(long, default_value_t = 600)]
    flat_secs: u64,
    /// The soak's HTTP attackers: never-read streams, slow-header clients,
    /// parallel history queries (default 2000,500,8).
    #[arg(long, value_delimiter = ',')]
    soak_attack: Vec<usize>,
    /// The soak's flood, in flips a second (default 20000).
    #[arg(long, default_value_t = 20_000)]
    soak_rate: u64,
    /// The soak's broker at its default, Nagle on (it runs with
    /// `set_tcp_nodelay true` otherwise).
    #[arg(long)]
    soak_nagle: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Burst,
    Latency,
    Steady,
    Storm,
    ChatStorm,
    Ecosystem,
    Reread,
    Soak,
    Flat,
    Sparkplug,
    History,
    Failover,
    Reads,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (sizes, rounds, latency_devices, rates, rate_secs, storms) = if args.smoke {
        (vec![200], 1, 10, vec![500], 1, vec![50])
    } else {
        let sizes = if args.sizes.is_empty() { vec![1_000, 10_000, 100_000] } else { args.sizes.clone() };
        (sizes, args.rounds, 200, vec![5_000, 10_000, 20_000, 40_000], 3, vec![2_000, 10_000])
    };
    // (duration, flood rate, invented ids, (never-read streams, slow-header
    // clients, parallel history queries))
    let soak = if args.smoke {
        (Duration::from_secs(2), 1_000, 2_000, (50, 50, 2))
    } else {
        let attack = match args.soak_attack[..] {
            [streams, slow, queries] => (streams, slow, queries),
            [] => (2_000, 500, 8),
            _ => return Err("--soak-attack takes three numbers: streams,slow,queries".into()),
        };
        (Duration::from_secs(30), args.soak_rate, 50_000, attack)
    };
    // (devices, offlines at once)
    let rereads: &[(usize, usize)] = if args.smoke { &[(200, 6)] } else { &[(100_000, 60), (100_000, 600)] };
    // (name, devices, flips a second)
    let flats: [(&str, usize, u64); 2] = if args.smoke {
        [("QoS 1 saturation", 100, 2_000), ("flapping", 1_000, 500)]
    } else {
        [("QoS 1 saturation", 1_000, 30_000), ("flapping", 10_000, 2_000)]
    };
    let flat_for = Duration::from_secs(if args.smoke { 2 } else { args.flat_secs });
    let runs = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let sizes = if runs(Section::Burst) { sizes } else { Vec::new() };
    let rates = if runs(Section::Steady) { rates } else { Vec::new() };
    let storms = if runs(Section::Storm) { storms } else { Vec::new() };
    let willwatch = contestants::willwatch_binary()?;
    let mut report = report::Report::new(&willwatch, args.smoke);

    for &n in &sizes {
        let broker = broker::Broker::start()?;
        load::publish_retained(broker.port, n, "online").await?;
        let mut times = report::Times::default();
        for round in 0..rounds {
            eprintln!("burst n={n} round {}", round + 1);
            let (elapsed, cpu) = contestants::mosquitto_sub_burst(broker.port, n).await?;
            times.mosquitto_sub.push(elapsed);
            times.mosquitto_sub_cpu.push(cpu);
            times.rumqttc.push(contestants::rumqttc_burst(broker.port, n).await?);
            let run = contestants::willwatch_burst(&willwatch, broker.port, n).await?;
            times.willwatch.push(run.elapsed);
            times.willwatch_cpu.push(run.cpu);
            times.rss_kib = times.rss_kib.max(run.peak_rss_kib);
            if let Some((elapsed, rss)) = contestants::paho_burst(broker.port, n).await {
                times.paho.push(elapsed);
                times.paho_rss_kib = times.paho_rss_kib.max(rss);
            }
        }
        report.bursts.push((n, times));
    }

    if runs(Section::Latency) {
        let broker = broker::Broker::start()?;
        eprintln!("detection latency, {latency_devices} devices");
        for (i, watcher) in
            [contestants::Watcher::Willwatch, contestants::Watcher::WillwatchNormalSync].into_iter().enumerate()
        {
            let first = i * latency_devices;
            report
                .latency
                .push(contestants::detection_latency(&willwatch, broker.port, first, latency_devices, watcher).await?);
        }
        if !args.smoke {
            eprintln!("detection latency through mqttwarn");
            match contestants::detection_latency(
                &willwatch,
                broker.port,
                2 * latency_devices,
                latency_devices,
                contestants::Watcher::Mqttwarn,
            )
            .await
            {
                Ok(latency) => report.latency.push(latency),
                Err(e) => eprintln!("mqttwarn not measured: {e}"),
            }
        }
    }
    for &rate in &rates {
        eprintln!("steady flips at {rate}/s");
        report.throughput.push(contestants::steady(&willwatch, rate, Duration::from_secs(rate_secs)).await?);
    }

    for &n in &storms {
        eprintln!("storm of {n} offlines");
        report.storms.push(storm::storm(&willwatch, n).await?);
    }

    if runs(Section::ChatStorm) {
        let n = if args.smoke { 50 } else { 2_000 };
        eprintln!("storm of {n} offlines to a chat service");
        report.chat_storm = Some(chat_storm::chat_storm(&willwatch, n).await?);
    }

    if runs(Section::Ecosystem) {
        let n = if args.smoke { 200 } else { 100_000 };
        eprintln!("retained burst through the zigbee2mqtt preset, {n} devices");
        let (rate, secs) = if args.smoke { (500, 1) } else { (20_000, 3) };
        let run = ecosystem::ecosystem(&willwatch, n, rounds, rate, Duration::from_secs(secs)).await?;
        report.ecosystem = Some(run);
    }

    if runs(Section::Reread) {
        for &(n, offlines) in rereads {
            eprintln!("re-read cost of {offlines} offlines among {n} devices");
            report.rereads.push(reread::reread(&willwatch, n, offlines).await?);
        }
    }

    if runs(Section::Sparkplug) {
        let (nodes, killed) = if args.smoke { (200, 10) } else { (10_000, 200) };
        report.sparkplug = Some(sparkplug::sparkplug(&willwatch, nodes, rounds, killed, args.smoke).await?);
    }

    if runs(Section::History) {
        let (n, writes, storm) = if args.smoke { (200, 10_000, 50) } else { (100_000, 1_000_000, 2_000) };
        report.history = Some(history::history(&willwatch, n, rounds, writes, storm).await?);
    }

    if runs(Section::Failover) {
        let (failovers, per_round) = if args.smoke { (2, 2) } else { (20, 5) };
        report.failover = Some(failover::failover(&willwatch, failovers, per_round).await?);
    }

    if runs(Section::Reads) {
        let (n, probes) = if args.smoke { (2_000, 10) } else { (1_000_000, 200) };
        eprintln!("reads at {n} devices");
        report.reads = Some(reads::reads(&willwatch, n, probes).await?);
    }

    if runs(Section::Soak) {
        eprintln!("hostile soak for {:?}", soak.0);
        let listener = if args.soak_nagle { "" } else { broker::NODELAY };
        report.soak = Some(soak::soak(&willwatch, soak.0, soak.1, soak.2, soak.3, listener).await?);
    }

    if runs(Section::Flat) {
        for (name, devices, rate) in flats {
            eprintln!("flat memory: {name}, {devices} devices at {rate}/s for {flat_for:?}");
            let run = flat::flat(&willwatch, name, devices, rate, rumqttc::QoS::AtLeastOnce, flat_for).await?;
            report.flats.push(run);
        }
    }

    let mut text = report.render();
    print!("{text}");
    let out = args.out.or_else(|| (!args.smoke).then(|| PathBuf::from("BENCHMARKS.md")));
    if let Some(out) = out {
        // Figures measured by other means (the crash test) follow a marker
        // and are kept as they are.
        if let Some(kept) =
            std::fs::read_to_string(&out).ok().and_then(|t| t.find(report::KEPT).map(|i| t[i..].to_string()))
        {
            text.push('\n');
            text.push_str(&kept);
        }
        std::fs::write(&out, text)?;
        eprintln!("written to {}", out.display());
    }
    Ok(())
}
