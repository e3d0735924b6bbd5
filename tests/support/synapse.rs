//! A real Matrix homeserver for the Matrix tests: Synapse (`matrix-synapse`
//! from the Python registry), its config generated into a folder of its
//! own, listening on a free port; a user logged in and a room it made, and
//! the room's messages read back. `None` (after saying so) when Synapse is
//! not installed; `WILLWATCH_TEST_REQUIRE_SYNAPSE=1` (set by CI) makes that
//! a failure.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use super::broker::free_port;

pub struct Homeserver {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// A logged-in user's access token, and a room the user made.
    pub token: String,
    pub room: String,
    child: Child,
    dir: TempDir,
}

impl Homeserver {
    pub async fn start() -> Option<Homeserver> {
        if !super::python_module("synapse", "WILLWATCH_TEST_REQUIRE_SYNAPSE", "matrix-synapse") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("homeserver.yaml");
        let generated = Command::new("python3")
            .args([
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                "localhost",
                "--generate-config",
                "--report-stats=no",
            ])
            .arg("--config-path")
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .expect("python3");
        assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
        let port = free_port();
        let text = std::fs::read_to_string(&config).unwrap();
        // Loopback only, the test's port, and no rate limit on the test's
        // own messages and logins.
        let text = text.replace("    - ::1\n", "").replace("port: 8008", &format!("port: {port}"))
            + "\nrc_message:\n  per_second: 1000\n  burst_count: 1000\n\
               rc_login:\n  address:\n    per_second: 1000\n    burst_count: 1000\n  account:\n    per_second: 1000\n    burst_count: 1000\n";
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.path().join("synapse.out")).unwrap();
        let child = Command::new("python3")
            .args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(&config)
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("python3");
        let url = format!("http://127.0.0.1:{port}");
        let mut server = Homeserver { url, token: String::new(), room: String::new(), child, dir };
        let http = reqwest::Client::new();
        let health = format!("{}/health", server.url);
        let answered = super::wait::within(Duration::from_secs(60), async || match http.get(&health).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            _ => Err(()),
        })
        .await;
        assert!(answered.is_ok(), "Synapse did not answer within 60 s:\n{}", server.log_tail());
        let registered = Command::new("python3")
            .args([
                "-m",
                "synapse._scripts.register_new_matrix_user",
                "-u",
                "willwatch",
                "-p",
                "ww-pass",
                "--no-admin",
                "-c",
            ])
            .arg(&config)
            .arg(&server.url)
            .output()
            .expect("python3");
        assert!(registered.status.success(), "{}", String::from_utf8_lossy(&registered.stderr));
        let login = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "willwatch"}, "password": "ww-pass"});
        let answer = server.call(reqwest::Method::POST, "/_matrix/client/v3/login", Some(login)).await;
        server.token = answer["access_token"].as_str().expect("an access token").to_string();
        let room =
            server.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(json!({"name": "plant"}))).await;
        server.room = room["room_id"].as_str().expect("a room id").to_string();
        Some(server)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request =
            reqwest::Client::new().request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("Synapse answers");
        let status = response.status();
        let value: Value = serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    /// The room's text messages, oldest first: (sender, content).
    pub async fn messages(&self) -> Vec<(String, Value)> {
        let room: String = url::form_urlencoded::byte_serialize(self.room.as_bytes()).collect();
        let page = self
            .call(reqwest::Method::GET, &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"), None)
            .await;
        let mut out: Vec<(String, Value)> = page["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.room.message")
            .map(|e| (e["sender"].as_str().unwrap_or_default().to_string(), e["content"].clone()))
            .collect();
        out.reverse();
        out
    }

    /// The last lines of Synapse's own output, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("synapse.out")).unwrap_or_default();
        text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Homeserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
