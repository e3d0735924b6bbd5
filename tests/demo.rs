//! The demo a newcomer runs first: it must show an outage and a recovery
//! within its first 30 seconds, the mixed fleet's bridge dropping with one
//! alert, and stop cleanly on Ctrl-C.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::eventually;

/// `cargo test` builds the examples next to the test binaries' crate.
fn demo_binary() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_willwatch"));
    let demo = bin.parent().unwrap().join("examples/demo");
    assert!(demo.exists(), "{} is missing: run the whole `cargo test`, which builds the examples", demo.display());
    demo
}

#[tokio::test]
async fn demo_shows_an_outage_and_a_recovery_then_stops_on_ctrl_c() {
    let mut child = Command::new(demo_binary())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .expect("the demo starts");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
    }
    let seen = |text: &str| lines.lock().unwrap().iter().any(|l| l.contains(text));
    eventually("an outage and a recovery", Duration::from_secs(30), || {
        (seen("device offline") && seen("device online after") && seen("webhook ← offline")).then_some(())
    })
    .await;
    // The mixed fleet: the bridge's drop is one alert that counts its devices.
    eventually("the Zigbee2MQTT bridge's drop", Duration::from_secs(45), || {
        seen("device=z2m-bridge topic=zigbee2mqtt/bridge/state event=\"offline\"").then_some(())
    })
    .await;
    assert!(seen("children_offline=3"), "{}", lines.lock().unwrap().join("\n"));
    assert!(!seen("webhook ← offline hall/bulb"), "a device behind the bridge was alerted");
    // It says where its live page is, and its config passes the JSON schema.
    assert!(seen("the live status page: http://127.0.0.1:"), "{}", lines.lock().unwrap().join("\n"));
    let config = lines.lock().unwrap().iter().find_map(|l| l.split_once(", config ").map(|(_, path)| path.to_string()));
    let config = config.expect("the demo names its config");
    support::schema::assert_valid(&std::fs::read_to_string(&config).expect("the demo's config is there while it runs"));

    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = eventually("the demo to stop", Duration::from_secs(15), || child.try_wait().unwrap()).await;
    assert!(exit.success(), "exit {exit:?}\n{}", lines.lock().unwrap().join("\n"));
    assert!(seen("published our offline and disconnected"));
}
