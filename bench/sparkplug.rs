//! Sparkplug B at 10,000 edge nodes, against plain-text devices.
//!
//! Sparkplug births are not retained, so instead of the retained burst:
//! - a birth storm: every node born at once (after a broker restart, say),
//!   from publisher start to every node known online, against the same
//!   number of plain `online` messages to a `{id}` pattern;
//! - recovery after a restart: willwatch restarted on the state of every
//!   node asks each for a rebirth; a responder answers every NCMD with an
//!   NBIRTH; time until every node has answered, and offlines (none due);
//! - detection latency with the fleet known: real clients whose will is
//!   their NDEATH (or a plain retained `offline`), killed one by one, from
//!   a plain subscriber seeing the will to the webhook arriving.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use willwatch::sparkplug::payload::{Metric, Payload};

use crate::contestants::{self, Daemon};

const SPARKPLUG: &str = "[[sparkplug]]\ngroup = \"bench\"\nactions = []\n";

pub struct Run {
    pub nodes: usize,
    /// Birth storm: (publisher done, willwatch all online, its CPU), per round.
    pub sparkplug_storm: Vec<(Duration, Duration, Duration)>,
    pub plain_storm: Vec<(Duration, Duration, Duration)>,
    pub sparkplug_rss_kib: u64,
    pub plain_rss_kib: u64,
    /// Restart to every node's rebirth answered; offlines meanwhile.
    pub recovery: Vec<(Duration, u64)>,
    /// (kind, samples, p50, p99).
    pub latency: Vec<(&'static str, usize, Duration, Duration)>,
}

fn birth(bd_seq: u64) -> Vec<u8> {
    let metrics =
        vec![Metric { name: Some("bdSeq".into()), datatype: Some(4), long_value: Some(bd_seq), ..Metric::default() }];
    Payload { timestamp: Some(1), metrics, seq: Some(0) }.encode_to_vec()
}

fn death(bd_seq: u64) -> Vec<u8> {
    let metrics =
        vec![Metric { name: Some("bdSeq".into()), datatype: Some(4), long_value: Some(bd_seq), ..Metric::default() }];
    Payload { timestamp: Some(1), metrics, seq: None }.encode_to_vec()
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 20, 1 << 20).set_inflight(1000);
    o
}

/// Publishes `message(i)` for i in 0..n at QoS 1 from one client, as fast
/// as the broker acknowledges; returns when every PUBACK is in.
async fn publish_all(port: u16, n: usize, message: impl Fn(usize) -> (String, Vec<u8>)) -> Result<Duration, String> {
    let start = Instant::now();
    let (client, mut eventloop) = AsyncClient::new(options("bench-births", port), 10_000);
    let acks = tokio::spawn(async move {
        let mut acks = 0;
        while acks < n {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acks += 1,
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    });
    for i in 0..n {
        let (topic, payload) = message(i);
        client.publish(topic, QoS::AtLeastOnce, false, payload).await.map_err(|e| e.to_string())?;
    }
    acks.await.map_err(|e| e.to_string())??;
    Ok(start.elapsed())
}

pub async fn sparkplug(bin: &Path, nodes: usize, rounds: usize, killed: usize, smoke: bool) -> Result<Run, String> {
    let broker = crate::broker::Broker::start().map_err(|e| e.to_string())?;
    let port = broker.port;
    let mut run = Run {
        nodes,
        sparkplug_storm: Vec::new(),
        plain_storm: Vec::new(),
        sparkplug_rss_kib: 0,
        plain_rss_kib: 0,
        recovery: Vec::new(),
        latency: Vec::new(),
    };
    for round in 0..rounds {
        eprintln!("sparkplug birth storm, {nodes} nodes, round {}", round + 1);
        for sparkplug in [true, false] {
            let daemon = Daemon::start(bin, port, if sparkplug { SPARKPLUG } else { contestants::PATTERN })?;
            daemon.wait_metric("willwatch_broker_connected", 1.0).await?;
            let start = Instant::now();
            let published = if sparkplug {
                publish_all(port, nodes, |i| (format!("spBv1.0/bench/NBIRTH/node-{i}"), birth(round as u64))).await?
            } else {
                publish_all(port, nodes, |i| (crate::load::topic(i), b"online".to_vec())).await?
            };
            daemon.wait_metric("willwatch_devices{state=\"online\"}", nodes as f64).await?;
            let sample = (published, start.elapsed(), daemon.cpu());
            if sparkplug {
                run.sparkplug_storm.push(sample);
                run.sparkplug_rss_kib = run.sparkplug_rss_kib.max(daemon.peak_rss_kib());
            } else {
                run.plain_storm.push(sample);
                run.plain_rss_kib = run.plain_rss_kib.max(daemon.peak_rss_kib());
            }
        }
    }
    run.recovery = recovery(bin, port, nodes, rounds, smoke).await?;
    for sparkplug in [true, false] {
        eprintln!("detection latency among {nodes} known devices, sparkplug = {sparkplug}");
        run.latency.push(latency(bin, port, nodes, killed, sparkplug).await?);
    }
    Ok(run)
}

/// A client that answers every rebirth request of the group with a birth.
async fn responder(port: u16) -> Result<tokio::task::JoinHandle<()>, String> {
    let (client, mut eventloop) = AsyncClient::new(options("bench-responder", port), 10_000);
    client.subscribe("spBv1.0/bench/NCMD/+", QoS::AtMostOnce).await.map_err(|e| e.to_string())?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.map_err(|e| e.to_string())? {
            break;
        }
    }
    Ok(tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event
                && let Some(node) = p.topic.rsplit('/').next()
            {
                let _ = client.try_publish(format!("spBv1.0/bench/NBIRTH/{node}"), QoS::AtMostOnce, false, birth(7));
            }
        }
    }))
}

