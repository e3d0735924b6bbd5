//! Log output as users read it: the journal's `<N>` priority prefix
//! without timestamps (forced, or detected from JOURNAL_STREAM), and
//! timestamped text otherwise.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Broker, config, eventually};

/// Runs the daemon with stderr on a pipe we made (so we know its inode),
/// until `until` has been logged, then kills it and returns the lines.
async fn run_and_read(args: &[&str], journal_stream: bool, until: &str) -> Vec<String> {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(&path, config(&broker, "[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\n")).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let meta = std::fs::File::from(std::os::fd::OwnedFd::from(writer.try_clone().unwrap())).metadata().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_willwatch"));
    command.arg("run").arg("-c").arg(&path).args(args).env_remove("RUST_LOG").stderr(writer).stdout(Stdio::null());
    if journal_stream {
        command.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    } else {
        command.env_remove("JOURNAL_STREAM");
    }
    let mut child = command.spawn().unwrap();
    drop(command);
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    support::publish(broker.port, "plant/pump-7/status", "offline", true).await;
    eventually(until, Duration::from_secs(10), || {
        lines.lock().unwrap().iter().any(|l| l.contains(until)).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    lines.lock().unwrap().clone()
}

fn line_with<'a>(lines: &'a [String], text: &str) -> &'a str {
    lines.iter().find(|l| l.contains(text)).unwrap_or_else(|| panic!("no line with {text:?} in {lines:#?}"))
}

#[tokio::test]
async fn journal_stream_on_stderr_gets_priority_prefixes_and_no_timestamps() {
    let lines = run_and_read(&[], true, "device offline").await;
    assert!(line_with(&lines, "willwatch started").starts_with("<6>"), "{lines:#?}");
    let offline = line_with(&lines, "device offline");
    assert!(offline.starts_with("<4>"), "{offline}");
    assert!(offline.contains("device=pump-7") && offline.contains("topic=plant/pump-7/status"), "{offline}");
    assert!(lines.iter().all(|l| l.starts_with('<')), "{lines:#?}");
    assert!(!offline.contains("Z "), "a timestamp in {offline}");
}

#[tokio::test]
async fn journal_format_can_be_forced() {
    let lines = run_and_read(&["--log-format", "journal"], false, "device offline").await;
    assert!(line_with(&lines, "device offline").starts_with("<4>"), "{lines:#?}");
}

#[tokio::test]
async fn a_terminal_or_file_gets_timestamped_text() {
    let lines = run_and_read(&[], false, "device offline").await;
    let offline = line_with(&lines, "device offline");
    assert!(offline.starts_with("20") && offline.contains(" WARN "), "{offline}");
}

#[tokio::test]
async fn log_level_flag_shows_debug_lines() {
    let lines = run_and_read(&["--log-level", "debug"], false, "device offline").await;
    assert!(lines.iter().any(|l| l.contains("DEBUG")), "{lines:#?}");
    let quiet = run_and_read(&[], false, "device offline").await;
    assert!(!quiet.iter().any(|l| l.contains("DEBUG")), "{quiet:#?}");
}
