//! `willwatch check`: a valid file gets a summary, a broken one gets
//! `PATH:LINE:COL: message` for each mistake and a non-zero exit.

#[path = "support/schema.rs"]
mod schema;

use std::path::Path;
use std::process::{Command, Output};

use schema::as_json;

fn check_file(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_willwatch")).args(["check", "-c"]).arg(path).output().expect("run willwatch check")
}

/// Runs `check` on `text`; returns (success, stdout, stderr with the temp
/// path replaced by `w.toml`). What `check` accepts, the JSON schema must
/// accept too.
fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(&path, text).unwrap();
    let out = check_file(&path);
    if out.status.success() {
        schema::assert_valid(text);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "w.toml");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

const BROKER: &str = "[broker]\nurl = \"mqtt://127.0.0.1:1883\"\n";

fn assert_rejected(text: &str, expected: &str) {
    let (ok, _, stderr) = check(text);
    assert!(!ok, "accepted:\n{text}");
    assert!(stderr.contains(expected), "expected {expected:?} in:\n{stderr}");
}

/// The config the package installs: valid without a warning, and safe:
/// the local broker, the built-in log only, nothing sent elsewhere.
#[test]
fn packaged_config_is_minimal_and_safe() {
    let out = check_file(Path::new("packaging/willwatch.toml"));
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string("packaging/willwatch.toml").unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(doc["broker"]["url"].as_str(), Some("mqtt://127.0.0.1:1883"));
    assert!(doc["broker"].get("client_id").is_none(), "the client id comes from the hostname");
    assert!(doc.get("action").is_none(), "no webhook, exec or publish: only the built-in log");
    assert!(doc.get("http").is_none(), "the status endpoint stays on loopback (its default)");
}

