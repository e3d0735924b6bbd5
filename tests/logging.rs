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
    run_with_payload(args, journal_stream, "offline", until).await
}

/// As `run_and_read`, publishing `payload` as pump-7's status.
async fn run_with_payload(args: &[&str], journal_stream: bool, payload: &str, until: &str) -> Vec<String> {
    let pump = "[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\n";
    run_publishing(args, journal_stream, pump, "plant/pump-7/status", payload, until).await
}

/// As `run_and_read`, watching `devices` and publishing `payload` on `topic`.
async fn run_publishing(
    args: &[&str],
    journal_stream: bool,
    devices: &str,
    topic: &str,
    payload: &str,
    until: &str,
) -> Vec<String> {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    let text = config(&broker, devices);
    support::schema::assert_valid(&text);
    std::fs::write(&path, text).unwrap();
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
    support::publish(broker.port, topic, payload, true).await;
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
async fn without_the_journal_socket_the_journal_stream_gets_priority_prefixes_and_no_timestamps() {
    let lines = run_and_read(&[], true, "device offline").await;
    assert!(line_with(&lines, "willwatch started").starts_with("<6>"), "{lines:#?}");
    let offline = line_with(&lines, "device offline");
    assert!(offline.starts_with("<4>"), "{offline}");
    assert!(offline.contains("device=pump-7") && offline.contains("topic=plant/pump-7/status"), "{offline}");
    assert!(lines.iter().all(|l| l.starts_with('<')), "{lines:#?}");
    assert!(!offline.contains("Z "), "a timestamp in {offline}");
}

#[tokio::test]
async fn a_payload_cannot_forge_a_log_line_or_drive_the_terminal() {
    let forged = "junk\n<3>device offline device=pump-7 FORGED\u{1b}[2J\0";
    for format in ["journal", "text"] {
        let lines = run_with_payload(&["--log-format", format], false, forged, "neither an online").await;
        let warning = line_with(&lines, "neither an online");
        assert!(warning.contains("junk\\n<3>device offline device=pump-7 FORGED\\u{1b}[2J\\u{0}"), "{warning}");
        assert!(!lines.iter().any(|l| l.contains("FORGED") && !l.contains("neither an online")), "{lines:#?}");
        assert!(!lines.iter().any(|l| l.contains('\u{1b}') || l.contains('\0')), "{lines:#?}");
    }
}

/// The `key=value` fields of a text line, as a logfmt reader splits them:
/// a value in double quotes runs to the closing quote (`\"` and `\\`
/// escaped), any other to the next space.
fn logfmt_fields(line: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    while chars.peek().is_some() {
        let mut word = String::new();
        let mut value = None;
        while let Some(c) = chars.next() {
            match c {
                ' ' => break,
                '=' if value.is_none() => {
                    let mut v = String::new();
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        while let Some(c) = chars.next() {
                            match c {
                                '\\' => v.extend(chars.next()),
                                '"' => break,
                                c => v.push(c),
                            }
                        }
                    } else {
                        while let Some(c) = chars.next_if(|c| *c != ' ') {
                            v.push(c);
                        }
                    }
                    value = Some(v);
                }
                c if value.is_none() => word.push(c),
                _ => {}
            }
        }
        if let Some(value) = value {
            fields.push((word, value));
        }
    }
    fields
}

/// A device id made to look like more fields (`device=pump-7` among them)
/// stays one quoted value: no line reads as pump-7's, in text or journal
/// output.
#[tokio::test]
async fn a_device_id_cannot_forge_fields_of_a_text_line() {
    let forged = r#"pump-7 event="online" previous="offline" device=pump-7"#;
    let pattern = "[[device]]\ntopic = \"fleet/{id}/status\"\n";
    for format in ["text", "journal"] {
        let topic = format!("fleet/{forged}/status");
        let lines =
            run_publishing(&["--log-format", format], false, pattern, &topic, "offline", "device offline").await;
        let offline = line_with(&lines, "device offline");
        let fields = logfmt_fields(offline);
        let devices: Vec<&str> = fields.iter().filter(|(k, _)| k == "device").map(|(_, v)| v.as_str()).collect();
        assert_eq!(devices, [forged], "{format}: {offline}");
        let events: Vec<&str> = fields.iter().filter(|(k, _)| k == "event").map(|(_, v)| v.as_str()).collect();
        assert_eq!(events, ["offline"], "{format}: {offline}");
        for line in &lines {
            assert!(!logfmt_fields(line).iter().any(|(k, v)| k == "device" && v == "pump-7"), "{format}: {line}");
        }
    }
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
    // What a person reads; ids are for JSON and the journal.
    assert!(offline.contains("device offline action=log device=pump-7 topic=plant/pump-7/status"), "{offline}");
    assert!(offline.contains("payload=offline"), "{offline}");
    assert!(!offline.contains("event_id") && !offline.contains("message_id"), "{offline}");
    let after_level = offline.split_once(" WARN ").map_or("", |(_, rest)| rest);
    assert!(!after_level.contains("  ") && !offline.ends_with(' '), "no gap where a field was left out: {offline}");
    let journal = run_and_read(&["--log-format", "journal"], false, "device offline").await;
    assert!(line_with(&journal, "device offline").contains("event_id="), "{journal:#?}");
}

