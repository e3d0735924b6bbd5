//! A hostile soak: everything the red team threw, at once, for a while.
//! A flood of flips, a blast of invented device ids past `max_devices`, a
//! 17 MiB retained message on a watched topic; on the HTTP side, live
//! streams that are never read, slow clients that open connections and
//! never finish a request (both renewed when closed), parallel history
//! queries over the whole window and a `/status` loop. Meanwhile a probe
//! device goes offline and back once a second (the time from its will to
//! the webhook is what detection costs under all that) and `/healthz` is
//! asked every 100 ms. Reports peak RSS, the probe's latency, the health
//! probe's, and the drop counters from `/metrics`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::io::AsyncWriteExt;

use crate::contestants::Daemon;
use crate::load;

pub struct Soak {
    pub duration: Duration,
    /// The broker's listener sent small packets at once (`set_tcp_nodelay`).
    pub nodelay: bool,
    pub flood_sent: u64,
    pub invented_ids: usize,
    pub slow_clients: usize,
    pub streams: usize,
    pub history_queries: usize,
    pub peak_rss_kib: u64,
    pub probe_samples: usize,
    pub probe_p50: Duration,
    pub probe_p99: Duration,
    pub probe_max: Duration,
    /// `/healthz` asked every 100 ms: how many, answered 200, the slowest.
    pub health_asked: usize,
    pub health_ok: usize,
    pub health_max: Duration,
    pub probe_missed: usize,
    pub oversized: f64,
    pub refused_devices: f64,
    pub refused_http: f64,
    pub closed_for_room: f64,
    pub streams_refused: f64,
}

/// The HTTP attackers: (never-read streams, slow-header clients, parallel
/// history queries).
pub type Attack = (usize, usize, usize);