#[test]
fn example_config_is_valid_and_summarised() {
    let out = check_file(Path::new("config/willwatch.toml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("config/willwatch.toml: OK"), "{stdout}");
    assert!(stdout.contains("broker    mqtt://127.0.0.1:1883"), "{stdout}");
    assert!(stdout.contains("pump-7  plant/pump-7/status"), "{stdout}");
    assert!(stdout.contains("sensors/{id}/status"), "{stdout}");
    assert!(stdout.contains("1 by topic, 2 pattern(s), 4 subscription(s)"), "{stdout}");
}

#[test]
fn unknown_key_is_pointed_at() {
    assert_rejected(&format!("{BROKER}kep_alive = \"30s\"\n"), "w.toml:3:1: unknown field `kep_alive`");
}

#[test]
fn bad_duration_is_pointed_at() {
    assert_rejected(&format!("{BROKER}keep_alive = \"thirty\"\n"), "w.toml:3:14:");
    assert_rejected(&format!("{BROKER}keep_alive = \"200ms\"\n"), "w.toml:3:14: `keep_alive` 200ms is out of range");
}

#[test]
fn duplicate_device_id_names_both_places() {
    let text = format!("{BROKER}[[device]]\nid = \"a\"\ntopic = \"x/a\"\n[[device]]\nid = \"a\"\ntopic = \"x/b\"\n");
    assert_rejected(&text, "w.toml:7:6: device id `a` is used twice\n  hint: first used at line 4, column 6");
}

#[test]
fn unknown_action_suggests_the_closest_one() {
    let text = format!("{BROKER}[[device]]\nid = \"a\"\ntopic = \"x/a\"\nactions = [\"lgo\"]\n");
    assert_rejected(&text, "w.toml:6:12: unknown action `lgo`\n  hint: did you mean `log`?");
}

#[test]
fn id_placeholder_must_be_a_whole_level() {
    let text = format!("{BROKER}[[device]]\ntopic = \"sensors/x{{id}}/status\"\n");
    assert_rejected(&text, "w.toml:4:9: `topic`: `{id}` must be a whole topic level");
}

#[test]
fn wildcards_in_exact_topics_are_refused_with_a_hint() {
    let text = format!("{BROKER}[[device]]\nid = \"a\"\ntopic = \"sensors/+/status\"\n");
    assert_rejected(&text, "w.toml:5:9: `topic`: wildcards are not allowed in a topic");
    assert_rejected(&text, "hint: for one device per matching topic write e.g. sensors/{id}/status");
}

#[test]
fn bad_broker_url_is_pointed_at() {
    assert_rejected("[broker]\nurl = \"http://broker:80\"\n", "w.toml:2:7: `url` scheme `http` is not supported");
    assert_rejected("[broker]\nurl = \"mqtt://u:p@broker\"\n", "w.toml:2:7: credentials in the broker URL");
}

#[test]
fn missing_broker_section_is_reported() {
    assert_rejected("[[device]]\nid = \"a\"\ntopic = \"x\"\n", "missing field `broker`");
}

#[test]
fn toml_syntax_error_is_pointed_at() {
    assert_rejected(&format!("{BROKER}[[device]\n"), "w.toml:3:");
}

#[test]
fn a_payload_cannot_mean_both_states() {
    let text = format!("{BROKER}[defaults]\nonline = [\"up\"]\noffline = [\"down\", \"up\"]\n");
    assert_rejected(&text, "payload `up` is listed as both online and offline");
}

#[test]
fn every_mistake_is_reported_in_one_run() {
    let text = format!(
        "{BROKER}[[device]]\nid = \"a\"\ntopic = \"a/#\"\n[[device]]\nid = \"b\"\ntopic = \"x\"\nactions = [\"nope\"]\n"
    );
    let (ok, _, stderr) = check(&text);
    assert!(!ok);
    assert!(stderr.contains("w.toml:5:9: `topic`: `#` is not allowed"), "{stderr}");
    assert!(stderr.contains("w.toml:9:12: unknown action `nope`"), "{stderr}");
}

#[test]
fn tls_files_need_mqtts_and_must_exist() {
    assert_rejected(
        &format!("{BROKER}ca_file = \"ca.pem\"\n"),
        "w.toml:3:11: TLS files are set but the broker URL is mqtt://",
    );
    assert_rejected("[broker]\nurl = \"mqtts://b\"\nca_file = \"missing.pem\"\n", "w.toml:3:11: cannot read `ca_file`");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = check_file(Path::new("/nonexistent/willwatch.toml"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/willwatch.toml: cannot read the config file"), "{stderr}");
}

#[test]
fn the_password_never_appears_in_the_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret-hunter2\n").unwrap();
    let text = format!("{BROKER}username = \"watcher\"\npassword_file = \"pw\"\n");
    std::fs::write(dir.path().join("w.toml"), text).unwrap();
    let out = check_file(&dir.path().join("w.toml"));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains("user watcher (password set)"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn unknown_placeholder_is_pointed_at() {
    let text = format!("{BROKER}[action.kick]\ntype = \"reconnect\"\ntopic = \"plant/{{device}}/cmd\"\n");
    assert_rejected(&text, "w.toml:5:16: `topic`: unknown placeholder `{device}`");
}

#[test]
fn bad_webhook_url_is_pointed_at() {
    let text = format!("{BROKER}[action.ops]\ntype = \"webhook\"\nurl = \"ftp://x\"\n");
    assert_rejected(&text, "w.toml:5:7: `url` `ftp://x` is not an http(s) URL");
}

#[test]
fn settings_of_another_kind_are_refused() {
    let text = format!("{BROKER}[action.ops]\ntype = \"log\"\nurl = \"https://x\"\n");
    assert_rejected(&text, "w.toml:5:1: `url` is not a setting of a `log` action\n  hint: it belongs to: webhook");
}

#[test]
fn escalation_loops_are_refused() {
    let text = format!(
        "{BROKER}[action.a]\ntype = \"reconnect\"\ntopic = \"x/{{id}}\"\nescalate = [\"b\"]\n\
         [action.b]\ntype = \"reconnect\"\ntopic = \"y/{{id}}\"\nescalate = [\"a\"]\n"
    );
    assert_rejected(&text, "`escalate` of action `a` leads back to itself");
}

#[test]
fn missing_header_environment_variable_is_an_error() {
    let text = format!(
        "{BROKER}[action.ops]\ntype = \"webhook\"\nurl = \"https://x\"\nheaders = {{ \"X-Key\" = \"${{WILLWATCH_TEST_UNSET_VAR}}\" }}\n"
    );
    assert_rejected(&text, "environment variable `WILLWATCH_TEST_UNSET_VAR` is not set");
}

#[test]
fn exec_programs_that_are_not_absolute_or_executable_are_warnings() {
    let text = format!(
        "{BROKER}[action.a]\ntype = \"exec\"\ncommand = [\"page-oncall\", \"{{id}}\"]\n\
         [action.b]\ntype = \"exec\"\ncommand = [\"/etc/passwd\"]\n"
    );
    let (ok, stdout, stderr) = check(&text);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("w.toml:5:12: warning: `page-oncall` is not an absolute path"), "{stderr}");
    assert!(stderr.contains("w.toml:8:12: warning: `/etc/passwd` is not an executable file"), "{stderr}");
    assert!(stdout.contains("a (exec page-oncall, on all events)"), "{stdout}");
}

#[test]
fn out_of_range_numbers_are_pointed_at() {
    let text = format!("{BROKER}[action.ops]\ntype = \"webhook\"\nurl = \"https://x\"\nmax_attempts = 0\n");
    assert_rejected(&text, "w.toml:6:16: `max_attempts` must be from 1 to 1000000");
    let text = format!("{BROKER}[action.p]\ntype = \"publish\"\ntopic = \"a/{{id}}\"\nqos = 3\n");
    assert_rejected(&text, "w.toml:6:7: `qos` must be 0, 1 or 2");
}

fn schema() -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch")).args(["check", "--json-schema"]).output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("the schema is JSON")
}

#[test]
fn the_json_schema_accepts_the_example_and_rejects_a_broken_config() {
    let validator = jsonschema::validator_for(&schema()).expect("a valid JSON Schema");
    let example = as_json(&std::fs::read_to_string("config/willwatch.toml").unwrap());
    let errors: Vec<String> = validator.iter_errors(&example).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");

    let broken = as_json(
        "[broker]\nurl = \"http://x\"\nkep_alive = \"30s\"\n[action.a]\ntype = \"webhok\"\n[[device]]\nid = \"a\"\n",
    );
    let errors: Vec<String> = validator.iter_errors(&broken).map(|e| e.to_string()).collect();
    assert!(errors.len() >= 4, "{errors:?}");
}

#[test]
fn verbose_check_prints_each_devices_effective_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .args(["check", "--verbose", "-c", "config/willwatch.toml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  {id} on sensors/{id}/status\n    online     online\n    offline    offline, lost"),
        "{stdout}"
    );
    assert!(stdout.contains("    heartbeat  2m (also plant/pump-7/telemetry)"), "{stdout}");
}

#[test]
fn a_payload_with_spaces_around_it_is_refused_with_the_fix() {
    let text = format!("{BROKER}[defaults]\nonline = [\" up \"]\n");
    assert_rejected(&text, "w.toml:4:11: payload ` up ` has spaces around it");
    assert_rejected(&text, "hint: write \"up\"");
}

#[test]
fn defaults_and_escalation_problems_point_at_their_table_not_at_1_1() {
    let overlap = format!("{BROKER}[defaults]\nonline = [\"x\"]\noffline = [\"x\"]\n");
    let (_, _, stderr) = check(&overlap);
    assert!(stderr.contains("w.toml:3:1:"), "{stderr}");
    let cycle = format!(
        "{BROKER}[action.a]\ntype = \"reconnect\"\ntopic = \"c/{{id}}\"\nescalate = [\"b\"]\n\
         [action.b]\ntype = \"reconnect\"\ntopic = \"c/{{id}}\"\nescalate = [\"a\"]\n"
    );
    let (ok, _, stderr) = check(&cycle);
    assert!(!ok && stderr.contains("leads back to itself") && !stderr.contains(":1:1:"), "{stderr}");
}

#[test]
fn on_is_refused_on_a_reconnect_action() {
    let text = format!("{BROKER}[action.r]\ntype = \"reconnect\"\ntopic = \"c/{{id}}\"\non = [\"offline\"]\n");
    assert_rejected(&text, "`on` is not a setting of a `reconnect` action");
}

#[test]
fn special_and_huge_files_are_refused_not_read() {
    let text = format!("{BROKER}username = \"u\"\npassword_file = \"/dev/zero\"\n");
    assert_rejected(&text, "cannot read `password_file` /dev/zero: not a regular file");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("w.toml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = check_file(&fifo);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
}

#[test]
fn a_config_that_is_not_utf8_is_pointed_at() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(&path, b"[broker]\nurl = \"mqtt://b\"\nclient_id = \"w\xff\"\n").unwrap();
    let out = check_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("w.toml:3:15: the config file is not UTF-8 text here"), "{stderr}");
}

#[test]
fn check_into_a_closed_pipe_exits_quietly() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .args(["check", "-c", "config/willwatch.toml", "--verbose"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_pattern_that_catches_other_software_is_warned_about_and_ids_may_be_templated() {
    let (ok, _, stderr) = check(&format!("{BROKER}[[device]]\ntopic = \"{{id}}/status\"\n"));
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("w.toml:4:9: warning: `{id}/status` starts with a level that matches anything: it also catches other software's topics (e.g. octoprint/status)"),
        "{stderr}"
    );
    // A preset's own topic is its ecosystem's convention: Shelly's `{id}/online`.
    let (ok, _, stderr) = check(&format!("{BROKER}[[device]]\npreset = \"shelly\"\n"));
    assert!(ok && !stderr.contains("warning"), "{stderr}");
    let (ok, _, stderr) = check(&format!(
        "{BROKER}[[device]]\ntopic = \"{{id}}/status\"\nid = \"esp-{{id}}\"\nexclude = [\"homeassistant/status\", \"octoprint/+\"]\n"
    ));
    assert!(ok && !stderr.contains("warning"), "{stderr}");
    assert_rejected(
        &format!("{BROKER}[[device]]\ntopic = \"tele/{{id}}/LWT\"\nid = \"esp\"\n"),
        "w.toml:5:6: a pattern's `id` is a template with `{id}` once; `esp` is not",
    );
    assert_rejected(
        &format!("{BROKER}[[device]]\ntopic = \"tele/{{id}}/LWT\"\nexclude = [\"tele/#/x\"]\n"),
        "`exclude`: `tele/#/x` is not an MQTT topic filter",
    );
    assert_rejected(
        &format!("{BROKER}[[device]]\nid = \"a\"\ntopic = \"tele/a/LWT\"\nexclude = [\"tele/b/LWT\"]\n"),
        "`exclude` narrows a pattern; this device has an exact topic",
    );
}

#[test]
fn a_status_that_is_not_retained_is_said_to_be_unconfirmed_after_a_restart() {
    let (ok, _, stderr) = check(&format!("{BROKER}[[device]]\npreset = \"homeassistant\"\n"));
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("w.toml:4:10: warning: homeassistant's status is not retained: after a restart of willwatch or of the broker it cannot be read back"),
        "{stderr}"
    );
    assert!(stderr.contains("queue_qos0_messages true"), "{stderr}");
}

#[test]
fn a_generated_client_id_is_warned_about_with_a_persistent_session() {
    let text = "[broker]\nurl = \"mqtt://b\"\nclient_id = \"willwatch-3f2a9c7e81b4d5\"\n";
    let (ok, _, stderr) = check(text);
    assert!(ok && stderr.contains("client id `willwatch-3f2a9c7e81b4d5` looks generated"), "{stderr}");
    let (ok, _, stderr) = check(&format!("{text}persistent_session = false\n"));
    assert!(ok && !stderr.contains("looks generated"), "{stderr}");
}

#[test]
fn sparkplug_mistakes_are_named_where_they_are() {
    let text = format!("{BROKER}[[sparkplug]]\nedge_nodes = [\"press\"]\n");
    assert_rejected(&text, "w.toml:3:1: this [[sparkplug]] has no `group`");
    let text = format!("{BROKER}[[sparkplug]]\ngroup = \"plant/a\"\n");
    assert_rejected(&text, "w.toml:4:9: Sparkplug group id `plant/a` must be one topic level");
    let text = format!("{BROKER}[[sparkplug]]\ngroup = \"plant\"\nedge_nodes = [\"press\", \"+\"]\n");
    assert_rejected(&text, "w.toml:5:24: `+` stands for every node; it cannot be listed with others");
    let text = format!("{BROKER}[[sparkplug]]\ngroup = \"plant\"\n[[sparkplug]]\ngroup = \"plant\"\n");
    assert_rejected(&text, "w.toml:6:9: Sparkplug group `plant` is watched twice");
    let text = format!("{BROKER}[presence]\nsparkplug_host_id = \"scada\"\ntopic = \"w/status\"\n");
    assert_rejected(&text, "w.toml:5:9: with `sparkplug_host_id` the presence is the host's Sparkplug STATE");
    // A reconnect without a topic sends Sparkplug rebirth requests only.
    let rebirth = "[action.rebirth]\ntype = \"reconnect\"\n";
    let text = format!("{BROKER}{rebirth}[[sparkplug]]\ngroup = \"plant\"\nactions = [\"rebirth\"]\n");
    let (ok, stdout, stderr) = check(&text);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("rebirth (reconnect → Sparkplug rebirth requests"), "{stdout}");
    let text = format!("{BROKER}{rebirth}[[device]]\nid = \"a\"\ntopic = \"a/status\"\nactions = [\"rebirth\"]\n");
    assert_rejected(&text, "reconnect action `rebirth` has no `topic` to send this device a command on");
}

