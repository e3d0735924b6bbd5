//! The services a person reads, end to end: the real daemon, a real
//! broker, and a local receiver standing for each service, which checks
//! every request against what the service's API documents (method, path,
//! headers, body fields), answers as the service does when it is over its
//! limit, and shows that a storm reaches a person as a few digests that
//! name every device, not a flood of messages.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{Behaviour, Broker, Daemon, Receiver, SENTINEL, SOON, config, publish, publish_many, sync_with_sentinel};

const PUMP: &str = "[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\nseverity = \"warning\"\n";

/// A daemon whose devices notify `actions`, with the secret files they
/// name written first (`name`, `content`).
fn start(broker: &Broker, secrets: &[(&str, &str)], actions: &str, devices: &str) -> Daemon {
    Daemon::start_with_files(&config(broker, &format!("{actions}\n{devices}\n{SENTINEL}")), secrets)
}

#[tokio::test]
async fn each_service_gets_the_request_its_api_documents_and_no_secret_is_logged() {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::Accept).await;
    let base = receiver.url.trim_end_matches("/hook");
    let actions = format!(
        "[action.push]\ntype = \"ntfy\"\nurl = \"{base}/ntfy/plant-alerts\"\ntoken_file = \"ntfy-token\"\nmin_interval = \"0s\"\n\n\
         [action.chat]\ntype = \"slack\"\nurl = \"{base}/slack/services/T0/B0/XYZSECRET\"\nmin_interval = \"0s\"\n\n\
         [action.channel]\ntype = \"discord\"\nurl_file = \"discord-url\"\nmin_interval = \"0s\"\n\n\
         [action.bot]\ntype = \"telegram\"\nbot_token_file = \"telegram-token\"\nchat_id = -1001234\napi_url = \"{base}/telegram\"\nmin_interval = \"0s\"\n\n\
         [action.oncall]\ntype = \"pagerduty\"\nrouting_key_file = \"routing-key\"\napi_url = \"{base}/pagerduty/v2/enqueue\"\n\n\
         [action.phone]\ntype = \"gotify\"\nurl = \"{base}/gotify/\"\ntoken_file = \"gotify-token\"\nmin_interval = \"0s\"\n\n\
         [action.pager]\ntype = \"pushover\"\nuser_key_file = \"pushover-user\"\ntoken_file = \"pushover-token\"\napi_url = \"{base}/pushover/1/messages.json\"\nmin_interval = \"0s\"\n\n\
         [action.office]\ntype = \"teams\"\nurl = \"{base}/teams/workflows/TEAMSSECRET\"\nmin_interval = \"0s\"\n\n\
         [action.room]\ntype = \"matrix\"\nhomeserver = \"{base}/matrix\"\nroom = \"!plant:example.org\"\ntoken_file = \"matrix-token\"\nmin_interval = \"0s\"\n\n\
         [action.genie]\ntype = \"opsgenie\"\napi_key_file = \"opsgenie-key\"\napi_url = \"{base}/opsgenie/\"\n"
    );
    let discord_url = format!("{base}/discord/api/webhooks/1/DISCORDSECRET");
    let secrets = [
        ("ntfy-token", "tk_NTFYSECRET\n"),
        ("discord-url", discord_url.as_str()),
        ("telegram-token", "123:TELEGRAMSECRET"),
        ("routing-key", "ROUTINGSECRET"),
        ("gotify-token", "GOTIFYSECRET"),
        ("pushover-user", "PUSHOVERUSER"),
        ("pushover-token", "PUSHOVERSECRET"),
        ("matrix-token", "MATRIXSECRET"),
        ("opsgenie-key", "OPSGENIESECRET"),
    ];
    let devices = format!(
        "{PUMP}actions = [\"push\", \"chat\", \"channel\", \"bot\", \"oncall\", \"phone\", \"pager\", \"office\", \"room\", \"genie\"]\n"
    );
    let daemon = start(&broker, &secrets, &actions, &devices);
    daemon.wait_connected().await;
    sync_with_sentinel(&broker, &daemon, &[("plant/pump-7/status", "online")]).await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    receiver.wait_for(10, SOON).await;
    publish(broker.port, "plant/pump-7/status", "online", false).await;
    let all = receiver.wait_for(20, SOON).await;
    let by = |prefix: &str| -> Vec<support::receiver::Received> {
        all.iter().filter(|r| r.path.starts_with(prefix)).cloned().collect()
    };

    // ntfy: JSON to the server's root, the topic in the body, the token as a bearer.
    let ntfy = by("/ntfy");
    assert_eq!(ntfy.len(), 2, "{ntfy:?}");
    assert_eq!(ntfy[0].path, "/ntfy/");
    assert_eq!(ntfy[0].header("authorization"), "Bearer tk_NTFYSECRET");
    let (off, on) = (ntfy[0].json(), ntfy[1].json());
    assert_eq!(off["topic"], "plant-alerts");
    assert_eq!(off["title"], "pump-7 is offline");
    assert_eq!(off["priority"], 4);
    assert_eq!(on["title"], "pump-7 is back online");
    assert_eq!(on["priority"], 3);

    // Slack: text for every client, blocks for Slack.
    let slack = by("/slack");
    assert_eq!(slack.len(), 2);
    assert_eq!(slack[0].path, "/slack/services/T0/B0/XYZSECRET");
    assert_eq!(slack[0].header("content-type"), "application/json");
    assert!(slack[0].json()["text"].as_str().unwrap().contains("*pump-7 is offline*"));
    assert_eq!(slack[0].json()["blocks"][0]["type"], "header");

    // Discord: the URL read from its file; one embed, mentions off.
    let discord = by("/discord");
    assert_eq!(discord.len(), 2);
    assert_eq!(discord[0].path, "/discord/api/webhooks/1/DISCORDSECRET");
    assert_eq!(discord[0].json()["embeds"][0]["title"], "pump-7 is offline");
    assert_eq!(discord[0].json()["allowed_mentions"]["parse"], serde_json::json!([]));

    // Telegram: sendMessage under the bot's path, to the chat, as HTML.
    let telegram = by("/telegram");
    assert_eq!(telegram.len(), 2);
    assert_eq!(telegram[0].path, "/telegram/bot123:TELEGRAMSECRET/sendMessage");
    assert_eq!(telegram[0].json()["chat_id"], "-1001234");
    assert_eq!(telegram[0].json()["parse_mode"], "HTML");
    assert!(telegram[0].json()["text"].as_str().unwrap().starts_with("<b>pump-7 is offline</b>"));

    // PagerDuty: a trigger, then the resolve of the same incident.
    let pagerduty = by("/pagerduty");
    assert_eq!(pagerduty.len(), 2);
    assert_eq!(pagerduty[0].path, "/pagerduty/v2/enqueue");
    let (trigger, resolve) = (pagerduty[0].json(), pagerduty[1].json());
    assert_eq!(trigger["routing_key"], "ROUTINGSECRET");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["payload"]["severity"], "warning", "the device's own");
    assert_eq!(trigger["payload"]["source"], "pump-7");
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(trigger["dedup_key"], resolve["dedup_key"]);

    // Gotify: /message with the token in its header.
    let gotify = by("/gotify");
    assert_eq!(gotify.len(), 2);
    assert_eq!(gotify[0].path, "/gotify/message");
    assert_eq!(gotify[0].header("x-gotify-key"), "GOTIFYSECRET");
    assert_eq!(gotify[0].json()["priority"], 8);

    // Pushover: a form with the token and the user key.
    let pushover = by("/pushover");
    assert_eq!(pushover.len(), 2);
    assert_eq!(pushover[0].header("content-type"), "application/x-www-form-urlencoded");
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&pushover[0].body).into_owned().collect();
    assert_eq!(form["token"], "PUSHOVERSECRET");
    assert_eq!(form["user"], "PUSHOVERUSER");
    assert_eq!(form["title"], "pump-7 is offline");

    // Teams: one Adaptive Card.
    let teams = by("/teams");
    assert_eq!(teams.len(), 2);
    assert_eq!(teams[0].json()["attachments"][0]["content"]["type"], "AdaptiveCard");

    // Matrix: a PUT into the room, named by the delivery.
    let matrix = by("/matrix");
    assert_eq!(matrix.len(), 2);
    assert_eq!(matrix[0].method, "PUT");
    let prefix = "/matrix/_matrix/client/v3/rooms/!plant:example.org/send/m.room.message/";
    assert!(matrix[0].path.starts_with(prefix), "{}", matrix[0].path);
    assert_ne!(matrix[0].path, matrix[1].path, "each message its own transaction");
    assert_eq!(matrix[0].header("authorization"), "Bearer MATRIXSECRET");
    assert_eq!(matrix[0].json()["msgtype"], "m.text");

    // Opsgenie: the alert created, then closed by its alias.
    let opsgenie = by("/opsgenie");
    assert_eq!(opsgenie.len(), 2);
    assert_eq!(opsgenie[0].path, "/opsgenie/v2/alerts");
    assert_eq!(opsgenie[0].header("authorization"), "GenieKey OPSGENIESECRET");
    let alias = opsgenie[0].json()["alias"].as_str().unwrap().to_string();
    assert_eq!(opsgenie[1].path, format!("/opsgenie/v2/alerts/{alias}/close"));

    for secret in [
        "NTFYSECRET",
        "XYZSECRET",
        "DISCORDSECRET",
        "TELEGRAMSECRET",
        "ROUTINGSECRET",
        "GOTIFYSECRET",
        "PUSHOVERSECRET",
        "TEAMSSECRET",
        "MATRIXSECRET",
        "OPSGENIESECRET",
    ] {
        assert!(!daemon.dump().contains(secret), "{secret} reached the log");
    }
}

