//! The contestants and how each is timed: `mosquitto_sub`, a bare rumqttc
//! subscriber, and the real willwatch binary, measured from outside
//! (`/metrics`, `/proc`, a webhook receiver) so nothing is instrumented.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::load;

const LIMIT: Duration = Duration::from_secs(600);

/// The daemon built next to this example (target/<profile>/willwatch).
pub fn willwatch_binary() -> Result<PathBuf, String> {
    if let Ok(bin) = std::env::var("WILLWATCH_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("willwatch")).ok_or("no target folder")?;
    if !bin.exists() {
        return Err(format!("{} is missing: build it first (cargo build --release)", bin.display()));
    }
    Ok(bin)
}

/// CPU time (user + system) of the children this process has waited for.
fn children_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |u| {
        let (user, system) = (u.user_time(), u.system_time());
        Duration::from_micros((user.tv_sec() * 1_000_000 + user.tv_usec()) as u64)
            + Duration::from_micros((system.tv_sec() * 1_000_000 + system.tv_usec()) as u64)
    })
}

/// `mosquitto_sub -C n`: its time to receive every retained status, and
/// its CPU time (from the kernel, once it is reaped).
pub async fn mosquitto_sub_burst(port: u16, n: usize) -> Result<(Duration, Duration), String> {
    mosquitto_sub_filter(port, "bench/+/status", n).await
}

/// `mosquitto_sub -t filter -C n`: time and CPU to receive n messages.
pub async fn mosquitto_sub_filter(port: u16, filter: &str, n: usize) -> Result<(Duration, Duration), String> {
    let cpu_before = children_cpu();
    let start = Instant::now();
    let status = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", filter, "-q", "1", "-C", &n.to_string()])
        .stdout(Stdio::null())
        .status()
        .await
        .map_err(|e| format!("mosquitto_sub: {e}"))?;
    if !status.success() {
        return Err(format!("mosquitto_sub exited {status}"));
    }
    Ok((start.elapsed(), children_cpu().saturating_sub(cpu_before)))
}

/// The plain paho-mqtt script (`bench/peer_paho.py`): its time to know
/// every device, and its peak RSS in KiB. `None` when Python or paho-mqtt
/// is missing.
pub async fn paho_burst(port: u16, n: usize) -> Option<(Duration, u64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/peer_paho.py");
    let start = Instant::now();
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([port.to_string(), n.to_string()])
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    let elapsed = start.elapsed();
    let rss = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    out.status.success().then_some((elapsed, rss))
}

