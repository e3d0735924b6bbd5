//! Sparkplug B edge nodes and devices, watched natively: births and
//! deaths from protobuf payloads made by an independent implementation
//! (pysparkplug, `tests/data/sparkplug`), the session rules, rebirth
//! requests, and willwatch as a host application with its STATE.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::sparkplug::{EdgeNode, reference};
use support::wait::within;
use support::{
    Broker, BrokerOptions, Daemon, SENTINEL, SOON, Subscriber, config, eventually, publish_many, sync_with_sentinel,
};

const PLANT: &str = "[[sparkplug]]\ngroup = \"plant\"\n";

async fn started(broker: &Broker, rest: &str) -> Daemon {
    let daemon = Daemon::start(&config(broker, &format!("{PLANT}{SENTINEL}{rest}")));
    daemon.wait_connected().await;
    daemon
}

#[tokio::test]
async fn a_node_killed_with_its_device_is_one_sparkplug_offline_and_its_device_is_held() {
    let broker = Broker::start();
    let daemon = started(&broker, "").await;
    let node = EdgeNode::connect(broker.port, "plant", "press", &["motor"]).await;
    daemon.wait_state("plant/press", "online").await;
    daemon.wait_state("plant/press/motor", "online").await;

    node.kill();
    let offline = daemon.wait_event("plant/press", "offline", 1).await;
    assert_eq!(offline["kind"], "sparkplug");
    assert_eq!(offline["children_offline"], 1);
    assert_eq!(offline["topic"], "spBv1.0/plant/NDEATH/press");
    let motor = daemon.wait_state("plant/press/motor", "offline").await;
    assert_eq!(motor["cause"], "parent plant/press offline");
    sync_with_sentinel(&broker, &daemon, &[]).await;
    assert!(daemon.events("plant/press/motor", "offline").is_empty(), "{}", daemon.dump());

    // Back, in its next session: the node and its device are born again;
    // one online, for the node.
    let _node = EdgeNode::connect_session(broker.port, "plant", "press", &["motor"], 4).await;
    daemon.wait_event("plant/press", "online", 1).await;
    daemon.wait_state("plant/press/motor", "online").await;
    sync_with_sentinel(&broker, &daemon, &[]).await;
    assert!(daemon.events("plant/press/motor", "online").is_empty(), "{}", daemon.dump());
}

#[tokio::test]
async fn a_death_from_an_earlier_session_is_checked_and_the_current_one_is_not() {
    let broker = Broker::start();
    let daemon = started(&broker, "").await;
    let birth = ("spBv1.0/plant/NBIRTH/press", reference("nbirth.bin"));
    let stale = ("spBv1.0/plant/NDEATH/press", reference("ndeath-earlier.bin"));
    publish_many(broker.port, &[birth, stale], false).await;
    sync_with_sentinel(&broker, &daemon, &[]).await;
    assert_eq!(daemon.device("plant/press").await["state"], "online");
    let checked = daemon.logs(|l| l["device"] == "plant/press" && l["seq"].is_i64() && l["current"].is_i64());
    assert_eq!(checked.len(), 1, "{}", daemon.dump());

    publish_many(broker.port, &[("spBv1.0/plant/NDEATH/press", reference("ndeath.bin"))], false).await;
    daemon.wait_event("plant/press", "offline", 1).await;
}

/// Eclipse Tahu's Python `sparkplug_b.py` (and its copies) sends a birth
/// one ahead of its will, so its real death looks like an earlier
/// session's: it is checked by a rebirth request, and a node that does not
/// answer is offline.
#[tokio::test]
async fn a_death_that_matches_no_birth_is_checked_and_a_node_that_does_not_answer_is_offline() {
    let broker = Broker::start();
    let daemon = started(&broker, "").await;
    let birth = ("spBv1.0/plant/NBIRTH/press", reference("nbirth.bin"));
    let death = ("spBv1.0/plant/NDEATH/press", reference("ndeath-earlier.bin"));
    publish_many(broker.port, &[birth, death], false).await;
    let event = support::eventually("the unanswered node offline", Duration::from_secs(25), || {
        daemon.events("plant/press", "offline").into_iter().next()
    })
    .await;
    assert_eq!(event["payload"], "(silent)", "{event}");
}