/// Guards a person's phone against a storm: 120 devices with long names
/// offline at once, to a chat that takes one request a second (429
/// sooner): a dozen digests, each device named in one (a digest holds no
/// more names than every service's message shows), no request over the
/// limit, none dropped.
#[tokio::test]
async fn a_storm_to_a_rate_limited_chat_becomes_digests_that_name_every_device() {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::OnePer(Duration::from_millis(900))).await;
    let actions = format!("[action.chat]\ntype = \"slack\"\nurl = \"{}\"\n", receiver.url);
    let devices = "[[device]]\ntopic = \"fleet/{id}/status\"\nactions = [\"chat\"]\n";
    let daemon = start(&broker, &[], &actions, devices);
    daemon.wait_connected().await;
    let names: Vec<String> = (0..120).map(|i| format!("building-7-floor-3-sensor-{i:03}")).collect();
    let topics: Vec<String> = names.iter().map(|n| format!("fleet/{n}/status")).collect();
    let online: Vec<(&str, &str)> = topics.iter().map(|t| (t.as_str(), "online")).collect();
    sync_with_sentinel(&broker, &daemon, &online).await;
    let offline: Vec<(&str, Vec<u8>)> = topics.iter().map(|t| (t.as_str(), b"offline".to_vec())).collect();
    publish_many(broker.port, &offline, false).await;
    let named = support::eventually("every device named", Duration::from_secs(40), || {
        let mut named = BTreeSet::new();
        for r in receiver.received() {
            let text = r.json()["text"].as_str().unwrap_or_default().to_string();
            named.extend(names.iter().filter(|n| text.contains(n.as_str())).cloned());
        }
        (named.len() == names.len()).then_some(named)
    })
    .await;
    assert_eq!(named.len(), 120);
    let received = receiver.received();
    assert!(received.len() <= 14, "{} requests for 120 offlines", received.len());
    for pair in received.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(900), "a request {gap:?} after the one before");
    }
    assert!(daemon.logs(|l| l["what"] == "webhook_given_up").is_empty(), "nothing dropped");
}

