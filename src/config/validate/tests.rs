//! Validation over a made-up outside (`Given`): the rules that read files,
//! the environment or the host, tested with none of the machine's.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;

use super::validate;
use crate::config::error::Problem;
use crate::config::outside::Outside;
use crate::config::{ActionKind, Config};

/// Files (bytes and mode), variables and a host name, nothing else.
#[derive(Default)]
struct Given {
    files: HashMap<PathBuf, (Vec<u8>, u32)>,
    vars: HashMap<&'static str, OsString>,
    host: Option<&'static str>,
}

impl Given {
    fn file(mut self, path: &str, text: &str, mode: u32) -> Given {
        self.files.insert(PathBuf::from(path), (text.as_bytes().to_vec(), mode));
        self
    }

    fn var(mut self, name: &'static str, value: &str) -> Given {
        self.vars.insert(name, OsString::from(value));
        self
    }

    fn host(mut self, host: &'static str) -> Given {
        self.host = Some(host);
        self
    }
}

impl Outside for Given {
    fn var(&self, name: &str) -> Option<OsString> {
        self.vars.get(name).cloned()
    }

    fn read(&self, path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
        match self.files.get(path) {
            Some((bytes, _)) if bytes.len() as u64 > max => {
                Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {max} bytes")))
            }
            Some((bytes, _)) => Ok(bytes.clone()),
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    fn mode(&self, path: &Path) -> std::io::Result<(bool, u32)> {
        self.files.get(path).map(|(_, mode)| (true, *mode)).ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }

    fn host_name(&self) -> Option<String> {
        self.host.map(String::from)
    }

    fn system_roots(&self) -> Vec<CertificateDer<'static>> {
        Vec::new()
    }
}

const BROKER: &str = "[broker]\nurl = \"mqtt://b:1883\"\n";

/// `[broker]` and `rest`, validated.
fn valid(given: &Given, rest: &str) -> Config {
    whole(given, &format!("{BROKER}{rest}"))
}

fn whole(given: &Given, text: &str) -> Config {
    validate(Path::new("/etc/willwatch/w.toml"), text, given).unwrap_or_else(|p| panic!("{p:?}"))
}

/// The problems' messages, each with the text its span covers.
fn refused(given: &Given, rest: &str) -> Vec<(String, String)> {
    let text = format!("{BROKER}{rest}");
    let problems: Vec<Problem> = validate(Path::new("/etc/willwatch/w.toml"), &text, given).expect_err("refused");
    problems.into_iter().map(|p| (p.message, text.get(p.span).unwrap_or("").to_string())).collect()
}

#[test]
fn the_password_comes_from_its_file_relative_to_the_config_else_from_the_environment() {
    let given = Given::default().file("/etc/willwatch/pw", "s3cret\n", 0o600).var("WILLWATCH_MQTT_PASSWORD", "env");
    let config = valid(&given, "username = \"u\"\npassword_file = \"pw\"\n");
    assert_eq!(config.broker.password.map(|p| p.0), Some("s3cret".into()));
    let config = valid(&given, "username = \"u\"\n");
    assert_eq!(config.broker.password.map(|p| p.0), Some("env".into()));
    let problems = refused(&given, "username = \"u\"\npassword_file = \"missing\"\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].1, "\"missing\"", "the span is the setting's value");
}

#[test]
fn a_credential_is_read_from_the_credentials_directory_or_left_to_the_service() {
    let given =
        Given::default().file("/run/creds/pw", "from-systemd", 0o400).var("CREDENTIALS_DIRECTORY", "/run/creds");
    let config = valid(&given, "username = \"u\"\npassword_file = \"credential:pw\"\n");
    assert_eq!(config.broker.password.map(|p| p.0), Some("from-systemd".into()));
    let config = valid(&Given::default(), "username = \"u\"\npassword_file = \"credential:pw\"\n");
    assert_eq!(config.unread_credentials, ["pw"]);
    assert!(config.warnings.iter().any(|w| w.contains("only the service can read")), "{:?}", config.warnings);
    let problems = refused(&given, "username = \"u\"\npassword_file = \"credential:a/b\"\n");
    assert!(problems[0].0.contains("not a credential name"), "{problems:?}");
    // Guards a directory whose name is not UTF-8: it was taken as unset.
    let mut odd = Given::default();
    let dir = OsString::from_vec(b"/run/cr\xffeds".to_vec());
    odd.files.insert(PathBuf::from(&dir).join("pw"), (b"raw".to_vec(), 0o400));
    odd.vars.insert("CREDENTIALS_DIRECTORY", dir);
    let config = valid(&odd, "username = \"u\"\npassword_file = \"credential:pw\"\n");
    assert_eq!(config.broker.password.map(|p| p.0), Some("raw".into()));
}

#[test]
fn the_client_id_and_the_cluster_instance_default_to_the_host_name() {
    let config = valid(&Given::default().host("gw-3"), "");
    assert_eq!(config.broker.client_id, "willwatch-gw-3");
    assert_eq!(valid(&Given::default(), "").broker.client_id, "willwatch");
    let config = valid(&Given::default().host("gw-3"), "[cluster]\nname = \"plant\"\n");
    let cluster = config.cluster.expect("a cluster");
    assert_eq!((cluster.instance.as_str(), config.broker.client_id.as_str()), ("gw-3", "willwatch-plant-gw-3"));
    let problems = refused(&Given::default().host("a host"), "[cluster]\nname = \"plant\"\n");
    assert!(problems[0].0.contains("host name cannot serve"), "{problems:?}");
}

#[test]
fn the_state_directory_is_systemds_first_when_the_config_names_none() {
    let given = Given::default().var("STATE_DIRECTORY", "/var/lib/ww:/var/lib/other");
    assert_eq!(valid(&given, "").state_dir, Path::new("/var/lib/ww"));
    // Guards against writing the state into the working directory: an
    // empty first entry gave an empty state directory.
    for odd in ["", ":", ":/var/lib/ww"] {
        let given = Given::default().var("STATE_DIRECTORY", odd);
        let expected = if odd.ends_with("ww") { "/var/lib/ww" } else { "/var/lib/willwatch" };
        assert_eq!(valid(&given, "").state_dir, Path::new(expected), "{odd:?}");
    }
    assert_eq!(valid(&Given::default(), "").state_dir, Path::new("/var/lib/willwatch"));
    assert_eq!(whole(&given, &format!("state_dir = \"s\"\n{BROKER}")).state_dir, Path::new("/etc/willwatch/s"));
    // Guards a path that is not UTF-8 (Linux allows it): it was dropped for
    // the default, silently.
    let mut latin1 = Given::default();
    latin1.vars.insert("STATE_DIRECTORY", OsString::from_vec(b"/srv/\xe9tat:/x".to_vec()));
    assert_eq!(valid(&latin1, "").state_dir.as_os_str().as_bytes(), b"/srv/\xe9tat");
}

#[test]
fn a_header_takes_its_variables_from_the_environment_and_a_missing_one_is_refused() {
    let hook =
        "[action.hook]\ntype = \"webhook\"\nurl = \"https://h/x\"\nheaders = { Authorization = \"Bearer ${TOKEN}\" }\n";
    let config = valid(&Given::default().var("TOKEN", "t0k3n"), hook);
    let ActionKind::Webhook(w) = &config.actions["hook"].kind else { panic!("a webhook") };
    assert!(format!("{:?}", w.headers).contains("Bearer t0k3n"), "{:?}", w.headers);
    let problems = refused(&Given::default(), hook);
    assert!(problems[0].0.contains("`TOKEN` is not set"), "{problems:?}");
    let mut odd = Given::default();
    odd.vars.insert("TOKEN", OsString::from_vec(b"t\xff".to_vec()));
    assert!(refused(&odd, hook)[0].0.contains("not UTF-8"));
    let empty = hook.replace("${TOKEN}", "${}");
    assert!(refused(&Given::default(), &empty)[0].0.contains("names no environment variable"));
    let problems = refused(&Given::default().var("TOKEN", "a\r\nX-Evil: 1"), hook);
    assert!(!problems.is_empty() && problems.iter().all(|p| !p.0.contains("Evil")), "refused, unshown: {problems:?}");
}

#[test]
fn an_exec_program_that_cannot_run_is_warned_about() {
    let exec = "[action.run]\ntype = \"exec\"\ncommand = [\"/usr/local/bin/page\", \"{id}\"]\n";
    let given = Given::default().file("/usr/local/bin/page", "#!/bin/sh\n", 0o755);
    assert!(valid(&given, exec).warnings.is_empty());
    let given = Given::default().file("/usr/local/bin/page", "#!/bin/sh\n", 0o644);
    assert!(valid(&given, exec).warnings.iter().any(|w| w.contains("not an executable file")));
    assert!(valid(&Given::default(), exec).warnings.iter().any(|w| w.contains("/usr/local/bin/page")));
}

#[test]
fn a_users_file_others_can_read_is_warned_about_and_one_that_cannot_be_read_refused() {
    let line = format!("ops:{}\n", bcrypt::hash("pw", 4).unwrap());
    let http = "[http]\nlisten = \"127.0.0.1:9818\"\nusers_file = \"users\"\n";
    let private = Given::default().file("/etc/willwatch/users", &line, 0o600);
    let config = valid(&private, http);
    assert!(config.http_users.is_some() && config.warnings.is_empty(), "{:?}", config.warnings);
    let shared = Given::default().file("/etc/willwatch/users", &line, 0o644);
    assert!(valid(&shared, http).warnings.iter().any(|w| w.contains("can be read by other users")));
    let problems = refused(&Given::default(), http);
    assert_eq!(problems[0].1, "\"users\"", "{problems:?}");
}

#[test]
fn tls_without_a_ca_file_needs_system_roots_and_a_bad_ca_file_is_refused_at_its_value() {
    let tls = "[broker]\nurl = \"mqtts://b:8883\"\n";
    let text = |rest: &str| format!("{tls}{rest}");
    let at = Path::new("/etc/willwatch/w.toml");
    let problems = validate(at, &text(""), &Given::default()).expect_err("no system roots");
    assert!(problems[0].message.contains("no system CA certificates"), "{problems:?}");
    let given = Given::default().file("/etc/willwatch/ca.pem", "not a certificate", 0o644);
    let full = text("ca_file = \"ca.pem\"\n");
    let problems = validate(at, &full, &given).expect_err("a bad CA file");
    assert_eq!(&full[problems[0].span.clone()], "\"ca.pem\"", "{problems:?}");
}

#[test]
fn each_action_kind_reads_its_own_settings_and_every_action_is_judged_in_one_pass() {
    let text = "[action.a]\ntype = \"log\"\nurl = \"https://h/x\"\n\n\
                [action.b]\ntype = \"webhook\"\nurl = \"https://h/x\"\nurll = \"x\"\n\n\
                [action.c]\ntype = \"exec\"\ncommand = \"/bin/true\"\n\n\
                [action.d]\ntype = \"publish\"\ntopic = \"t\"\nqos = 1\non = [\"offline\"]\n\n\
                [action.e]\ntype = \"reconnect\"\ntopic = \"t\"\non = [\"offline\"]\n\n\
                [action.f]\ntype = \"webhok\"\n\n\
                [action.g]\nurl = \"https://h/x\"\n\n\
                [action.h]\ntype = 7\n";
    let problems = refused(&Given::default(), text);
    let expected = [
        ("`url` is not a setting of a `log` action", "url"),
        ("unknown setting `urll` of a `webhook` action", "urll"),
        ("invalid type: string \"/bin/true\", expected a sequence", "\"/bin/true\""),
        ("`on` is not a setting of a `reconnect` action", "on"),
        ("unknown action type `webhok`", "\"webhok\""),
        ("action `g` has no `type`", ""),
        ("invalid type: integer `7`, expected a string", "7"),
    ];
    assert_problems(&problems, &expected);
    let config =
        valid(&Given::default(), "[action.d]\ntype = \"publish\"\ntopic = \"t/{id}\"\nqos = 0\non = [\"offline\"]\n");
    let spec = &config.actions["d"];
    assert_eq!(spec.on, vec![crate::event::EventKind::Offline]);
    assert!(matches!(&spec.kind, ActionKind::Publish(p) if p.qos == 0 && !p.retain));
}

#[test]
fn a_notification_service_takes_its_secrets_from_files_and_its_mistakes_are_shown_where_they_are() {
    let given = Given::default().file("/etc/willwatch/tg", "123:ABC\n", 0o600).file(
        "/etc/willwatch/hook",
        "https://hooks.slack.com/services/T/B/X\n",
        0o600,
    );
    let config = valid(
        &given,
        "[action.bot]\ntype = \"telegram\"\nbot_token_file = \"tg\"\nchat_id = -100200\n\n\
         [action.team]\ntype = \"slack\"\nurl_file = \"hook\"\n",
    );
    let ActionKind::Webhook(bot) = &config.actions["bot"].kind else { panic!("an HTTP action") };
    assert!(matches!(&bot.service, crate::config::Service::Telegram { bot_token, chat_id }
        if bot_token.expose() == "123:ABC" && chat_id == "-100200"));
    assert_eq!(bot.min_interval, Some(std::time::Duration::from_secs(3)));
    assert_eq!(bot.concurrency, 1, "paced: one request at a time");
    let ActionKind::Webhook(team) = &config.actions["team"].kind else { panic!("an HTTP action") };
    assert_eq!(team.url.as_str(), "https://hooks.slack.com/services/T/B/X");

    let problems = refused(
        &given,
        "[action.a]\ntype = \"telegram\"\nbot_token_file = \"tg\"\nchat_id = \"plant\"\n\n\
         [action.b]\ntype = \"slack\"\nurl = \"https://h/x\"\nurl_file = \"hook\"\n\n\
         [action.c]\ntype = \"ntfy\"\nurl = \"https://ntfy.sh/\"\n\n\
         [action.d]\ntype = \"pagerduty\"\nrouting_key_file = \"missing\"\n\n\
         [action.e]\ntype = \"ntfy\"\nurl = \"https://ntfy.sh/t\"\npriority = 9\n\n\
         [action.f]\ntype = \"telegram\"\nbot_token_file = \"tg\"\nchat_id = 1.5\n",
    );
    let expected = [
        ("`chat_id` `plant` is neither a number nor an @channel name", "\"plant\""),
        ("give the webhook's `url` or its `url_file`, not both", "\"hook\""),
        ("`url` names no topic", "\"https://ntfy.sh/\""),
        ("cannot read `routing_key_file`", "\"missing\""),
        ("`priority` must be from 1 to 5", "9"),
        ("`chat_id` 1.5 must be a chat's number or an @channel name", "1.5"),
    ];
    assert_problems(&problems, &expected);
    // A credential only the service can read: checked, never run.
    let config = valid(&Given::default(), "[action.x]\ntype = \"discord\"\nurl_file = \"credential:discord\"\n");
    assert_eq!(config.unread_credentials, ["discord"]);
}

/// Guards what a key of another kind used to hide: the action's other
/// problems, each at its place, in the file's order.
#[test]
fn a_key_of_another_kind_hides_none_of_the_actions_other_problems() {
    let problems = refused(
        &Given::default(),
        "[action.w]\ntype = \"webhook\"\nurl = \"ftp://x\"\ntopic = \"a\"\ntimeout = \"0s\"\n\n\
         [action.x]\ntype = \"log\"\non = \"offline\"\nid = 1\n",
    );
    let messages: Vec<&str> = problems.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(messages.len(), 5, "{messages:#?}");
    assert!(messages[0].contains("`topic` is not a setting of a `webhook` action"));
    assert!(messages[1].contains("`url` `ftp://x` is not an http(s) URL"));
    assert!(messages[2].contains("`timeout` must be from"));
    assert!(messages[3].contains("invalid type: string \"offline\", expected a sequence"));
    assert!(messages[4].contains("unknown setting `id` of a `log` action"));
    assert_eq!(crate::config::error::did_you_mean("id", ["on", "type"]), None, "no typo of `on`");
    assert_eq!(crate::config::error::did_you_mean("ur", ["url"]), Some("url"));
}

#[test]
fn an_email_action_takes_its_server_addresses_and_login_and_shows_each_mistake_where_it_is() {
    let given = Given::default().file("/etc/willwatch/smtp-pw", "s3cret\n", 0o600);
    let config = valid(
        &given,
        "[action.mail]\ntype = \"email\"\nsmtp = \"smtps://mail.example.com\"\nusername = \"alerts\"\n\
         password_file = \"smtp-pw\"\nfrom = \"willwatch <ww@plant.example>\"\nto = \"ops@plant.example\"\n\
         subject = \"[plant] {id} {event}\"\n",
    );
    let ActionKind::Webhook(mail) = &config.actions["mail"].kind else { panic!("a delivery action") };
    let crate::config::Service::Email(email) = &mail.service else { panic!("email") };
    assert!(email.implicit_tls);
    assert_eq!(email.login.as_ref().map(|(u, p)| (u.as_str(), p.expose())), Some(("alerts", "s3cret")));
    assert_eq!(email.to.len(), 1);
    assert_eq!(mail.min_interval, Some(std::time::Duration::from_secs(10)), "a storm is a few digests");

    let problems = refused(
        &given,
        "[action.a]\ntype = \"email\"\nsmtp = \"smtp://u:PASS@mail.example.com\"\nfrom = \"ww@plant.example\"\nto = [\"ops\"]\n\n\
         [action.b]\ntype = \"email\"\nsmtp = \"https://mail.example.com\"\nfrom = \"ww@plant.example\"\nto = []\n\n\
         [action.c]\ntype = \"email\"\nsmtp = \"smtp://mail.example.com\"\nusername = \"alerts\"\nfrom = \"ww\"\nto = \"ops@plant.example\"\nsubject = \"{device}\"\n",
    );
    let expected = [
        ("`smtp` `smtp://***@mail.example.com` holds a login", "\"smtp://u:PASS@mail.example.com\""),
        ("`to` `ops` is not a mail address", "[\"ops\"]"),
        ("`smtp` `https://mail.example.com` is not an smtp:// or smtps:// server", "\"https://mail.example.com\""),
        ("`to` must name from 1 to 50 addresses", "[]"),
        ("`from` `ww` is not a mail address", "\"ww\""),
        ("`username` without a `password_file`", "\"alerts\""),
        ("`subject`: unknown placeholder `{device}`", "{"),
    ];
    assert_problems(&problems, &expected);
    assert!(problems.iter().all(|(m, _)| !m.contains("PASS")), "{problems:#?}");
}

#[test]
fn an_apprise_style_url_stands_for_the_services_keys_and_its_mistakes_show_no_secret() {
    let given = Given::default().file("/etc/willwatch/tg", "tgram://123:SECRET/-100200\n", 0o600);
    let config = valid(&given, "[action.bot]\ntype = \"telegram\"\nurl_file = \"tg\"\nmin_interval = \"5s\"\n");
    let ActionKind::Webhook(bot) = &config.actions["bot"].kind else { panic!("an HTTP action") };
    assert!(matches!(&bot.service, crate::config::Service::Telegram { bot_token, chat_id }
        if bot_token.expose() == "123:SECRET" && chat_id == "-100200"));
    assert_eq!(bot.url.as_str(), "https://api.telegram.org/");
    assert_eq!(bot.min_interval, Some(std::time::Duration::from_secs(5)));

    let problems = refused(
        &given,
        "[action.a]\ntype = \"telegram\"\nurl_file = \"tg\"\nchat_id = 5\n\n\
         [action.b]\ntype = \"ntfy\"\nurl = \"tgram://123:SECRET/1\"\n\n\
         [action.c]\ntype = \"pushover\"\nurl = \"https://example.com/SECRET\"\n\n\
         [action.d]\ntype = \"matrix\"\nurl = \"matrixs://me:SECRET@m.example/!r:x\"\n\n\
         [action.e]\ntype = \"slack\"\nurl = \"slack://SECRET\"\n\n\
         [action.f]\ntype = \"gotify\"\nurl = \"gotfy://push.example/SECRET\"\ntoken_file = \"tg\"\n",
    );
    let expected = [
        ("`chat_id` is given by the Apprise-style URL in `url_file`", "chat_id"),
        ("`url` is a `tgram://` URL, for a `telegram` action, not a `ntfy` one", "\"tgram://123:SECRET/1\""),
        ("`url` of a `pushover` action is an Apprise-style URL, `pover://…`", "\"https://example.com/SECRET\""),
        ("a user and password are not supported", "\"matrixs://me:SECRET@m.example/!r:x\""),
        ("`url`: `slack://…`: expected slack://", "\"slack://SECRET\""),
        ("`url` `gotfy://push.example/…` is not an http(s) URL", "\"gotfy://push.example/SECRET\""),
    ];
    assert_problems(&problems, &expected);
    assert!(problems.iter().all(|(m, _)| !m.contains("SECRET")), "{problems:#?}");
}

/// Each problem says what `expected` says (a part of its message) at the
/// text it names (the key or value at fault; empty: anywhere), in order.
#[test]
fn the_history_takes_a_size_in_any_unit_and_refuses_one_too_small_too_large_or_unreadable_where_it_is() {
    let given = Given::default();
    assert_eq!(valid(&given, "").history_max_size, 1 << 30);
    assert_eq!(valid(&given, "[history]\nmax_size = \"500 MiB\"\n").history_max_size, 500 << 20);
    assert_eq!(valid(&given, "[history]\nmax_size = \"2GB\"\n").history_max_size, 2_000_000_000);
    let problems = refused(&given, "[history]\nmax_size = \"12 KiB\"\n");
    assert_problems(&problems, &[("`max_size` 12.0 KiB is too small", "\"12 KiB\"")]);
    let problems = refused(&given, "[history]\nmax_size = \"lots\"\n");
    assert_problems(&problems, &[("`max_size` is not a size", "\"lots\"")]);
    // The parser saturates: past the bound, not a silent "no limit".
    for huge in ["999999 EiB", "18446744073709551615", "65 TiB"] {
        let problems = refused(&given, &format!("[history]\nmax_size = \"{huge}\"\n"));
        assert_problems(&problems, &[("`max_size` is larger than 64.0 TiB", "")]);
    }
}

fn assert_problems(problems: &[(String, String)], expected: &[(&str, &str)]) {
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for ((message, at), (want, want_at)) in problems.iter().zip(expected) {
        assert!(message.contains(want), "{message:?} is not {want:?}");
        if !want_at.is_empty() {
            assert_eq!(at, want_at, "{message}: the span is the key or value at fault");
        }
    }
}
