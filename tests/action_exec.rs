//! The exec action: argv without a shell, the event in the environment and
//! on stdin, and a hanging command killed with its whole process group.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::{Broker, Daemon, SOON, config, eventually, publish};

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