/// Guards the digest while a service is failing: what arrives during the
/// retries of one message waits, and goes as one digest once it is
/// through, not as a message each (they were 40 single messages, one a
/// second, after a 30 s failure).
#[tokio::test]
async fn what_arrives_while_a_service_fails_goes_as_one_digest_once_it_is_back() {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::FailFirst { n: 2, status: 503 }).await;
    let actions = format!("[action.chat]\ntype = \"discord\"\nurl = \"{}\"\n", receiver.url);
    let devices = "[[device]]\ntopic = \"fleet/{id}/status\"\nactions = [\"chat\"]\n";
    let daemon = start(&broker, &[], &actions, devices);
    daemon.wait_connected().await;
    let topics: Vec<String> = (0..21).map(|i| format!("fleet/d{i:02}/status")).collect();
    let online: Vec<(&str, &str)> = topics.iter().map(|t| (t.as_str(), "online")).collect();
    sync_with_sentinel(&broker, &daemon, &online).await;
    publish(broker.port, &topics[0], "offline", false).await;
    receiver.wait_for(1, SOON).await;
    let rest: Vec<(&str, Vec<u8>)> = topics[1..].iter().map(|t| (t.as_str(), b"offline".to_vec())).collect();
    publish_many(broker.port, &rest, false).await;
    receiver.wait_for(4, Duration::from_secs(20)).await;
    support::observe(Duration::from_secs(3)).await;
    let all = receiver.received();
    assert_eq!(all.len(), 4, "two failures, the first message, one digest: {}", all.len());
    let digest = all[3].json()["embeds"][0]["title"].as_str().unwrap().to_string();
    assert_eq!(digest, "20 devices offline");
}