/// A subscriber that does nothing but count: the floor for a Rust client.
pub async fn rumqttc_burst(port: u16, n: usize) -> Result<Duration, String> {
    let start = Instant::now();
    let mut o = MqttOptions::new(format!("bench-counter-{}", start.elapsed().as_nanos()), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    client.subscribe("bench/+/status", QoS::AtLeastOnce).await.map_err(|e| e.to_string())?;
    let mut seen = 0;
    while seen < n {
        if let Event::Incoming(Packet::Publish(_)) = eventloop.poll().await.map_err(|e| e.to_string())? {
            seen += 1;
        }
    }
    Ok(start.elapsed())
}

/// A running daemon, killed when dropped.
pub struct Daemon {
    child: Child,
    bin: PathBuf,
    config: PathBuf,
    metrics_url: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// A daemon for `rest`, with room for any fleet the benchmark makes.
    pub fn start(bin: &Path, port: u16, rest: &str) -> Result<Daemon, String> {
        Daemon::start_with(bin, port, "max_devices = 10000000", rest)
    }

    /// As `start`, with `top` among the top-level settings.
    pub fn start_with(bin: &Path, port: u16, top: &str, rest: &str) -> Result<Daemon, String> {
        Daemon::start_config(bin, |state, http| {
            format!(
                "state_dir = \"{}\"\n{top}\n[broker]\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"bench-willwatch-{}\"\n\
                 settle = \"0s\"\nresync = \"0s\"\n\n[http]\nlisten = \"{http}\"\n\n{rest}",
                state.display(),
                http.port()
            )
        })
    }

    /// A daemon on the config `config` makes from its state directory and
    /// its HTTP address.
    pub fn start_config(
        bin: &Path,
        config: impl FnOnce(&Path, std::net::SocketAddr) -> String,
    ) -> Result<Daemon, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let http =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?;
        let config = config(dir.path(), http);
        let path = dir.path().join("willwatch.toml");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        Ok(Daemon {
            child: spawn(bin, &path)?,
            bin: bin.to_path_buf(),
            config: path,
            metrics_url: format!("http://{http}/metrics"),
            _dir: dir,
        })
    }

    /// SIGKILL, then the same config and state again.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.child = spawn(&self.bin, &self.config)?;
        Ok(())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn metric(&self, client: &reqwest::Client, name: &str) -> Option<f64> {
        let text = client.get(&self.metrics_url).send().await.ok()?.text().await.ok()?;
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    }

    pub async fn wait_metric(&self, name: &str, at_least: f64) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + LIMIT;
        loop {
            if self.metric(&client, name).await.is_some_and(|v| v >= at_least) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{name} never reached {at_least}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status(self.child.id(), "VmRSS:")
    }

    pub fn http_address(&self) -> String {
        self.metrics_url.trim_start_matches("http://").trim_end_matches("/metrics").to_string()
    }

    pub fn peak_rss_kib(&self) -> u64 {
        proc_status(self.child.id(), "VmHWM:")
    }

    /// User plus system CPU time so far.
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        Duration::from_millis(cpu_ticks(&stat).unwrap_or(0) * 10)
    }
}

