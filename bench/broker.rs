//! The benchmark's own mosquitto, with its config recorded in the report.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Unlimited queues: the benchmark measures delivery, not mosquitto's
/// drop policy (the fault suite covers that with a default config).
pub const CONFIG: &str = "allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\npersistence false\n";

pub struct Broker {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The listener sends small packets at once (no Nagle), as
/// docs/operations.md recommends: the soak runs with it.
pub const NODELAY: &str = "set_tcp_nodelay true\n";

impl Broker {
    pub fn start() -> std::io::Result<Broker> {
        Broker::start_with("")
    }

    /// With `listener` options (`NODELAY`).
    pub fn start_with(listener: &str) -> std::io::Result<Broker> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let mut conf = format!("listener {port} 127.0.0.1\n{listener}{CONFIG}");
        if std::fs::read_to_string("/proc/self/status")?
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        {
            conf.push_str("user root\n");
        }
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf)?;
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or_else(|| std::io::Error::other("the benchmark needs mosquitto (apt-get install mosquitto)"))?;
        let child = Command::new(bin).arg("-c").arg(&path).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("mosquitto did not start"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Broker { port, child, _dir: dir })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