async fn recovery(
    bin: &Path,
    port: u16,
    nodes: usize,
    rounds: usize,
    smoke: bool,
) -> Result<Vec<(Duration, u64)>, String> {
    let answering = responder(port).await?;
    let mut daemon = Daemon::start(bin, port, SPARKPLUG)?;
    daemon.wait_metric("willwatch_broker_connected", 1.0).await?;
    publish_all(port, nodes, |i| (format!("spBv1.0/bench/NBIRTH/node-{i}"), birth(7))).await?;
    daemon.wait_metric("willwatch_devices{state=\"online\"}", nodes as f64).await?;
    let mut out = Vec::new();
    for round in 0..rounds {
        eprintln!("sparkplug recovery after a restart, {nodes} nodes, round {}", round + 1);
        // Let the first sightings reach the disk, then restart.
        tokio::time::sleep(Duration::from_secs(2)).await;
        daemon.restart()?;
        let start = Instant::now();
        daemon.wait_metric("willwatch_sparkplug_rebirth_requests_total", nodes as f64).await?;
        daemon.wait_metric("willwatch_messages_total", nodes as f64).await?;
        let elapsed = start.elapsed();
        // Past the answer deadline: whoever did not answer would be offline
        // now (a smoke run does not wait for it).
        if !smoke {
            tokio::time::sleep(ANSWER_DEADLINE).await;
        }
        let client = reqwest::Client::new();
        let offline = daemon.metric(&client, "willwatch_devices{state=\"offline\"}").await.unwrap_or(0.0) as u64;
        out.push((elapsed, offline));
    }
    answering.abort();
    Ok(out)
}

/// A little over willwatch's 15 s for a node to answer a rebirth request.
const ANSWER_DEADLINE: Duration = Duration::from_secs(16);

async fn latency(
    bin: &Path,
    port: u16,
    background: usize,
    k: usize,
    sparkplug: bool,
) -> Result<(&'static str, usize, Duration, Duration), String> {
    let hooks: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let sink = Arc::clone(&hooks);
    let url = crate::receiver::serve(move |event, at| {
        if event["event"] == "offline"
            && let Some(device) = event["device"].as_str()
        {
            sink.lock().unwrap().entry(device.to_string()).or_insert(at);
        }
    })
    .await?;
    let devices = if sparkplug {
        "[[sparkplug]]\ngroup = \"bench\"\nactions = [\"hook\"]\n".to_string()
    } else {
        contestants::PATTERN.replace("actions = []", "actions = [\"hook\"]")
    };
    let rest = format!("[action.hook]\ntype = \"webhook\"\nurl = \"{url}\"\n\n{devices}");
    let daemon = Daemon::start(bin, port, &rest)?;
    daemon.wait_metric("willwatch_broker_connected", 1.0).await?;
    let first = 1_000_000;
    if sparkplug {
        publish_all(port, background, |i| (format!("spBv1.0/bench/NBIRTH/node-{i}"), birth(9))).await?;
    } else {
        publish_all(port, background, |i| (crate::load::topic(i), b"online".to_vec())).await?;
    }
    let wills: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (observer, mut events) = AsyncClient::new(options(&format!("bench-observer-{sparkplug}"), port), 16);
    let filter = if sparkplug { "spBv1.0/bench/NDEATH/+" } else { "bench/+/status" };
    observer.subscribe(filter, QoS::AtMostOnce).await.map_err(|e| e.to_string())?;
    let seen = Arc::clone(&wills);
    let observing = tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event
                && !p.retain
                && (sparkplug || p.payload.as_ref() == b"offline")
            {
                let device = match p.topic.split('/').collect::<Vec<_>>().as_slice() {
                    ["spBv1.0", group, _, node] => format!("{group}/{node}"),
                    [_, id, _] => id.to_string(),
                    _ => continue,
                };
                seen.lock().unwrap().entry(device).or_insert_with(Instant::now);
            }
        }
    });
    let mut clients = Vec::new();
    for i in first..first + k {
        let (topic, born, will, retain) = if sparkplug {
            (format!("spBv1.0/bench/NBIRTH/node-{i}"), birth(1), death(1), false)
        } else {
            (crate::load::topic(i), b"online".to_vec(), b"offline".to_vec(), true)
        };
        let will_topic = if sparkplug { format!("spBv1.0/bench/NDEATH/node-{i}") } else { topic.clone() };
        let mut o = options(&format!("bench-node-{i}"), port);
        o.set_last_will(LastWill::new(will_topic, will, QoS::AtLeastOnce, retain));
        let (client, mut eventloop) = AsyncClient::new(o, 8);
        client.publish(topic, QoS::AtLeastOnce, retain, born).await.map_err(|e| e.to_string())?;
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.map_err(|e| e.to_string())? {
                break;
            }
        }
        clients.push(tokio::spawn(async move {
            let _client = client;
            while eventloop.poll().await.is_ok() {}
        }));
    }
    daemon.wait_metric("willwatch_devices{state=\"online\"}", (background + k) as f64).await?;
    for client in clients {
        client.abort();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while hooks.lock().unwrap().len() < k && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    observing.abort();
    let hooks = hooks.lock().unwrap();
    let wills = wills.lock().unwrap();
    let mut samples: Vec<Duration> =
        hooks.iter().filter_map(|(device, at)| wills.get(device).map(|w| at.saturating_duration_since(*w))).collect();
    if samples.is_empty() {
        return Err("no webhook arrived".into());
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let kind = if sparkplug { "Sparkplug NDEATH" } else { "plain retained will" };
    Ok((kind, samples.len(), pick(0.5), pick(0.99)))
}