#[test]
fn the_json_schema_knows_sparkplug() {
    let validator = jsonschema::validator_for(&schema()).expect("a valid JSON Schema");
    let good = as_json(&format!(
        "{BROKER}[presence]\nsparkplug_host_id = \"scada\"\n[[sparkplug]]\ngroup = \"+\"\nedge_nodes = [\"a\", \"b\"]\ndevices = false\n"
    ));
    assert!(validator.is_valid(&good));
    let bad = as_json(&format!("{BROKER}[[sparkplug]]\nedge_nodes = [\"a\"]\nbdseq = 1\n"));
    assert_eq!(validator.iter_errors(&bad).count(), 2);
}

#[test]
fn an_endpoint_beyond_this_machine_without_users_is_warned_about_and_a_bad_users_file_refused() {
    let text = format!("{BROKER}[http]\nlisten = \"0.0.0.0:9818\"\n");
    let (ok, stdout, stderr) = check(&text);
    assert!(ok, "{stderr}");
    assert!(
        format!("{stdout}{stderr}")
            .contains("w.toml:4:10: warning: the HTTP endpoint listens beyond this machine without `users_file`"),
        "{stdout}{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "ops:plaintext\n").unwrap();
    let text = format!("{BROKER}[http]\nusers_file = \"{}\"\n", users.display());
    assert_rejected(&text, "line 1: the hash of `ops` is not bcrypt");
}

#[test]
fn a_cluster_is_summarised_and_its_mistakes_point_at_their_line() {
    let (ok, out, err) = check(&format!("{BROKER}[cluster]\nname = \"plant1\"\ninstance = \"east\"\n"));
    assert!(ok, "{err}");
    assert!(out.contains("cluster   plant1 as instance east (client id willwatch-plant1-east"), "{out}");
    assert!(out.contains("presence  willwatch/cluster/plant1/members/east"), "{out}");
    assert_rejected(&format!("{BROKER}[cluster]\ninstance = \"east\"\n"), "w.toml:3:1: [cluster] has no `name`");
    assert_rejected(
        &format!("{BROKER}[cluster]\nname = \"plant/1\"\n"),
        "w.toml:4:8: cluster name `plant/1` is not usable in a topic",
    );
    assert_rejected(
        &format!("{BROKER}[cluster]\nname = \"p\"\ninstance = \"+\"\n"),
        "w.toml:5:12: instance name `+` is not usable in a topic",
    );
    // One connection has one will: in a cluster it is the membership.
    assert_rejected(
        &format!("{BROKER}[presence]\ntopic = \"w/status\"\n[cluster]\nname = \"p\"\n"),
        "w.toml:4:9: in a [cluster] the presence topic is the instance's membership",
    );
    assert_rejected(
        &format!("{BROKER}[presence]\nsparkplug_host_id = \"scada\"\n[cluster]\nname = \"p\"\n"),
        "w.toml:4:21: in a [cluster] the presence topic is the instance's membership",
    );
}

/// What a webhook URL hides (user info, query values) stays hidden in every
/// error about it, whether it parses or not, and in the summary.
#[test]
fn url_secrets_appear_in_no_check_output_whatever_is_wrong_with_the_url() {
    let hook = |url: &str| format!("{BROKER}[action.ops]\ntype = \"webhook\"\nurl = \"{url}\"\n");
    let cases = [
        (hook("http://hookuser:SECRETPASS@127.0.0.1:1/hook?token=SECRETTOKEN"), None),
        (
            hook("ftp://hookuser:SECRETPASS@hooks.example/hook?token=SECRETTOKEN"),
            Some("w.toml:5:7: `url` `ftp://***@hooks.example/hook?token=***` is not an http(s) URL"),
        ),
        (
            hook("http://hookuser:SECRETPASS@[::bad/hook?token=SECRETTOKEN"),
            Some("w.toml:5:7: `url` `http://***@[::bad/hook?token=***` is not an http(s) URL"),
        ),
        (
            hook("hookuser:SECRETPASS@hooks.example/hook?token=SECRETTOKEN"),
            Some("w.toml:5:7: `url` `***@hooks.example/hook?token=***` is not an http(s) URL"),
        ),
        (
            format!("{BROKER}[http]\nexternal_url = \"ftp://u:SECRETPASS@gw.example/?token=SECRETTOKEN\"\n"),
            Some("w.toml:4:16: `external_url` `ftp://***@gw.example/?token=***` is not an http(s) URL"),
        ),
        // Every alert links to it: credentials would reach every receiver.
        (
            format!("{BROKER}[http]\nexternal_url = \"https://u:SECRETPASS@gw.example/?token=SECRETTOKEN\"\n"),
            Some("w.toml:4:16: `external_url` `https://***@gw.example/?token=***` carries credentials"),
        ),
        (
            format!("{BROKER}[http]\nexternal_url = \"https://u:SECRETPASS@[bad/?token=SECRETTOKEN\"\n"),
            Some("w.toml:4:16: `external_url` `https://***@[bad/?token=***` is not an http(s) URL"),
        ),
        // A URL where a number belongs: TOML's own message quotes the value.
        (
            format!(
                "{BROKER}[action.ops]\ntype = \"webhook\"\nurl = \"https://h\"\nmax_attempts = \"https://u:SECRETPASS@h/?token=SECRETTOKEN\"\n"
            ),
            Some("w.toml:6:16:"),
        ),
    ];
    for (text, refused) in cases {
        let (ok, stdout, stderr) = check(&text);
        assert_eq!(ok, refused.is_none(), "{text}\n{stderr}");
        if let Some(expected) = refused {
            assert!(stderr.contains(expected), "expected {expected:?} in:\n{stderr}");
        }
        for secret in ["SECRETPASS", "SECRETTOKEN"] {
            assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} shown:\n{stdout}{stderr}");
        }
    }
}

