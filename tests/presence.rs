//! The daemon's own presence: retained birth, retained will, clean goodbye.

mod support;

use support::{Broker, Daemon, SOON, config, retained, wait_retained};

#[tokio::test]
async fn own_birth_is_retained_and_sigkill_leaves_the_retained_will() {
    let broker = Broker::start();
    let mut daemon = Daemon::start(&config(&broker, ""));
    daemon.wait_connected().await;
    wait_retained(broker.port, "willwatch/test/status", "online").await;

    daemon.signal("KILL");
    daemon.exit_status(SOON).await;
    wait_retained(broker.port, "willwatch/test/status", "offline").await;
}

#[tokio::test]
async fn sigterm_publishes_retained_offline_and_exits_zero() {
    let broker = Broker::start();
    let mut daemon = Daemon::start(&config(&broker, ""));
    daemon.wait_connected().await;
    wait_retained(broker.port, "willwatch/test/status", "online").await;

    daemon.signal("TERM");
    let status = daemon.exit_status(SOON).await;
    assert!(status.success(), "exit status {status:?}\n{}", daemon.dump());
    assert_eq!(retained(broker.port, "willwatch/test/status").await.as_deref(), Some("offline"));
    let goodbye = daemon.logs(|l| l["what"] == "presence_offline_published");
    assert_eq!(goodbye.len(), 1, "{}", daemon.dump());
}

#[tokio::test]
async fn sigint_also_shuts_down_cleanly() {
    let broker = Broker::start();
    let mut daemon = Daemon::start(&config(&broker, ""));
    daemon.wait_connected().await;
    daemon.signal("INT");
    let status = daemon.exit_status(SOON).await;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(retained(broker.port, "willwatch/test/status").await.as_deref(), Some("offline"));
}
