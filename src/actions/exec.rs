//! The `exec` action: runs a program with the event, never through a shell.
//!
//! Arguments are rendered one by one and passed as separate argv entries,
//! so a device id like `a;rm -rf ~` or `$(reboot)` is only ever text. The
//! event also arrives as `WILLWATCH_*` environment variables and as JSON on
//! stdin. Each run gets its own process group; at the timeout the whole
//! group is killed, children included. Output is logged, capped.
//! At most `concurrency` runs at once; further events wait in the queue.

use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::{Context, Job};
use crate::config::Exec;
use crate::event::{Event, rfc3339};

/// Output kept per stream and run; the rest is counted, not kept.
const OUTPUT_CAP: usize = 4096;

pub async fn run(name: String, spec: Exec, context: Context, mut jobs: mpsc::Receiver<Job>) {
    let spec = Arc::new(spec);
    let slots = Arc::new(Semaphore::new(spec.concurrency));
    let mut running = JoinSet::new();
    while let Some(job) = jobs.recv().await {
        while running.try_join_next().is_some() {}
        let Job::Event(event) = job else { continue };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (name, spec, context) = (name.clone(), Arc::clone(&spec), context.clone());
        running.spawn(async move {
            let outcome = execute(&name, &spec, &event).await;
            context.metrics.action_run(&name, outcome);
            context.done(&name, &event);
            drop(slot);
        });
    }
    while running.join_next().await.is_some() {}
}

/// The event as environment variables.
pub fn environment(event: &Event) -> Vec<(&'static str, String)> {
    // Environment values cannot hold NUL; payloads are arbitrary bytes.
    let clean = |s: &str| s.replace('\0', "\u{fffd}");
    let mut env = vec![
        ("WILLWATCH_EVENT", event.kind.as_str().to_string()),
        ("WILLWATCH_EVENT_ID", event.id.clone()),
        ("WILLWATCH_DEVICE", clean(&event.device)),
        ("WILLWATCH_TOPIC", clean(&event.topic)),
        ("WILLWATCH_PAYLOAD", clean(&event.payload)),
        ("WILLWATCH_PREVIOUS", event.previous.to_string()),
        ("WILLWATCH_AT", rfc3339(event.at)),
    ];
    if let Some(since) = event.offline_since {
        env.push(("WILLWATCH_OFFLINE_SINCE", rfc3339(since)));
    }
    if let Some(d) = event.offline_for {
        env.push(("WILLWATCH_OFFLINE_FOR_S", format!("{:.3}", d.as_secs_f64())));
    }
    if let Some(n) = event.attempts {
        env.push(("WILLWATCH_ATTEMPTS", n.to_string()));
    }
    env
}

/// Runs the command once; returns the outcome for the metrics.
async fn execute(name: &str, spec: &Exec, event: &Event) -> &'static str {
    let args: Vec<String> = spec.args.iter().map(|a| a.render(event).replace('\0', "\u{fffd}")).collect();
    let mut command = Command::new(&spec.program);
    command
        .args(&args)
        .envs(environment(event))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(action = %name, device = %event.device, event = %event.kind,
                program = %spec.program.display(), error = %e, "could not start the command");
            return "failed";
        }
    };
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let body = event.to_json().to_string();
    let finished = tokio::time::timeout(spec.timeout, async {
        let feed = async {
            if let Some(mut stdin) = stdin {
                // A program that ignores stdin closes it early; that is fine.
                let _ = stdin.write_all(body.as_bytes()).await;
            }
        };
        let (_, out, err, status) = tokio::join!(feed, capped(stdout), capped(stderr), child.wait());
        (out, err, status)
    })
    .await;
    match finished {
        Ok((out, err, Ok(status))) if status.success() => {
            tracing::info!(action = %name, device = %event.device, event = %event.kind,
                stdout = %out, stderr = %err, what = "command_finished", "command finished");
            "ok"
        }
        Ok((out, err, status)) => {
            let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            tracing::error!(action = %name, device = %event.device, event = %event.kind,
                status = %status, stdout = %out, stderr = %err, "command failed");
            "failed"
        }
        Err(_) => {
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
            let _ = child.wait().await;
            tracing::error!(action = %name, device = %event.device, event = %event.kind,
                timeout = ?spec.timeout, what = "command_timed_out", "command timed out; killed it and its process group");
            "timeout"
        }
    }
}

/// Reads a stream to its end, keeping the first `OUTPUT_CAP` bytes.
async fn capped(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n;
        let room = OUTPUT_CAP.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    let mut text = String::from_utf8_lossy(&kept).trim_end().to_string();
    if total > OUTPUT_CAP {
        text.push_str(&format!(" … ({total} bytes in all)"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, test_event};
    use std::time::Duration;

    #[test]
    fn environment_carries_the_event_and_survives_nul_bytes() {
        let mut e = test_event(EventKind::Online, "a;rm -rf ~");
        e.payload = "on\0line".into();
        e.offline_for = Some(Duration::from_millis(1500));
        let env: std::collections::HashMap<_, _> = environment(&e).into_iter().collect();
        assert_eq!(env["WILLWATCH_EVENT"], "online");
        assert_eq!(env["WILLWATCH_DEVICE"], "a;rm -rf ~");
        assert_eq!(env["WILLWATCH_PAYLOAD"], "on\u{fffd}line");
        assert_eq!(env["WILLWATCH_OFFLINE_FOR_S"], "1.500");
        assert!(!env.contains_key("WILLWATCH_ATTEMPTS"));
    }
}