#[test]
fn a_users_file_others_can_read_is_warned_about_and_an_unusable_hash_refused_by_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&users, format!("ops:{hash}\n")).unwrap();
    let text = format!("{BROKER}[http]\nusers_file = \"{}\"\n", users.display());
    for (mode, warned) in [(0o644, true), (0o640, true), (0o600, false)] {
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(mode)).unwrap();
        let (ok, _, stderr) = check(&text);
        assert!(ok, "{stderr}");
        let expected =
            format!("w.toml:4:14: warning: `users_file` {} can be read by other users than its owner", users.display());
        assert_eq!(stderr.contains(&expected), warned, "mode {mode:o}: {stderr}");
    }
    // Every login of a user with a hash bcrypt cannot use would fail.
    std::fs::write(&users, format!("ops:{hash}\n# guests\nguest:$2b$10$short\n")).unwrap();
    assert_rejected(
        &text,
        &format!("w.toml:4:14: `users_file` {}: line 3: the hash of `guest` is not", users.display()),
    );
    // Cost 31 is a day a login, for a user not in the file too (it is
    // verified against the highest cost): past 16, refused.
    std::fs::write(&users, format!("ops:{hash}\nslow:{}\n", hash.replace("$04$", "$31$"))).unwrap();
    assert_rejected(&text, "line 2: the hash of `slow` has cost 31, more than 16");
    // Mixed costs tell by timing which users exist.
    let five = bcrypt::hash("other", 5).unwrap();
    std::fs::write(&users, format!("ops:{hash}\nguest:{five}\n")).unwrap();
    let (ok, _, stderr) = check(&text);
    assert!(ok && stderr.contains("warning") && stderr.contains("different bcrypt costs (4 to 5)"), "{stderr}");
}

