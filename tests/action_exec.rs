//! The exec action: argv without a shell, the event in the environment and
//! on stdin, a hanging command killed with its whole process group, and a
//! program that cannot start retried or dead-lettered, never lost.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::{Broker, Daemon, SOON, config, eventually, publish, publish_many};

fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn hostile_device_ids_are_only_ever_text() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let recorder = script(
        out.path(),
        "record",
        &format!(
            "n=$(date +%s%N)\nprintf '%s\\n' \"$@\" > {dir}/args.$n\nenv | grep ^WILLWATCH_ | sort > {dir}/env.$n\ncat > {dir}/stdin.$n",
            dir = out.path().display()
        ),
    );
    let text = format!(
        "[action.page]\ntype = \"exec\"\ncommand = [\"{}\", \"{{id}}\", \"{{event}}\", \"--topic={{topic}}\"]\n\n\
         [[device]]\ntopic = \"plant/{{id}}/status\"\nactions = [\"page\"]\n",
        recorder.display()
    );
    let daemon = Daemon::start(&config(&broker, &text));
    daemon.wait_connected().await;
    let hostile = "a;touch pwned$(touch pwned2)`touch pwned3` && reboot";
    publish(broker.port, &format!("plant/{hostile}/status"), "offline", false).await;

    daemon.wait_log("the command to finish", SOON, |l| l["what"] == "command_finished").await;
    let file = |prefix: &str| {
        let entry = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} file"));
        std::fs::read_to_string(entry).unwrap()
    };
    let args: Vec<String> = file("args.").lines().map(str::to_string).collect();
    assert_eq!(args, vec![hostile.to_string(), "offline".into(), format!("--topic=plant/{hostile}/status")]);
    let env = file("env.");
    assert!(env.contains(&format!("WILLWATCH_DEVICE={hostile}\n")), "{env}");
    assert!(env.contains("WILLWATCH_EVENT=offline\n"), "{env}");
    let stdin: serde_json::Value = serde_json::from_str(&file("stdin.")).unwrap();
    assert_eq!(stdin["device"], hostile);
    assert_eq!(stdin["event"], "offline");
    for dir in [out.path(), daemon.dir()] {
        for name in ["pwned", "pwned2", "pwned3"] {
            assert!(!dir.join(name).exists(), "{name} was created: a shell ran");
        }
    }
}

#[tokio::test]
async fn a_hanging_command_is_killed_with_its_children_at_the_timeout() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let pids = out.path().join("pids");
    let hang = script(out.path(), "hang", &format!("sleep 300 &\necho $$ $! > {}\nwait", pids.display()));
    let text = format!(
        "[action.page]\ntype = \"exec\"\ncommand = [\"{}\"]\ntimeout = \"500ms\"\n\n\
         [[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\nactions = [\"log\", \"page\"]\n",
        hang.display()
    );
    let daemon = Daemon::start(&config(&broker, &text));
    daemon.wait_connected().await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let killed = daemon.wait_log("the timeout", SOON, |l| l["what"] == "command_timed_out").await;
    assert_eq!(killed["level"], "ERROR");
    let recorded = std::fs::read_to_string(&pids).unwrap();
    for pid in recorded.split_whitespace() {
        let proc = format!("/proc/{pid}");
        eventually("the process to be gone", Duration::from_secs(5), || {
            let gone = !Path::new(&proc).exists()
                || std::fs::read_to_string(format!("{proc}/stat")).is_ok_and(|s| s.contains(") Z "));
            gone.then_some(())
        })
        .await;
    }
    // The daemon goes on: the next event still runs.
    publish(broker.port, "plant/pump-7/status", "online", false).await;
    daemon.wait_event("pump-7", "online", 1).await;
}

#[tokio::test]
async fn runs_that_found_no_free_file_descriptor_each_run_once_when_there_are_some_again() {
    const N: usize = 50;
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let ran = out.path().join("ran");
    let append = script(out.path(), "append", &format!("echo \"$WILLWATCH_EVENT_ID\" >> {}", ran.display()));
    let text = format!(
        "[action.page]\ntype = \"exec\"\ncommand = [\"{}\"]\nmax_interval = \"1s\"\n\n\
         [[device]]\ntopic = \"fleet/{{id}}/status\"\nactions = [\"log\", \"page\"]\n",
        append.display()
    );
    let daemon = Daemon::start(&config(&broker, &text));
    daemon.wait_connected().await;
    daemon.http_url().await;
    // From here the daemon can open nothing: no pipe for a child, no socket.
    let limit = daemon.limit_open_files(daemon.lowest_free_fd());
    let topics: Vec<String> = (0..N).map(|i| format!("fleet/d{i:02}/status")).collect();
    let messages: Vec<(&str, Vec<u8>)> = topics.iter().map(|t| (t.as_str(), b"offline".to_vec())).collect();
    publish_many(broker.port, &messages, false).await;
    let offlines = |l: &serde_json::Value| l["action"] == "log" && l["event"] == "offline";
    eventually("every offline decided", SOON, || (daemon.logs(offlines).len() == N).then_some(())).await;
    let failed =
        daemon.wait_log("a run that could not start", SOON, |l| l["action"] == "page" && l["error"].is_string()).await;
    assert!(failed["error"].as_str().unwrap().contains("os error 24"), "EMFILE: {failed}");
    assert!(!ran.exists(), "nothing could start");

    daemon.limit_open_files(limit);
    let mut decided: Vec<String> =
        daemon.logs(offlines).iter().map(|l| l["event_id"].as_str().unwrap().to_string()).collect();
    decided.sort();
    let runs = || {
        let mut lines: Vec<String> = std::fs::read_to_string(&ran).ok()?.lines().map(str::to_string).collect();
        lines.sort();
        (lines.len() >= N).then_some(lines)
    };
    let ran_ids = eventually("every run", SOON, runs).await;
    assert_eq!(ran_ids, decided, "each decided event ran once, and nothing else ran");
    assert_eq!(daemon.metric("willwatch_action_runs_total{action=\"page\",outcome=\"ok\"}").await, N as f64);
    assert_eq!(daemon.metric("willwatch_dead_letters_total{action=\"page\"}").await, 0.0);
}

#[tokio::test]
async fn a_program_that_cannot_be_started_is_dead_lettered_with_the_reason() {
    let broker = Broker::start();
    let program = "/nonexistent/willwatch-page";
    let text = format!(
        "[action.page]\ntype = \"exec\"\ncommand = [\"{program}\", \"{{id}}\"]\n\n\
         [[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\nactions = [\"log\", \"page\"]\n"
    );
    let daemon = Daemon::start(&config(&broker, &text));
    daemon.wait_connected().await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let event = daemon.wait_event("pump-7", "offline", 1).await;
    let file = daemon.dir().join("state/dead-letter.jsonl");
    let text =
        eventually("the dead letter", SOON, || std::fs::read_to_string(&file).ok().filter(|t| !t.is_empty())).await;
    let record: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(record["action"], "page");
    assert_eq!(record["id"], event["event_id"]);
    assert_eq!(record["events"][0]["device"], "pump-7");
    let error = record["error"].as_str().unwrap();
    assert!(error.contains(program) && error.contains("os error 2"), "{error}");
    assert_eq!(daemon.metric("willwatch_dead_letters_total{action=\"page\"}").await, 1.0);
    assert_eq!(daemon.metric("willwatch_action_runs_total{action=\"page\",outcome=\"not_started\"}").await, 1.0);
}