/// A service's URL that holds its token (Slack's, Discord's) is not in the
/// dead-letter file when a delivery is given up.
#[tokio::test]
async fn a_webhook_token_in_a_services_url_reaches_no_dead_letter() {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::FailFirst { n: 100, status: 500 }).await;
    let url = format!("{}/services/T0/B0/SLACKSECRET", receiver.url);
    let actions = "[action.chat]\ntype = \"slack\"\nurl_file = \"hook\"\nmax_attempts = 1\n";
    let devices = format!("{PUMP}actions = [\"chat\"]\n");
    let daemon = start(&broker, &[("hook", url.as_str())], actions, &devices);
    daemon.wait_connected().await;
    sync_with_sentinel(&broker, &daemon, &[("plant/pump-7/status", "online")]).await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    daemon.wait_log("the delivery given up", SOON, |l| l["what"] == "webhook_given_up").await;
    let letters = std::fs::read_to_string(daemon.dir().join("state/dead-letter.jsonl")).unwrap();
    assert!(letters.contains("pump-7"), "{letters}");
    assert!(!letters.contains("SLACKSECRET"), "{letters}");
    assert!(!daemon.dump().contains("SLACKSECRET"));
}

/// A 429 whose wait is only in its body (Telegram's way) is honoured: the
/// next attempt waits as long, and the message arrives once.
#[tokio::test]
async fn a_429_with_its_wait_in_the_body_is_honoured() {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::TooManyInBody { n: 1, retry_after_secs: 2 }).await;
    let base = receiver.url.trim_end_matches("/hook");
    let actions = format!(
        "[action.bot]\ntype = \"telegram\"\nbot_token_file = \"token\"\nchat_id = \"@plant\"\napi_url = \"{base}\"\n"
    );
    let devices = format!("{PUMP}actions = [\"bot\"]\n");
    let daemon = start(&broker, &[("token", "9:T")], &actions, &devices);
    daemon.wait_connected().await;
    sync_with_sentinel(&broker, &daemon, &[("plant/pump-7/status", "online")]).await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let both = receiver.wait_for(2, SOON).await;
    assert!(both[1].at - both[0].at >= Duration::from_secs(2), "retried after {:?}", both[1].at - both[0].at);
    assert_eq!(both[1].json()["chat_id"], "@plant");
    support::observe(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 2, "delivered once, then nothing more");
}