#[test]
fn webhook_header_names_and_values_with_control_characters_are_refused_without_showing_the_value() {
    let hook = format!("{BROKER}[action.ops]\ntype = \"webhook\"\nurl = \"https://h\"\n");
    assert_rejected(
        &format!("{hook}headers = {{ \"X-A\\r\\nX-Injected\" = \"1\" }}\n"),
        "w.toml:6:11: `X-A\\r\\nX-Injected` is not a valid HTTP header name",
    );
    let text = format!("{hook}headers = {{ \"Authorization\" = \"Bearer SECRETTOKEN\\r\\nX-Injected: 1\" }}\n");
    assert_rejected(&text, "w.toml:6:31: header `Authorization`: its value has a control character");
    let (_, _, stderr) = check(&text);
    assert!(!stderr.contains("SECRETTOKEN"), "{stderr}");
    // Nor through the environment.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(&path, format!("{hook}headers = {{ \"Authorization\" = \"${{WILLWATCH_TEST_HEADER}}\" }}\n"))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .args(["check", "-c"])
        .arg(&path)
        .env("WILLWATCH_TEST_HEADER", "Bearer SECRETTOKEN\nX-Injected: 1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("its value has a control character"), "{stderr}");
    assert!(!stderr.contains("SECRETTOKEN"), "{stderr}");
}

#[test]
fn resync_below_a_second_is_refused_and_zero_still_turns_it_off() {
    assert_rejected(
        &format!("{BROKER}resync = \"10ms\"\n"),
        "w.toml:3:10: `resync` must be 0s (never) or from 1s to 1day",
    );
    let (ok, _, stderr) = check(&format!("{BROKER}resync = \"0s\"\n"));
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = check(&format!("{BROKER}resync = \"1s\"\n"));
    assert!(ok, "{stderr}");
}

#[test]
fn an_exclude_that_leaves_a_pattern_nothing_is_refused() {
    let pattern = format!("{BROKER}[[device]]\ntopic = \"fleet/{{id}}/status\"\n");
    for everything in ["#", "fleet/#", "+/+/status", "+/#", "fleet/+/+"] {
        assert_rejected(
            &format!("{pattern}exclude = [\"x/y\", \"{everything}\"]\n"),
            &format!("w.toml:5:19: `exclude`: `{everything}` excludes every topic of `fleet/{{id}}/status`"),
        );
    }
    let (ok, _, stderr) = check(&format!("{pattern}exclude = [\"fleet/bridge/status\", \"other/#\"]\n"));
    assert!(ok, "{stderr}");
    let multi =
        format!("{BROKER}[[device]]\ntopic = \"z2m/{{*id}}/availability\"\nexclude = [\"z2m/+/availability\"]\n");
    let (ok, _, stderr) = check(&multi);
    assert!(ok, "one level of several is not all: {stderr}");
}

#[test]
fn an_empty_exec_program_is_refused() {
    let text = format!("{BROKER}[action.page]\ntype = \"exec\"\ncommand = [\"\", \"{{id}}\"]\n");
    assert_rejected(&text, "w.toml:5:12: the program of `command` is empty");
    let text = format!("{BROKER}[action.page]\ntype = \"exec\"\ncommand = [\"  \"]\n");
    assert_rejected(&text, "w.toml:5:12: the program of `command` is empty");
}

#[test]
fn http_listen_on_port_0_is_refused() {
    assert_rejected(
        &format!("{BROKER}[http]\nlisten = \"127.0.0.1:0\"\n"),
        "w.toml:4:10: `listen` `127.0.0.1:0` has port 0",
    );
    let (ok, _, stderr) = check(&format!("{BROKER}[http]\nlisten = \"\"\n"));
    assert!(ok, "\"\" still turns the endpoint off: {stderr}");
}

#[test]
fn device_ids_and_topics_past_their_limits_are_refused() {
    let device = |id: &str, topic: &str| format!("{BROKER}[[device]]\nid = \"{id}\"\ntopic = \"{topic}\"\n");
    let (ok, _, stderr) = check(&device(&"i".repeat(256), &format!("t/{}", "x".repeat(1022))));
    assert!(ok, "at the limits: {stderr}");
    assert_rejected(&device(&"i".repeat(257), "t/a"), "w.toml:4:6: `id` is 257 bytes; at most 256");
    assert_rejected(
        &device("a", &format!("t/{}", "x".repeat(1023))),
        "w.toml:5:9: `topic` is 1025 bytes; at most 1024",
    );
    let pattern = format!("{BROKER}[[device]]\ntopic = \"t/{{id}}/{}\"\n", "x".repeat(1020));
    assert_rejected(&pattern, "w.toml:4:9: `topic` is 1027 bytes; at most 1024");
    let template = format!("{BROKER}[[device]]\ntopic = \"t/{{id}}\"\nid = \"{}{{id}}\"\n", "p".repeat(253));
    assert_rejected(&template, "w.toml:5:6: `id` is 257 bytes; at most 256");
    let heartbeat =
        format!("{BROKER}[[device]]\nid = \"a\"\ntopic = \"t/a\"\nheartbeat_topic = \"h/{}\"\n", "x".repeat(1023));
    assert_rejected(&heartbeat, "w.toml:6:19: `heartbeat_topic` is 1025 bytes; at most 1024");
}

/// Guards the list of keys a mistyped top-level key is offered (`action`
/// was missing from it) and the length of what a file of thousands of
/// mistakes prints (each problem was located from the start of the file:
/// 20,000 stray keys took 10 s).
#[test]
fn a_mistyped_top_level_key_is_offered_action_and_thousands_of_mistakes_print_a_hundred() {
    let (_, _, said) = check(&format!("{BROKER}[actoins.ops]\n"));
    assert!(said.contains("unknown field `actoins`, expected one of `broker`"), "{said}");
    assert!(said.contains("`action`"), "{said}");
    let many = format!(
        "{BROKER}[action.x]\ntype = \"log\"\n{}",
        (0..20_000).map(|i| format!("k{i} = 1\n")).collect::<String>()
    );
    let started = std::time::Instant::now();
    let (ok, _, said) = check(&many);
    assert!(!ok);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(said.lines().filter(|l| l.contains("unknown setting")).count(), 100, "{}", &said[..300]);
    assert!(said.contains("… and 19900 more problems"), "{}", &said[said.len() - 200..]);
}
