//! The real `willwatch` binary under test, with its JSON log captured.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::wait::eventually;

const SOON_ENOUGH: Duration = Duration::from_secs(10);

pub struct Daemon {
    child: Child,
    logs: Log,
    dir: TempDir,
}

/// The daemon's JSON log lines as they are read, and whether its stderr
/// has ended (it is read on a thread of its own, so it can lag the exit).
type Log = Arc<Mutex<(Vec<Value>, bool)>>;

impl Daemon {
    /// Writes `config` to a temp file and runs `willwatch run` on it.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with(config, &[])
    }

    /// As `start`, with extra environment variables. A config the daemon
    /// is started on is meant to be valid: the JSON schema must accept it.
    pub fn start_with(config: &str, env: &[(&str, &str)]) -> Daemon {
        super::schema::assert_valid(config);
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("willwatch.toml"), config).expect("write config");
        let (child, logs) = spawn(dir.path(), env);
        Daemon { child, logs, dir }
    }

    /// Starts the daemon with `files` (name, content) written beside its
    /// config first: the secret files a config names.
    pub fn start_with_files(config: &str, files: &[(&str, &str)]) -> Daemon {
        super::schema::assert_valid(config);
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("willwatch.toml"), config).expect("write config");
        for (name, content) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write a file the config names");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
        }
        let (child, logs) = spawn(dir.path(), &[]);
        Daemon { child, logs, dir }
    }

    /// Kills the daemon with SIGKILL: no goodbye, no last state write.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the daemon again on the same config and state directory,
    /// with a fresh log.
    pub fn restart(&mut self) {
        let (child, logs) = spawn(self.dir.path(), &[]);
        self.child = child;
        self.logs = logs;
    }

    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// Threads the daemon runs now (`/proc`).
    pub fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    /// The nice value of each of the daemon's threads named `name`, from
    /// `/proc`.
    pub fn thread_nice(&self, name: &str) -> Vec<i64> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else { return Vec::new() };
        tasks
            .filter_map(|task| {
                let task = task.ok()?.path();
                (std::fs::read_to_string(task.join("comm")).ok()?.trim() == name).then_some(())?;
                let stat = std::fs::read_to_string(task.join("stat")).ok()?;
                // Fields after the name's closing parenthesis start at the
                // third; the nice value is the 19th.
                stat.rsplit_once(')')?.1.split_whitespace().nth(19 - 3)?.parse().ok()
            })
            .collect()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("willwatch.toml")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the config file (for reload tests).
    pub fn write_config(&self, config: &str) {
        std::fs::write(self.config_path(), config).expect("write config");
    }

    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The lowest file descriptor number the daemon has free: with its
    /// soft `RLIMIT_NOFILE` there, it can open no file, socket or pipe.
    pub fn lowest_free_fd(&self) -> u64 {
        let open: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the daemon's fds")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        (0..).find(|fd| !open.contains(fd)).expect("a free number")
    }

    /// Sets the daemon's soft limit on open files (`prlimit(2)`; the hard
    /// limit stays); returns the soft limit it had.
    pub fn limit_open_files(&self, soft: u64) -> u64 {
        use nix::libc::{RLIMIT_NOFILE, pid_t, prlimit, rlimit};
        let pid = self.child.id() as pid_t;
        let mut old = rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain values in, a struct of ours out.
        assert_eq!(unsafe { prlimit(pid, RLIMIT_NOFILE, std::ptr::null(), &mut old) }, 0, "read RLIMIT_NOFILE");
        let new = rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
        // SAFETY: as above.
        assert_eq!(unsafe { prlimit(pid, RLIMIT_NOFILE, &new, std::ptr::null_mut()) }, 0, "set RLIMIT_NOFILE");
        old.rlim_cur
    }

    /// How the process ended, if it has.
    pub fn exit_status_now(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit and its log to be read to the end.
    pub async fn exit_status(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        let status = eventually("the daemon to exit", timeout, || child.try_wait().expect("try_wait")).await;
        // A program it started may hold its stderr open a moment longer:
        // then the log is as read by then.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.logs.lock().unwrap().1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        status
    }

    /// Log lines so far that satisfy `matches`.
    pub fn logs(&self, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.logs.lock().unwrap().0.iter().filter(|v| matches(v)).cloned().collect()
    }

    /// Waits until some log line satisfies `matches` and returns it.
    pub async fn wait_log(&self, what: &str, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        eventually(what, timeout, || self.logs(&matches).into_iter().next()).await
    }

    /// Waits until the daemon is connected and subscribed to every topic.
    pub async fn wait_connected(&self) {
        self.wait_log("the daemon to subscribe", Duration::from_secs(10), |l| l["what"] == "subscribed").await;
    }

    /// The base URL of the daemon's HTTP endpoint, once it listens.
    pub async fn http_url(&self) -> String {
        let line = self.wait_log("the HTTP endpoint", SOON_ENOUGH, |l| l["what"] == "http_listening").await;
        format!("http://{}", line["listen"].as_str().expect("listen address"))
    }

    /// The value of the first `/metrics` sample that starts with `sample`
    /// (a name, with labels when they matter), 0 when there is none.
    pub async fn metric(&self, sample: &str) -> f64 {
        let url = format!("{}/metrics", self.http_url().await);
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with(sample))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `sample` on `/metrics` reads at least `value`.
    pub async fn wait_metric(&self, sample: &str, value: f64) {
        super::wait::until(&format!("{sample} to reach {value}"), super::SOON, async || {
            let now = self.metric(sample).await;
            if now >= value { Ok(()) } else { Err(now) }
        })
        .await
    }

    /// The device `id` as `/status` shows it (`Null` while unknown to it).
    pub async fn device(&self, id: &str) -> Value {
        let url = format!("{}/status", self.http_url().await);
        let response = reqwest::Client::new().get(url).query(&[("device", id)]).send().await.unwrap();
        let doc: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        doc["devices"][0].clone()
    }

    /// Waits until `/status` shows the device `id` in `state`.
    pub async fn wait_state(&self, id: &str, state: &str) -> Value {
        self.wait_device(id, state, |device| device["state"] == state).await
    }

    /// Waits until `/status` shows the device `id` as `matches` wants it
    /// (`what` says how, for the failure message).
    pub async fn wait_device(&self, id: &str, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let device = self.device(id).await;
            if matches(&device) {
                return device;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} never became {what}: {device}\n{}", self.dump());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `state.db` records the device `id` as `state` (a first
    /// sighting is saved within a moment, not at once).
    pub async fn wait_saved(&self, id: &str, state: &str) {
        let path = self.dir.path().join("state/state.db");
        let saved = || {
            let db = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
            let found: String = db.query_row("SELECT state FROM devices WHERE id = ?1", [id], |r| r.get(0)).ok()?;
            (found == state).then_some(())
        };
        eventually(&format!("{id} saved as {state}"), Duration::from_secs(10), saved).await;
    }

    /// `event` ("offline", "online", "reconnect_failed") lines of the
    /// built-in log action for `device`.
    pub fn events(&self, device: &str, event: &str) -> Vec<Value> {
        self.logs(|l| l["action"] == "log" && l["device"] == device && l["event"] == event)
    }

    /// Waits for the `n`th `event` of `device` from the built-in log action.
    pub async fn wait_event(&self, device: &str, event: &str, n: usize) -> Value {
        let what = format!("{event} event #{n} for {device}");
        eventually(&what, Duration::from_secs(10), || self.events(device, event).into_iter().nth(n - 1)).await
    }

    /// All log text, for failure messages.
    pub fn dump(&self) -> String {
        self.logs.lock().unwrap().0.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Daemon {
    /// Stops the daemon; in a failing test, prints its log first.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of the daemon in {} ---\n{}", self.dir().display(), self.dump());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `willwatch run` on `dir/willwatch.toml`, collecting its JSON log.
fn spawn(dir: &Path, env: &[(&str, &str)]) -> (Child, Log) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_willwatch"));
    command
        .args(["run", "--log-format", "json", "--log-level", "debug", "-c"])
        .arg(dir.join("willwatch.toml"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("WILLWATCH_MQTT_PASSWORD")
        .env_remove("STATE_DIRECTORY")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn willwatch");
    let logs: Log = Arc::default();
    let stderr = child.stderr.take().expect("stderr");
    let sink = Arc::clone(&logs);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let value = serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({ "raw": line }));
            sink.lock().unwrap().0.push(value);
        }
        sink.lock().unwrap().1 = true;
    });
    (child, logs)
}

/// The message of a log line.
pub fn message(line: &Value) -> &str {
    line["message"].as_str().unwrap_or_default()
}
