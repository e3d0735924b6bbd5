//! `Type=notify` behaviour, read from a real notify socket the way systemd
//! reads it: READY before the broker answers, STATUS, RELOADING around a
//! reload, WATCHDOG pings and STOPPING.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use support::{Broker, Daemon, SOON, config, eventually};

struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    seen: Vec<String>,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        NotifySocket { socket, path, _dir: dir, seen: Vec::new() }
    }

    /// Reads what has arrived; each datagram's lines are kept in order.
    fn drain(&mut self) -> &[String] {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.seen.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string));
        }
        &self.seen
    }

    async fn wait_for(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> usize {
        eventually(what, SOON, || self.drain().iter().position(|l| matches(l))).await
    }
}

#[tokio::test]
async fn ready_comes_before_the_broker_answers_and_status_follows_the_link() {
    let Some(mut broker) = Broker::mosquitto(Default::default()) else {
        return;
    };
    let mut notify = NotifySocket::new();
    broker.stop();
    let daemon = Daemon::start_with(&config(&broker, ""), &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())]);
    notify.wait_for("READY=1", |l| l == "READY=1").await;
    broker.restart();
    daemon.wait_connected().await;
    notify
        .wait_for("a connected STATUS", |l| {
            l.starts_with("STATUS=connected to mqtt://127.0.0.1:")
                && l.ends_with("devices: 0 online, 0 offline, 0 unknown")
        })
        .await;
}

#[tokio::test]
async fn reload_is_bracketed_by_reloading_and_ready_and_stop_says_stopping() {
    let broker = Broker::start();
    let mut notify = NotifySocket::new();
    let mut daemon = Daemon::start_with(&config(&broker, ""), &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())]);
    let first_ready = notify.wait_for("READY=1", |l| l == "READY=1").await;
    daemon.wait_connected().await;

    daemon.signal("HUP");
    let reloading = notify.wait_for("RELOADING=1", |l| l == "RELOADING=1").await;
    assert!(reloading > first_ready);
    let seen = notify.drain().to_vec();
    let monotonic = seen.iter().skip(reloading).any(|l| l.starts_with("MONOTONIC_USEC="));
    assert!(monotonic, "RELOADING=1 without MONOTONIC_USEC: {seen:?}");
    eventually("READY=1 after the reload", SOON, || {
        notify.drain().iter().skip(reloading).any(|l| l == "READY=1").then_some(())
    })
    .await;

    daemon.signal("TERM");
    notify.wait_for("STOPPING=1", |l| l == "STOPPING=1").await;
    assert!(daemon.exit_status(SOON).await.success());
}

#[tokio::test]
async fn watchdog_is_pinged_at_half_its_timeout() {
    let broker = Broker::start();
    let mut notify = NotifySocket::new();
    let _daemon = Daemon::start_with(
        &config(&broker, ""),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap()), ("WATCHDOG_USEC", "300000")],
    );
    eventually("three WATCHDOG=1 pings", Duration::from_secs(5), || {
        (notify.drain().iter().filter(|l| *l == "WATCHDOG=1").count() >= 3).then_some(())
    })
    .await;
}
