//! SIGHUP reloads the config: new devices are watched, removed ones are
//! dropped, kept ones keep their state, and a broken file changes nothing.

mod support;

use support::daemon::message;
use support::{Broker, Daemon, SOON, config, publish};

fn devices(ids: &[&str]) -> String {
    ids.iter().map(|id| format!("[[device]]\nid = \"{id}\"\ntopic = \"plant/{id}/status\"\n\n")).collect()
}

async fn wait_reloaded(daemon: &Daemon, n: usize) -> serde_json::Value {
    let what = format!("reload #{n}");
    support::eventually(&what, SOON, || {
        daemon.logs(|l| message(l).starts_with("config reloaded")).into_iter().nth(n - 1)
    })
    .await
}

#[tokio::test]
async fn sighup_adds_and_removes_devices_and_keeps_the_state_of_the_rest() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, &devices(&["a", "b"])));
    daemon.wait_connected().await;
    publish(broker.port, "plant/a/status", "offline", false).await;
    daemon.wait_event("a", "offline", 1).await;

    daemon.write_config(&config(&broker, &devices(&["a", "c"])));
    daemon.signal("HUP");
    let reloaded = wait_reloaded(&daemon, 1).await;
    assert_eq!(reloaded["added"], "[\"c\"]");
    assert_eq!(reloaded["removed"], "[\"b\"]");

    // c is watched now; b is not.
    support::eventually("the new topic to be subscribed", SOON, || {
        (daemon.logs(|l| message(l) == "subscribed to every watched topic").len() >= 2).then_some(())
    })
    .await;
    publish(broker.port, "plant/b/status", "offline", false).await;
    publish(broker.port, "plant/c/status", "offline", false).await;
    daemon.wait_event("c", "offline", 1).await;
    assert!(daemon.events("b", "offline").is_empty(), "{}", daemon.dump());

    // a kept its open alert: coming back resolves it, and no new offline fires.
    publish(broker.port, "plant/a/status", "offline", false).await;
    publish(broker.port, "plant/a/status", "online", false).await;
    daemon.wait_event("a", "online", 1).await;
    assert_eq!(daemon.events("a", "offline").len(), 1);
}

#[tokio::test]
async fn sighup_with_a_broken_file_keeps_the_old_config() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, &devices(&["a"])));
    daemon.wait_connected().await;

    daemon.write_config(&config(&broker, "[[device]]\nid = \"a\"\ntopic = \"plant/a/status\"\nactoins = [\"log\"]\n"));
    daemon.signal("HUP");
    let error = daemon
        .wait_log("the reload error", SOON, |l| l["level"] == "ERROR" && message(l).starts_with("reload failed"))
        .await;
    let text = message(&error);
    assert!(text.contains("willwatch.toml:18:1: unknown field `actoins`"), "{text}");

    publish(broker.port, "plant/a/status", "offline", false).await;
    daemon.wait_event("a", "offline", 1).await;
    assert!(daemon.logs(|l| message(l) == "shutting down").is_empty());
}