#[tokio::test]
async fn a_birth_delivered_after_its_own_death_does_not_bring_the_node_back() {
    let broker = Broker::start();
    let daemon = started(&broker, "").await;
    let messages = [
        ("spBv1.0/plant/NBIRTH/press", reference("nbirth.bin")),
        ("spBv1.0/plant/NDEATH/press", reference("ndeath.bin")),
        // The same session's birth, overtaken by its will (a bridge, a cluster).
        ("spBv1.0/plant/NBIRTH/press", reference("nbirth.bin")),
    ];
    publish_many(broker.port, &messages, false).await;
    daemon.wait_event("plant/press", "offline", 1).await;
    sync_with_sentinel(&broker, &daemon, &[]).await;
    assert_eq!(daemon.device("plant/press").await["state"], "offline");
    assert!(daemon.events("plant/press", "online").is_empty(), "{}", daemon.dump());
}

#[tokio::test]
async fn malformed_payloads_are_counted_and_logged_and_change_nothing() {
    let broker = Broker::start();
    let daemon = started(&broker, "").await;
    let _node = EdgeNode::connect(broker.port, "plant", "press", &[]).await;
    daemon.wait_state("plant/press", "online").await;
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("spBv1.0/plant/NDEATH/press", b"offline".to_vec()),
        ("spBv1.0/plant/NDEATH/press", vec![0xff; 64]),
        ("spBv1.0/plant/NDEATH/press", Vec::new()),
    ];
    publish_many(broker.port, &garbage, false).await;
    sync_with_sentinel(&broker, &daemon, &[]).await;
    assert_eq!(daemon.device("plant/press").await["state"], "online");
    assert!(daemon.metric("willwatch_unrecognized_payloads_total").await >= 2.0);
    let warned = daemon.logs(|l| l["what"] == "sparkplug_malformed");
    assert!(!warned.is_empty(), "{}", daemon.dump());
}

/// Waits for the retained STATE of `host` saying `online`; returns it.
async fn wait_host_state(broker: &Broker, host: &str, online: bool) -> serde_json::Value {
    support::wait::until(&format!("the STATE of {host} to say online = {online}"), SOON, async || {
        let text = support::retained(broker.port, &format!("spBv1.0/STATE/{host}")).await;
        match text.as_deref().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()) {
            Some(state) if state["online"] == online => Ok(state),
            _ => Err(format!("{text:?}")),
        }
    })
    .await
}

fn host_config(broker: &Broker, rest: &str) -> String {
    config(broker, &format!("{PLANT}{SENTINEL}{rest}"))
        .replace("[presence]\ntopic = \"willwatch/test/status\"", "[presence]\nsparkplug_host_id = \"watch\"")
}

#[tokio::test]
async fn as_a_host_its_state_birth_and_will_are_retained_with_the_connections_timestamp() {
    let broker = Broker::start();
    let mut daemon = Daemon::start(&host_config(&broker, ""));
    daemon.wait_connected().await;
    let online = wait_host_state(&broker, "watch", true).await;
    assert!(online["timestamp"].as_u64().unwrap() > 1_700_000_000_000, "{online}");

    // Someone says it is offline while it is up: it says otherwise again.
    let overwritten = willwatch::sparkplug::state_payload(false, 1);
    support::devices::publish(broker.port, "spBv1.0/STATE/watch", overwritten, true).await;
    daemon.wait_log("the STATE put right", SOON, |l| l["what"] == "sparkplug_state_offline").await;
    assert_eq!(wait_host_state(&broker, "watch", true).await, online);

    daemon.signal("KILL");
    daemon.exit_status(SOON).await;
    let will = wait_host_state(&broker, "watch", false).await;
    assert_eq!(will["timestamp"], online["timestamp"], "the will is the same connection's");

    daemon.restart();
    daemon.wait_connected().await;
    let again = wait_host_state(&broker, "watch", true).await;
    assert!(again["timestamp"].as_u64() > online["timestamp"].as_u64(), "a new connection, a new timestamp");
    daemon.signal("TERM");
    assert!(daemon.exit_status(SOON).await.success());
    let goodbye = wait_host_state(&broker, "watch", false).await;
    assert_eq!(goodbye["timestamp"], again["timestamp"]);
}

/// The `connected to broker` log lines of this run of the daemon.
fn connections(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon.logs(|l| l["what"] == "broker_connected")
}

