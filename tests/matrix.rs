//! Matrix, end to end against a real homeserver (Synapse, started by the
//! test): an outage posted into a room by the daemon, read back from the
//! room as its members see it, each message once.

mod support;

use support::synapse::Homeserver;
use support::{Broker, Daemon, SENTINEL, SOON, config, publish, sync_with_sentinel};

#[tokio::test]
async fn an_outage_is_posted_into_the_room_once_per_event() {
    let Some(server) = Homeserver::start().await else { return };
    let broker = Broker::start();
    let action = format!(
        "[action.room]\ntype = \"matrix\"\nhomeserver = \"{}\"\nroom = \"{}\"\ntoken_file = \"matrix-token\"\nmin_interval = \"0s\"\n",
        server.url, server.room
    );
    let device = "[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\nactions = [\"room\"]\n";
    let text = config(&broker, &format!("{action}\n{device}\n{SENTINEL}"));
    let daemon = Daemon::start_with_files(&text, &[("matrix-token", server.token.as_str())]);
    daemon.wait_connected().await;
    sync_with_sentinel(&broker, &daemon, &[("plant/pump-7/status", "online")]).await;
    let posted = async |n: usize| {
        support::wait::within(SOON, async || {
            let messages = server.messages().await;
            if messages.len() >= n { Ok(messages) } else { Err(messages) }
        })
        .await
        .unwrap_or_else(|seen| panic!("the room holds {seen:?}\n{}\n{}", server.log_tail(), daemon.dump()))
    };
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    posted(1).await;
    publish(broker.port, "plant/pump-7/status", "online", false).await;
    posted(2).await;
    support::observe(std::time::Duration::from_millis(500)).await;
    let messages = server.messages().await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    let (sender, offline) = &messages[0];
    assert_eq!(sender, "@willwatch:localhost");
    assert_eq!(offline["msgtype"], "m.text");
    assert!(offline["body"].as_str().unwrap().starts_with("pump-7 is offline\n"), "{offline}");
    assert_eq!(offline["format"], "org.matrix.custom.html");
    assert!(offline["formatted_body"].as_str().unwrap().starts_with("<strong>pump-7 is offline</strong>"), "{offline}");
    assert!(messages[1].1["body"].as_str().unwrap().starts_with("pump-7 is back online"), "{:?}", messages[1]);
    assert!(!daemon.dump().contains(&server.token), "the token is in no log line");
}
