//! What the integration tests share: a real broker per test, the real
//! daemon binary, simulated devices, and polling with deadlines.
//!
//! Each test binary uses only part of this, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod daemon;
pub mod devices;
pub mod once;
pub mod pki;
pub mod proxy;
pub mod receiver;
pub mod schema;
pub mod seed;
pub mod smtp;
pub mod sparkplug;
pub mod synapse;
pub mod wait;

pub use broker::{Broker, BrokerOptions};
pub use daemon::Daemon;
pub use devices::{LiveDevice, SimDevice, Subscriber, publish, publish_many, retained, wait_retained};
pub use receiver::{Behaviour, Receiver};
pub use seed::fault_seed;
pub use wait::{eventually, observe};

/// A config for `broker` with the daemon's presence on `willwatch/test/status`,
/// no settle window (tests of it set their own), its HTTP endpoint on a
/// free port (the same after a restart), followed by `rest` (devices,
/// actions, defaults).
pub fn config(broker: &Broker, rest: &str) -> String {
    format!(
        "state_dir = \"state\"\n\n[broker]\nurl = \"{}\"\nclient_id = \"willwatch-test-{}\"\nkeep_alive = \"5s\"\nsettle = \"0s\"\nconfirm_within = \"2s\"\n\n\
         [presence]\ntopic = \"willwatch/test/status\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n{rest}",
        broker.url(),
        broker.port,
        broker::http_port()
    )
}

/// How long a test waits for something that should take milliseconds.
pub const SOON: std::time::Duration = std::time::Duration::from_secs(10);

/// The device `sync_with_sentinel` uses; add it to a test's config.
pub const SENTINEL: &str = "[[device]]\nid = \"sentinel\"\ntopic = \"plant/sentinel/status\"\n";

/// Publishes `messages`, then a sentinel offline, from one client (so the
/// broker delivers them in that order), and waits for the sentinel's event:
/// everything before it has been handled. Needs `SENTINEL` in the config.
pub async fn sync_with_sentinel(broker: &Broker, daemon: &Daemon, messages: &[(&str, &str)]) {
    let n = daemon.events("sentinel", "offline").len() + 1;
    let mut all: Vec<(&str, Vec<u8>)> = messages.iter().map(|(t, p)| (*t, p.as_bytes().to_vec())).collect();
    all.push(("plant/sentinel/status", b"online".to_vec()));
    all.push(("plant/sentinel/status", b"offline".to_vec()));
    devices::publish_many(broker.port, &all, false).await;
    daemon.wait_event("sentinel", "offline", n).await;
}

/// `willwatch notify test NAME -c FILE`: the command run from a temporary
/// directory holding `config` and `files`; its exit code and what it said.
pub fn notify_test(config: &str, files: &[(&str, &str)], name: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.toml"), config).unwrap();
    for (file, content) in files {
        std::fs::write(dir.path().join(file), content).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .args(["notify", "test", name, "-c"])
        .arg(dir.path().join("w.toml"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), said)
}

/// Whether Python can import `module` (a server a test runs). When it
/// cannot, says so and the test skips, unless `required` (an environment
/// variable CI sets to 1) makes that a failure naming the `package` to
/// install.
pub fn python_module(module: &str, required: &str, package: &str) -> bool {
    let present = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        let must = std::env::var(required).is_ok_and(|v| v == "1");
        assert!(!must, "{required}=1 but {module} is not installed (pip install {package})");
        eprintln!("SKIPPED: this test needs {module} (pip install {package}), which is not installed");
    }
    present
}