#[tokio::test]
async fn notify_test_sends_one_message_and_says_what_the_service_answered() {
    let accepting = Receiver::start(Behaviour::Accept).await;
    let refusing = Receiver::start(Behaviour::FailFirst { n: 100, status: 403 }).await;
    let base = accepting.url.trim_end_matches("/hook");
    let text = format!(
        "[broker]\nurl = \"mqtt://127.0.0.1:1\"\n\n\
         [action.bot]\ntype = \"telegram\"\nbot_token_file = \"token\"\nchat_id = 42\napi_url = \"{base}\"\n\n\
         [action.team]\ntype = \"slack\"\nurl = \"{}\"\n\n\
         [action.out]\ntype = \"publish\"\ntopic = \"alerts\"\n",
        refusing.url
    );
    let (code, said) = tokio::task::spawn_blocking({
        let text = text.clone();
        move || support::notify_test(&text, &[("token", "1:T")], "bot")
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("bot: accepted (HTTP 200 OK)"), "{said}");
    let sent = accepting.received();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].json()["text"].as_str().unwrap().contains("willwatch-test is offline"));

    let (code, said) = tokio::task::spawn_blocking({
        let text = text.clone();
        move || support::notify_test(&text, &[("token", "1:T")], "team")
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("team: not accepted: HTTP 403 Forbidden"), "{said}");

    for (name, words) in [("nobody", "no action `nobody`"), ("out", "only webhooks and notification services")] {
        let (code, said) = tokio::task::spawn_blocking({
            let text = text.clone();
            move || support::notify_test(&text, &[("token", "1:T")], name)
        })
        .await
        .unwrap();
        assert_eq!(code, 2, "{said}");
        assert!(said.contains(words), "{said}");
    }
}

/// Apprise-style URLs, as Home Assistant and Uptime Kuma users have them,
/// work unchanged: an ntfy one inline (a user and password in it) and a
/// Telegram one from a file, pointed at a local Bot API server, its title
/// the action's own template.
#[tokio::test]
async fn apprise_style_urls_notify_as_the_services_own_keys_do() {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::Accept).await;
    let host = receiver.url.trim_start_matches("http://").trim_end_matches("/hook").to_string();
    let actions = format!(
        "[action.push]\ntype = \"ntfy\"\nurl = \"ntfy://ops:p%40ss@{host}/plant-alerts?priority=max\"\nmin_interval = \"0s\"\n\n\
         [action.bot]\ntype = \"telegram\"\nurl_file = \"telegram-url\"\napi_url = \"http://{host}/telegram\"\nmin_interval = \"0s\"\n\
         title = \"[plant] {{id}} went {{event}}\"\n"
    );
    let devices = format!("{PUMP}actions = [\"push\", \"bot\"]\n");
    let daemon = start(&broker, &[("telegram-url", "tgram://123456:TGSECRET/-1001234\n")], &actions, &devices);
    daemon.wait_connected().await;
    sync_with_sentinel(&broker, &daemon, &[("plant/pump-7/status", "online")]).await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let all = receiver.wait_for(2, SOON).await;
    let ntfy = all.iter().find(|r| r.path == "/").expect("the ntfy request");
    assert_eq!(ntfy.json()["topic"], "plant-alerts");
    assert_eq!(ntfy.json()["priority"], 5, "priority=max");
    assert_eq!(ntfy.header("authorization"), "Basic b3BzOnBAc3M=", "ops:p@ss");
    let bot = all.iter().find(|r| r.path.starts_with("/telegram")).expect("the Telegram request");
    assert_eq!(bot.path, "/telegram/bot123456:TGSECRET/sendMessage");
    assert_eq!(bot.json()["chat_id"], "-1001234");
    assert!(bot.json()["text"].as_str().unwrap().starts_with("<b>[plant] pump-7 went offline</b>"), "{}", bot.json());
    assert!(!daemon.dump().contains("TGSECRET") && !daemon.dump().contains("p%40ss"));
}