/// utime + stime (fields 14 and 15 of `/proc/PID/stat`, in clock ticks of
/// 10 ms), counted by position after the name's closing parenthesis: other
/// fields can be negative (`tpgid` is -1 without a controlling terminal).
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The fields after the name start at the third (the state letter).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn spawn(bin: &Path, config: &Path) -> Result<Child, String> {
    Command::new(bin)
        .args(["run", "--log-level", "warn", "--log-format", "text", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct BurstRun {
    pub elapsed: Duration,
    pub peak_rss_kib: u64,
    /// CPU time until every device was known.
    pub cpu: Duration,
}

pub const PATTERN: &str = "[[device]]\ntopic = \"bench/{id}/status\"\nactions = []\n";

pub async fn willwatch_burst(bin: &Path, port: u16, n: usize) -> Result<BurstRun, String> {
    willwatch_burst_with(bin, port, n, PATTERN).await
}

/// As `willwatch_burst`, watching with `devices` (a `[[device]]` table).
pub async fn willwatch_burst_with(bin: &Path, port: u16, n: usize, devices: &str) -> Result<BurstRun, String> {
    let start = Instant::now();
    let daemon = Daemon::start(bin, port, devices)?;
    daemon.wait_metric("willwatch_devices{state=\"online\"}", n as f64).await?;
    let elapsed = start.elapsed();
    let cpu = daemon.cpu();
    // The peak includes the state file written after the burst.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(BurstRun { elapsed, peak_rss_kib: daemon.peak_rss_kib(), cpu })
}

pub struct Latency {
    pub watcher: &'static str,
    pub samples: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub peak_rss_kib: u64,
}

/// Who turns wills into webhooks in a latency run.
#[derive(Clone, Copy)]
pub enum Watcher {
    /// willwatch with its default `state_sync = "full"` (an fsync per
    /// commit in the path of every alert).
    Willwatch,
    /// willwatch with `state_sync = "normal"` (the commit reaches the OS).
    WillwatchNormalSync,
    /// mqttwarn (PyPI) with its `http_urllib` service.
    Mqttwarn,
}

/// What the receiver saw: per topic, when an offline arrived, and how
/// many onlines (births) arrived.
#[derive(Default)]
struct Received {
    offline: HashMap<String, Instant>,
    online: usize,
}

/// From a plain subscriber seeing each will to the webhook for it arriving.
/// Devices `first..first + k` are used, so runs do not share retained wills.
pub async fn detection_latency(
    bin: &Path,
    port: u16,
    first: usize,
    k: usize,
    watcher: Watcher,
) -> Result<Latency, String> {
    let received: Arc<Mutex<Received>> = Arc::default();
    let sink = Arc::clone(&received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let base = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    // willwatch POSTs its event JSON; mqttwarn GETs /<topic>/<payload>.
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
        let sink = Arc::clone(&sink);
        async move {
            let at = Instant::now();
            let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let (topic, payload) = match event["event"].as_str() {
                Some(kind) => (event["topic"].as_str().unwrap_or("").to_string(), kind.to_string()),
                None => {
                    let path = uri.path().trim_start_matches('/');
                    let (topic, payload) = path.rsplit_once('/').unwrap_or((path, ""));
                    (topic.to_string(), payload.to_string())
                }
            };
            let mut seen = sink.lock().unwrap();
            match payload.as_str() {
                "offline" => {
                    seen.offline.entry(topic).or_insert(at);
                }
                "online" => seen.online += 1,
                _ => {}
            }
            "ok"
        }
    });
    // No Nagle delay on responses: a kept-alive connection's next request
    // must not wait for the previous response's last segment.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });

    let wills: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (observer, mut events) =
        AsyncClient::new(MqttOptions::new(format!("bench-observer-{first}"), "127.0.0.1", port), 16);
    observer.subscribe("bench/+/status", QoS::AtMostOnce).await.map_err(|e| e.to_string())?;
    let seen = Arc::clone(&wills);
    let observing = tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event
                && p.payload.as_ref() == b"offline"
                && !p.retain
            {
                seen.lock().unwrap().entry(p.topic.clone()).or_insert_with(Instant::now);
            }
        }
    });

    // Whichever runs, it lives until the end of the measurement.
    let mut daemon = None;
    let mut mqttwarn = None;
    let pid = match watcher {
        Watcher::Willwatch | Watcher::WillwatchNormalSync => {
            let rest = format!(
                "[action.hook]\ntype = \"webhook\"\nurl = \"{base}/hook\"\n\n[[device]]\ntopic = \"bench/{{id}}/status\"\nactions = [\"hook\"]\n"
            );
            let started = if matches!(watcher, Watcher::WillwatchNormalSync) {
                Daemon::start_with(bin, port, "state_sync = \"normal\"", &rest)?
            } else {
                Daemon::start(bin, port, &rest)?
            };
            started.wait_metric("willwatch_broker_connected", 1.0).await?;
            daemon.insert(started).child.id()
        }
        Watcher::Mqttwarn => {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let ini = format!(
                "[defaults]\nhostname = '127.0.0.1'\nport = {port}\nclientid = 'bench-mqttwarn'\nlaunch = http_urllib\n\n\
                 [config:http_urllib]\ntimeout = 5\ntargets = {{\n    'hook': [ 'get', '{base}/{{topic}}/{{payload}}', None, None ],\n  }}\n\n\
                 [bench/+/status]\ntargets = http_urllib:hook\n"
            );
            std::fs::write(dir.path().join("mqttwarn.ini"), ini).map_err(|e| e.to_string())?;
            let child = Command::new("mqttwarn")
                .env("MQTTWARNINI", dir.path().join("mqttwarn.ini"))
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("mqttwarn (pip install mqttwarn): {e}"))?;
            let pid = child.id();
            mqttwarn = Some((KillOnDrop(child), dir));
            pid
        }
    };
    let mut devices = Vec::new();
    for i in first..first + k {
        devices.push(load::Device::connect(port, i).await?);
    }
    match &daemon {
        Some(daemon) => daemon.wait_metric("willwatch_devices{state=\"online\"}", k as f64).await?,
        None => {
            // mqttwarn has nothing to ask: wait until it has relayed every birth.
            let deadline = Instant::now() + Duration::from_secs(60);
            while received.lock().unwrap().online < k && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    for device in devices {
        device.kill();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().offline.len() < k && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    observing.abort();
    let peak_rss_kib = proc_status(pid, "VmHWM:");
    drop((daemon, mqttwarn));
    let received = received.lock().unwrap();
    let wills = wills.lock().unwrap();
    let mut samples: Vec<Duration> = received
        .offline
        .iter()
        .filter_map(|(topic, at)| wills.get(topic).map(|w| at.saturating_duration_since(*w)))
        .collect();
    if samples.is_empty() {
        return Err("no webhook arrived".into());
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let watcher = match watcher {
        Watcher::Willwatch => "willwatch",
        Watcher::WillwatchNormalSync => "willwatch, state_sync = normal",
        Watcher::Mqttwarn => "mqttwarn",
    };
    Ok(Latency {
        watcher,
        samples: samples.len(),
        p50: pick(0.5),
        p99: pick(0.99),
        max: *samples.last().unwrap(),
        peak_rss_kib,
    })
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub struct Steady {
    pub rate: u64,
    pub sent: u64,
    pub willwatch: u64,
    pub counter: u64,
    pub cpu: Duration,
}

/// Open-loop flips at `rate` on a fresh broker: what willwatch and a bare
/// counter received.
pub async fn steady(bin: &Path, rate: u64, duration: Duration) -> Result<Steady, String> {
    const DEVICES: usize = 1000;
    let broker = crate::broker::Broker::start().map_err(|e| e.to_string())?;
    let port = broker.port;
    let daemon = Daemon::start(bin, port, PATTERN)?;
    let client = reqwest::Client::new();
    daemon.wait_metric("willwatch_broker_connected", 1.0).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = daemon.metric(&client, "willwatch_messages_total").await.unwrap_or(0.0) as u64;
    let cpu_before = daemon.cpu();

    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (counter, mut events) =
        AsyncClient::new(MqttOptions::new(format!("bench-steady-{rate}"), "127.0.0.1", port), 16);
    counter.subscribe("bench/+/status", QoS::AtMostOnce).await.map_err(|e| e.to_string())?;
    let count = Arc::clone(&counted);
    let mut subscribed = false;
    while !subscribed {
        subscribed = matches!(events.poll().await, Ok(Event::Incoming(Packet::SubAck(_))));
    }
    let counting = tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event
                && !p.retain
            {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let sent = load::flip(port, DEVICES, rate, duration, QoS::AtMostOnce).await?;
    // Let both drain what is in flight.
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.abort();
    let after = daemon.metric(&client, "willwatch_messages_total").await.unwrap_or(0.0) as u64;
    Ok(Steady {
        rate,
        sent,
        willwatch: after.saturating_sub(before),
        counter: counted.load(std::sync::atomic::Ordering::Relaxed),
        cpu: daemon.cpu().saturating_sub(cpu_before),
    })
}

#[cfg(test)]
mod tests {
    use super::cpu_ticks;

    /// Guards the benchmark's CPU figures: a daemon has no controlling
    /// terminal, so `tpgid` is -1; skipping what does not parse as unsigned
    /// shifted the fields and read stime + cutime.
    #[test]
    fn cpu_is_utime_plus_stime_counted_by_position_past_negative_fields() {
        let stat = "4242 (will watch) S 1 4242 4242 0 -1 4194560 1855 0 0 0 45 7 3 2 20 0 6 0 1234 1057908 43047 \
                    18446744073709551615 1 1 0 0 0 0 0 4096 17638 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(cpu_ticks(stat), Some(45 + 7));
    }
}