#[tokio::test]
async fn log_level_flag_shows_debug_lines() {
    let lines = run_and_read(&["--log-level", "debug"], false, "device offline").await;
    assert!(lines.iter().any(|l| l.contains("DEBUG")), "{lines:#?}");
    let quiet = run_and_read(&[], false, "device offline").await;
    assert!(!quiet.iter().any(|l| l.contains("DEBUG")), "{quiet:#?}");
}

/// One native-protocol journal entry as `KEY -> value`.
/// A journal entry's fields; a field written twice fails the test (a map
/// would hide it).
fn parse_journal_entry(datagram: &[u8]) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    let mut insert = |key: String, value: String| {
        assert!(!fields.contains_key(&key), "{key} written twice in one entry");
        fields.insert(key, value);
    };
    let mut rest = datagram;
    while !rest.is_empty() {
        let line_end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let line = &rest[..line_end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            insert(String::from_utf8_lossy(&line[..eq]).into(), String::from_utf8_lossy(&line[eq + 1..]).into());
            rest = &rest[(line_end + 1).min(rest.len())..];
        } else {
            // KEY\n<64-bit little-endian length><value>\n
            let key = String::from_utf8_lossy(line).into_owned();
            let after = &rest[line_end + 1..];
            let len = u64::from_le_bytes(after[..8].try_into().unwrap()) as usize;
            insert(key, String::from_utf8_lossy(&after[8..8 + len]).into());
            rest = &after[(8 + len + 1).min(after.len())..];
        }
    }
    fields
}

/// Whether this process may make a mount namespace (root may; CI runs as root).
fn can_unshare() -> bool {
    Command::new("unshare").args(["--mount", "true"]).status().is_ok_and(|s| s.success())
}

#[tokio::test]
async fn under_systemd_entries_go_to_the_journal_with_structured_fields() {
    if !can_unshare() {
        assert!(std::env::var_os("CI").is_none(), "CI must be able to run `unshare --mount` (run as root)");
        eprintln!("SKIPPED: needs `unshare --mount` (root) to give the daemon a journal socket of the test's");
        return;
    }
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(run.join("systemd/journal")).unwrap();
    let socket = std::os::unix::net::UnixDatagram::bind(run.join("systemd/journal/socket")).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let config_path = dir.path().join("w.toml");
    std::fs::write(&config_path, config(&broker, "[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\n"))
        .unwrap();
    // The daemon sees our socket as /run/systemd/journal/socket, in a mount
    // namespace of its own.
    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "sh",
            "-c",
            "mount --bind \"$1\" /run && exec \"$2\" run --log-format journald -c \"$3\"",
            "sh",
        ])
        .arg(&run)
        .arg(env!("CARGO_BIN_EXE_willwatch"))
        .arg(&config_path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs");
    support::publish(broker.port, "plant/pump-7/status", "offline", true).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut entries = Vec::new();
    let mut offline = None;
    let online = loop {
        let mut buf = vec![0u8; 65536];
        if let Ok(n) = socket.recv(&mut buf) {
            // Every entry is parsed: a field written twice in any fails.
            let entry = parse_journal_entry(&buf[..n]);
            // By the message's catalogue id, not its words.
            match entry.get("MESSAGE_ID").map(String::as_str) {
                Some("6f0c2a4e9b1d4c7a8e35d1f0b2a9c401") => {
                    offline = Some(entry);
                    support::publish(broker.port, "plant/pump-7/status", "online", true).await;
                    continue;
                }
                Some("6f0c2a4e9b1d4c7a8e35d1f0b2a9c402") => break entry,
                _ => entries.push(entry),
            }
        }
        assert!(std::time::Instant::now() < deadline, "no offline and online entries in the journal; got {entries:?}");
    };
    let offline = offline.expect("the offline came first");
    assert_eq!(online["MESSAGE_ID"], "6f0c2a4e9b1d4c7a8e35d1f0b2a9c402");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(offline["DEVICE"], "pump-7");
    assert_eq!(offline["EVENT"], "offline");
    assert_eq!(offline["TOPIC"], "plant/pump-7/status");
    assert_eq!(offline["PRIORITY"], "4");
    assert_eq!(offline["MESSAGE_ID"], "6f0c2a4e9b1d4c7a8e35d1f0b2a9c401");
    assert_eq!(offline["SYSLOG_IDENTIFIER"], "willwatch");
    assert!(entries.iter().any(|e| e.get("MESSAGE").is_some_and(|m| m == "willwatch started")), "{entries:?}");
}