/// `listener`: the broker's listener options (`broker::NODELAY`, or none:
/// its default, Nagle on).
pub async fn soak(
    bin: &Path,
    duration: Duration,
    rate: u64,
    invented: usize,
    attack: Attack,
    listener: &str,
) -> Result<Soak, String> {
    let (streams, slow_clients, history_queries) = attack;
    let broker = crate::broker::Broker::start_with(listener).map_err(|e| e.to_string())?;
    let port = broker.port;
    // The probe's webhook arrivals, by its offline's number.
    let (url, arrived) = crate::receiver::probe_offlines().await?;
    let rest = format!(
        "[action.hook]\ntype = \"webhook\"\nurl = \"{url}\"\n\n\
         [[device]]\nid = \"probe\"\ntopic = \"probe/status\"\noffline = [\"offline\"]\nactions = [\"hook\"]\n\
         state_field = \"/s\"\n\n[[device]]\ntopic = \"bench/{{id}}/status\"\nactions = []\n\n\
         [history]\nkeep = \"90d\"\n"
    );
    let daemon = Daemon::start_with(bin, port, "max_devices = 5000", &rest)?;
    daemon.wait_metric("willwatch_broker_connected", 1.0).await?;
    let start = Instant::now();
    let until = start + duration;
    // The attackers and the flood stand for machines elsewhere on the
    // network: they run on threads of their own at the lowest priority, so
    // the CPU they burn here is only what the daemon, its broker and the
    // probe's timing leave.
    let elsewhere = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("attacker")
        .on_thread_start(|| {
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
        })
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    // The 17 MiB retained message, on a watched topic.
    let huge = vec![b'x'; 17 << 20];
    publish_once(port, "bench/huge/status", huge).await?;
    // The flood: flips on 1,000 devices at `rate`.
    let flood = elsewhere.spawn(load::flip(port, 1000, rate, duration, QoS::AtMostOnce));
    // The id blast: invented devices, one message each.
    let blast = elsewhere.spawn(async move {
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("bench-blast", "127.0.0.1", port), 10_000);
        let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        for i in 0..invented {
            let _ = client.publish(format!("bench/invented-{i}/status"), QoS::AtMostOnce, false, "online").await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        poller.abort();
    });
    // Slow HTTP clients: half a request each, held, renewed when closed;
    // live streams never read, renewed when closed.
    let address = daemon.http_address();
    let slow = elsewhere.spawn(hold(address.clone(), slow_clients, b"GET /status HTTP/1.1\r\n", until));
    let never_read =
        elsewhere.spawn(hold(address.clone(), streams, b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n", until));
    // History queries over the whole window, and a /status loop.
    let client = reqwest::Client::new();
    let mut readers = Vec::new();
    for i in 0..history_queries + 1 {
        let client = client.clone();
        let url = if i < history_queries {
            format!("http://{address}/api/uptime?since=90d&limit=10000")
        } else {
            format!("http://{address}/status?limit=10000")
        };
        readers.push(elsewhere.spawn(async move {
            while Instant::now() < until {
                let _ = client.get(&url).send().await.map(|r| r.bytes());
            }
        }));
    }
    // The health probe, every 100 ms, on a fresh connection each time.
    let health_url = format!("http://{address}/healthz");
    let health = tokio::spawn(async move {
        let mut answers = Vec::new();
        while Instant::now() < until {
            let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("a client");
            let asked = Instant::now();
            let ok = tokio::time::timeout(Duration::from_secs(5), client.get(&health_url).send())
                .await
                .is_ok_and(|r| r.is_ok_and(|r| r.status() == 200));
            answers.push((ok, asked.elapsed()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        answers
    });
    // The probe: offline (stamped with its number) then online, once a second.
    let (probe, mut probe_loop) = AsyncClient::new(MqttOptions::new("bench-probe", "127.0.0.1", port), 64);
    let probe_poller = tokio::spawn(async move { while probe_loop.poll().await.is_ok() {} });
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut peak_rss_kib = 0;
    let mut n = 0u64;
    while Instant::now() < until {
        let offline = format!("{{\"s\":\"offline\",\"n\":{n}}}");
        sent.insert(n, Instant::now());
        probe.publish("probe/status", QoS::AtLeastOnce, false, offline).await.map_err(|e| e.to_string())?;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak_rss_kib = peak_rss_kib.max(daemon.rss_kib());
        }
        probe
            .publish("probe/status", QoS::AtLeastOnce, false, "{\"s\":\"online\"}")
            .await
            .map_err(|e| e.to_string())?;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak_rss_kib = peak_rss_kib.max(daemon.rss_kib());
        }
        n += 1;
    }
    let flood_sent = flood.await.map_err(|e| e.to_string())??;
    let _ = blast.await;
    slow.abort();
    never_read.abort();
    for reader in readers {
        reader.abort();
    }
    let health = health.await.map_err(|e| e.to_string())?;
    elsewhere.shutdown_background();
    tokio::time::sleep(Duration::from_secs(1)).await;
    probe_poller.abort();
    let arrived = arrived.lock().unwrap().clone();
    let mut by_second: Vec<(u64, Duration)> =
        sent.iter().filter_map(|(n, at)| arrived.get(n).map(|got| (*n, got.saturating_duration_since(*at)))).collect();
    by_second.sort();
    let shown: Vec<String> = by_second.iter().map(|(n, took)| format!("{n}:{:.1}", took.as_secs_f64() * 1e3)).collect();
    eprintln!("probe will → webhook (ms), by second: {}", shown.join(" "));
    let mut samples: Vec<Duration> = by_second.into_iter().map(|(_, took)| took).collect();
    samples.sort();
    let client = reqwest::Client::new();
    let counter = |name: &'static str| {
        let client = client.clone();
        let daemon = &daemon;
        async move { daemon.metric(&client, name).await.unwrap_or(0.0) }
    };
    Ok(Soak {
        duration,
        nodelay: !listener.is_empty(),
        flood_sent,
        invented_ids: invented,
        slow_clients,
        peak_rss_kib: peak_rss_kib.max(daemon.peak_rss_kib()),
        probe_samples: samples.len(),
        streams,
        history_queries,
        probe_p50: samples.get(samples.len() / 2).copied().unwrap_or_default(),
        probe_p99: samples.get(samples.len() * 99 / 100).copied().unwrap_or_default(),
        health_asked: health.len(),
        health_ok: health.iter().filter(|(ok, _)| *ok).count(),
        health_max: health.iter().map(|(_, took)| *took).max().unwrap_or_default(),
        probe_max: samples.last().copied().unwrap_or_default(),
        probe_missed: sent.len() - samples.len(),
        oversized: counter("willwatch_oversized_messages_total").await,
        refused_devices: counter("willwatch_devices_refused_total").await,
        refused_http: counter("willwatch_http_refused_connections_total").await,
        closed_for_room: counter("willwatch_http_connections_closed_for_room_total").await,
        streams_refused: counter("willwatch_http_streams_refused_total").await,
    })
}

/// Keeps `n` connections to `address` open, each sent `start` and then
/// never read, until `until`; those the daemon closes are opened again.
async fn hold(address: String, n: usize, start: &'static [u8], until: Instant) {
    let mut held: Vec<tokio::net::TcpStream> = Vec::new();
    while Instant::now() < until {
        held.retain(|s| {
            let mut byte = [0u8; 1];
            // Closed by the daemon: EOF. Data (a refusal) is left unread.
            !matches!(s.try_read(&mut byte), Ok(0))
        });
        while held.len() < n {
            let Ok(mut s) = tokio::net::TcpStream::connect(&address).await else { break };
            let _ = s.write_all(start).await;
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One retained message from a fresh client, acknowledged.
async fn publish_once(port: u16, topic: &str, payload: Vec<u8>) -> Result<(), String> {
    let mut options = MqttOptions::new("bench-huge", "127.0.0.1", port);
    options.set_max_packet_size(32 << 20, 32 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    client.publish(topic, QoS::AtLeastOnce, true, payload).await.map_err(|e| e.to_string())?;
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) =
            eventloop.poll().await.map_err(|e| e.to_string())?
        {
            return Ok(());
        }
    }
}
