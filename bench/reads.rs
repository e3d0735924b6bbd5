//! Reads at a large fleet: what `/status` pages, `willwatch status` and the
//! history routes cost at N devices (each device's first sighting is in
//! the history), the daemon's resident memory before and after 20 large
//! queries, and a probe device's will → webhook time while clients loop
//! over large and filtered `/status` pages.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions, QoS};

use crate::contestants::{Daemon, PATTERN};
use crate::load;

pub struct Reads {
    pub devices: usize,
    /// Median times of one request, by what was asked.
    pub pages: Vec<(&'static str, Duration)>,
    pub status_command: Duration,
    pub status_command_rss_kib: u64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub probe_p50: Duration,
    pub probe_p99: Duration,
    pub probe_samples: usize,
}

const ROUNDS: usize = 5;

pub async fn reads(bin: &Path, n: usize, probes: usize) -> Result<Reads, String> {
    let broker = crate::broker::Broker::start().map_err(|e| e.to_string())?;
    let port = broker.port;
    load::publish_retained(port, n, "online").await?;
    // The probe's webhook arrivals, by its offline's number.
    let (url, arrived) = crate::receiver::probe_offlines().await?;
    let rest = format!(
        "[history]\nkeep = \"90d\"\n\n[action.hook]\ntype = \"webhook\"\nurl = \"{url}\"\n\n\
         [[device]]\nid = \"probe\"\ntopic = \"probe/status\"\nactions = [\"hook\"]\nstate_field = \"/s\"\n\n{PATTERN}"
    );
    let daemon = Daemon::start(bin, port, &rest)?;
    daemon.wait_metric("willwatch_devices{state=\"online\"}", n as f64).await?;
    let base = format!("http://{}", daemon.http_address());
    let client = reqwest::Client::new();
    // Every first sighting is in the history (the writer is behind the burst).
    let last = format!("{base}/api/history?device={}&since=1d", load::topic(n - 1).split('/').nth(1).unwrap_or(""));
    let deadline = Instant::now() + Duration::from_secs(120);
    while get(&client, &last).await?["devices"].as_array().is_none_or(Vec::is_empty) {
        if Instant::now() > deadline {
            return Err("the history never took in the burst".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let middle = load::topic(n / 2).split('/').nth(1).unwrap_or("").to_string();
    let asked: [(&'static str, String); 7] = [
        ("`/status`, first page of 1,000", format!("{base}/status?limit=1000")),
        ("`/status`, a page of 1,000 from the middle", format!("{base}/status?limit=1000&after=2:{middle}")),
        ("`/status?q=zzz` (no match), one page", format!("{base}/status?q=zzz&limit=1000")),
        ("`/status?device=…`", format!("{base}/status?device={middle}")),
        ("`/api/uptime?sort=id`, first page of 1,000", format!("{base}/api/uptime?since=1d&sort=id&limit=1000")),
        ("`/api/uptime` worst first, page of 100", format!("{base}/api/uptime?since=1d&limit=100")),
        ("`/api/history?device=…`", format!("{base}/api/history?device={middle}&since=1d")),
    ];
    let mut pages = Vec::new();
    for (what, url) in asked {
        let mut times = Vec::new();
        for _ in 0..ROUNDS {
            let start = Instant::now();
            get(&client, &url).await?;
            times.push(start.elapsed());
        }
        times.sort();
        pages.push((what, times[times.len() / 2]));
    }
    // The page after the first of a worst-first walk: read ahead by it.
    let first = get(&client, &format!("{base}/api/uptime?since=1d&limit=100")).await?;
    let next = first["next"].as_str().ok_or("the worst-first walk has one page")?;
    let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        get(&client, &format!("{base}/api/uptime?since=1d&limit=100&after={next}")).await?;
        times.push(start.elapsed());
    }
    times.sort();
    pages.push(("`/api/uptime` worst first, the next page of 100 (read ahead by the first)", times[times.len() / 2]));

    // A history cursor (`id:END:ROWS:RANK:ID`) names the order, the end of
    // the window it walks and the last row it reads, then the rank and id:
    // the first page's, with the id of each place to start from.
    let first = get(&client, &format!("{base}/api/uptime?since=1d&sort=id&limit=1")).await?;
    let walk = first["next"].as_str().and_then(|c| c.rsplit_once(':').map(|(walk, _)| walk)).unwrap_or("").to_string();
    let rss_before_kib = daemon.rss_kib();
    for i in 0..10 {
        let after = load::topic(i * n / 10).split('/').nth(1).unwrap_or("").to_string();
        get(&client, &format!("{base}/status?limit=10000&after=2:{after}")).await?;
        get(&client, &format!("{base}/api/uptime?since=1d&sort=id&limit=10000&after={walk}:{after}")).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kib = daemon.rss_kib();

    let (status_command, status_command_rss_kib) = status_command(bin, &daemon)?;

    // The probe while 4 clients loop over pages of 10,000 and 4 over
    // filtered pages.
    let looping = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut loops = Vec::new();
    for i in 0..8 {
        let (client, looping) = (client.clone(), Arc::clone(&looping));
        let url = if i < 4 { format!("{base}/status?limit=10000") } else { format!("{base}/status?q=zzz") };
        loops.push(tokio::spawn(async move {
            while looping.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client.get(&url).send().await.map(|r| r.bytes());
            }
        }));
    }
    let (probe, mut probe_loop) = AsyncClient::new(MqttOptions::new("bench-reads-probe", "127.0.0.1", port), 64);
    let poller = tokio::spawn(async move { while probe_loop.poll().await.is_ok() {} });
    let mut sent = Vec::new();
    for i in 0..probes as u64 {
        probe
            .publish("probe/status", QoS::AtLeastOnce, false, "{\"s\":\"online\"}")
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        sent.push((i, Instant::now()));
        let offline = format!("{{\"s\":\"offline\",\"n\":{i}}}");
        probe.publish("probe/status", QoS::AtLeastOnce, false, offline).await.map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    looping.store(false, std::sync::atomic::Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    poller.abort();
    let arrived = arrived.lock().unwrap().clone();
    let mut samples: Vec<Duration> =
        sent.iter().filter_map(|(i, at)| arrived.get(i).map(|got| got.saturating_duration_since(*at))).collect();
    samples.sort();
    let pick =
        |q: f64| samples.get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1))).copied();
    Ok(Reads {
        devices: n,
        pages,
        status_command,
        status_command_rss_kib,
        rss_before_kib,
        rss_after_kib,
        probe_p50: pick(0.5).unwrap_or_default(),
        probe_p99: pick(0.99).unwrap_or_default(),
        probe_samples: samples.len(),
    })
}

async fn get(client: &reqwest::Client, url: &str) -> Result<serde_json::Value, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{url}: {status}: {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}

/// `willwatch status --json` through every page: its wall time, and its
/// peak resident memory (the process's own rusage, read by `wait4`).
fn status_command(bin: &Path, daemon: &Daemon) -> Result<(Duration, u64), String> {
    let start = Instant::now();
    let child = std::process::Command::new(bin)
        .args(["status", "--json", "-c"])
        .arg(daemon.config_path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (status, usage) = wait4(pid)?;
    let elapsed = start.elapsed();
    if status != 0 {
        return Err(format!("willwatch status exited {status}"));
    }
    Ok((elapsed, usage))
}

/// Waits for `pid`: its exit code and peak RSS (KiB).
fn wait4(pid: nix::unistd::Pid) -> Result<(i32, u64), String> {
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<nix::libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid rusage to write into; `pid` is our child.
    let got = unsafe { nix::libc::wait4(pid.as_raw(), &mut status, 0, usage.as_mut_ptr()) };
    if got < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: wait4 succeeded, so it wrote `usage`.
    let usage = unsafe { usage.assume_init() };
    Ok((nix::libc::WEXITSTATUS(status), usage.ru_maxrss as u64))
}