#[tokio::test]
async fn as_a_host_it_connects_with_a_clean_session_and_sends_its_state_birth_once_per_start() {
    let Some(broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let mut daemon = Daemon::start(&host_config(&broker, ""));
    daemon.wait_connected().await;
    wait_host_state(&broker, "watch", true).await;
    daemon.signal("TERM");
    assert!(daemon.exit_status(SOON).await.success());
    let goodbye = wait_host_state(&broker, "watch", false).await;

    // The next start, after that clean stop, as an edge node sees it.
    let watcher = Subscriber::start(broker.port, "spBv1.0/STATE/watch").await;
    daemon.restart();
    daemon.wait_connected().await;
    // Its own retained offline has come back to it by the confirm check.
    daemon.wait_log("the connection confirmed", SOON, |l| l["unconfirmed"].is_u64() && l["not_seen"].is_u64()).await;
    support::observe(Duration::from_millis(500)).await;
    let births: Vec<serde_json::Value> = watcher
        .seen()
        .iter()
        .filter(|m| !m.retain)
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
        .filter(|state| state["online"] == true)
        .collect();
    assert_eq!(births.len(), 1, "one STATE birth per start: {births:?}\n{}", daemon.dump());
    assert!(births[0]["timestamp"].as_u64() > goodbye["timestamp"].as_u64(), "{births:?} after {goodbye}");

    // A clean session: the broker kept nothing of the first run's.
    let connected = connections(&daemon);
    assert_eq!(connected.len(), 1, "{}", daemon.dump());
    assert_eq!(connected[0]["session_present"], false, "{}", daemon.dump());
    let client_id = format!("willwatch-test-{}", broker.port);
    let flags: Vec<String> = broker
        .log_tail(200)
        .lines()
        .filter(|l| l.contains(&format!(" as {client_id} (")))
        .map(|l| l.rsplit_once(" (").map(|(_, f)| f.to_string()).unwrap_or_default())
        .collect();
    assert_eq!(flags.len(), 2, "both runs connected: {}", broker.log_tail(200));
    assert!(flags.iter().all(|f| f.split(", ").any(|flag| flag == "c1")), "clean session flag: {flags:?}");
    assert_eq!(daemon.metric("willwatch_broker_sessions_lost_total ").await, 0.0);
}

#[tokio::test]
async fn after_a_restart_without_a_session_nodes_are_asked_to_rebirth_and_one_that_died_meanwhile_is_found() {
    let broker = Broker::start();
    let text = config(&broker, &format!("{PLANT}{SENTINEL}"))
        .replace("settle = \"0s\"", "settle = \"0s\"\npersistent_session = false");
    let mut daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    let alive = EdgeNode::connect(broker.port, "plant", "alive", &["motor"]).await;
    let doomed = EdgeNode::connect(broker.port, "plant", "doomed", &[]).await;
    for id in ["plant/alive", "plant/alive/motor", "plant/doomed"] {
        daemon.wait_saved(id, "online").await;
    }

    daemon.kill();
    // Its death is published while nobody keeps a session for willwatch.
    doomed.kill();
    daemon.restart();
    daemon.wait_connected().await;
    eventually("a rebirth request to the live node", SOON, || {
        (alive.rebirths.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    let offline =
        within(Duration::from_secs(30), async || daemon.events("plant/doomed", "offline").into_iter().next().ok_or(()))
            .await
            .unwrap_or_else(|()| panic!("no offline for the dead node\n{}", daemon.dump()));
    assert_eq!(offline["payload"], "(silent)");
    sync_with_sentinel(&broker, &daemon, &[]).await;
    assert!(daemon.events("plant/alive", "offline").is_empty(), "{}", daemon.dump());
    assert!(daemon.events("plant/alive/motor", "offline").is_empty(), "{}", daemon.dump());
    assert!(daemon.metric("willwatch_sparkplug_rebirth_requests_total").await >= 2.0);
}

#[tokio::test]
async fn the_reconnect_action_asks_a_dead_devices_node_for_a_rebirth() {
    let broker = Broker::start();
    let rest = "[action.rebirth]\ntype = \"reconnect\"\nfirst_after = \"0s\"\nmax_attempts = 3\n";
    let text = config(
        &broker,
        &format!("[[sparkplug]]\ngroup = \"plant\"\nactions = [\"log\", \"rebirth\"]\n{SENTINEL}{rest}"),
    );
    let daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    let node = EdgeNode::connect(broker.port, "plant", "press", &["motor"]).await;
    daemon.wait_state("plant/press/motor", "online").await;

    publish_many(broker.port, &[("spBv1.0/plant/DDEATH/press/motor", reference("ddeath.bin"))], false).await;
    daemon.wait_event("plant/press/motor", "offline", 1).await;
    // The node answers the request with its births: the device is back.
    daemon.wait_event("plant/press/motor", "online", 1).await;
    assert!(node.rebirths.load(Ordering::SeqCst) >= 1);
}

/// Once per id (receivers deduplicate by it), in arrival order.
fn distinct(received: &[support::receiver::Received]) -> Vec<serde_json::Value> {
    let mut seen = std::collections::HashSet::new();
    received.iter().filter(|r| seen.insert(r.header("webhook-id").to_string())).map(|r| r.json()).collect()
}

#[tokio::test]
async fn random_sigkills_while_nodes_die_and_return_never_notify_twice_and_end_where_the_nodes_are() {
    use rand::Rng;
    let (seed, mut rng) = support::fault_seed("fault test");
    let broker = Broker::start();
    let receiver = support::Receiver::start(support::Behaviour::Accept).await;
    let hook = format!("[action.hook]\ntype = \"webhook\"\nurl = \"{}\"\ntimeout = \"2s\"\n", receiver.url);
    let text =
        config(&broker, &format!("[[sparkplug]]\ngroup = \"plant\"\ndevices = false\nactions = [\"hook\"]\n{hook}"));
    let mut daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    const NODES: usize = 6;
    // Each node: its connection while alive, and its session number.
    let mut nodes: Vec<(Option<EdgeNode>, u64)> = Vec::new();
    for i in 0..NODES {
        nodes.push((Some(EdgeNode::connect_session(broker.port, "plant", &format!("n{i}"), &[], 10).await), 10));
    }
    for i in 0..NODES {
        daemon.wait_state(&format!("plant/n{i}"), "online").await;
    }
    let mut kills = 0;
    let mut next_kill = tokio::time::Instant::now() + Duration::from_millis(rng.random_range(300..1500));
    let mut down_until = None;
    while kills < 5 || down_until.is_some() {
        let i = rng.random_range(0..NODES);
        let (connection, bd_seq) = &mut nodes[i];
        match connection.take() {
            Some(alive) => alive.kill(),
            None => {
                *bd_seq += 1;
                *connection =
                    Some(EdgeNode::connect_session(broker.port, "plant", &format!("n{i}"), &[], *bd_seq).await);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        let now = tokio::time::Instant::now();
        match down_until {
            Some(until) if now >= until => {
                daemon.restart();
                down_until = None;
                next_kill = now + Duration::from_millis(rng.random_range(300..1500));
            }
            None if now >= next_kill => {
                daemon.kill();
                kills += 1;
                down_until = Some(now + Duration::from_millis(rng.random_range(100..800)));
            }
            _ => {}
        }
    }
    daemon.wait_connected().await;
    let alive: Vec<bool> = nodes.iter().map(|(c, _)| c.is_some()).collect();
    // Settled: each node's last notification is where it is (a node never
    // notified was never seen offline); past the rebirth answer deadline.
    let events = within(Duration::from_secs(40), async || {
        let events = distinct(&receiver.received());
        let last = |i: usize| {
            events
                .iter()
                .rev()
                .find(|e| e["device"] == format!("plant/n{i}"))
                .map_or("online", |e| e["event"].as_str().unwrap())
        };
        let settled = (0..NODES).all(|i| last(i) == if alive[i] { "online" } else { "offline" });
        if settled { Ok(events) } else { Err(events) }
    })
    .await
    .unwrap_or_else(|events| panic!("seed {seed}: never settled: alive {alive:?}\n{events:#?}\n{}", daemon.dump()));
    for i in 0..NODES {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| e["device"] == format!("plant/n{i}"))
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        for (k, kind) in kinds.iter().enumerate() {
            assert_eq!(
                *kind,
                if k % 2 == 0 { "offline" } else { "online" },
                "seed {seed}: plant/n{i} notified {kinds:?}"
            );
        }
    }
    assert!(events.len() >= NODES, "seed {seed}: too few transitions to mean anything: {}", events.len());
}
