//! Real fleets' conventions: multi-level ids (Zigbee2MQTT's
//! `kitchen/floor_light`), id namespaces per pattern, patterns that leave
//! other software's topics alone, JSON booleans, and a plain payload beside
//! its JSON form. Messages shaped as the firmware sends them.

mod support;

use support::{Broker, Daemon, SOON, config, publish};

/// Waits until `/status` lists exactly these (id, state) pairs.
async fn wait_devices(daemon: &Daemon, want: &[(&str, &str)]) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let seen = ids(daemon).await;
        if seen.iter().map(|(i, s)| (i.as_str(), s.as_str())).eq(want.iter().copied()) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "devices {seen:?}, wanted {want:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn ids(daemon: &Daemon) -> Vec<(String, String)> {
    let url = format!("{}/status", daemon.http_url().await);
    let doc: serde_json::Value = serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap();
    let mut ids: Vec<(String, String)> = doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_string(), d["state"].as_str().unwrap().to_string()))
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn zigbee2mqtt_names_with_slashes_and_both_payload_forms() {
    let broker = Broker::start();
    let z2m = "[[device]]\ntopic = \"zigbee2mqtt/{*id}/availability\"\nstate_field = \"/state\"\n";
    let daemon = Daemon::start(&config(&broker, z2m));
    daemon.wait_connected().await;
    publish(broker.port, "zigbee2mqtt/kitchen/floor_light/availability", r#"{"state":"online"}"#, true).await;
    publish(broker.port, "zigbee2mqtt/bulb/availability", "online", true).await;
    // Telemetry in the same tree is no device.
    publish(broker.port, "zigbee2mqtt/kitchen/floor_light", r#"{"state":"ON","brightness":254}"#, false).await;
    publish(broker.port, "zigbee2mqtt/bridge/state", r#"{"state":"online"}"#, true).await;
    publish(broker.port, "zigbee2mqtt/kitchen/floor_light/availability", r#"{"state":"offline"}"#, true).await;
    daemon.wait_event("kitchen/floor_light", "offline", 1).await;
    publish(broker.port, "zigbee2mqtt/bulb/availability", "offline", true).await;
    daemon.wait_event("bulb", "offline", 1).await;
    wait_devices(&daemon, &[("bulb", "offline"), ("kitchen/floor_light", "offline")]).await;
}

#[tokio::test]
async fn patterns_get_their_own_namespaces_and_leave_other_software_alone() {
    let broker = Broker::start();
    let devices = "[[device]]\ntopic = \"tele/{id}/LWT\"\nonline = [\"Online\"]\noffline = [\"Offline\"]\n\
                   [[device]]\ntopic = \"{id}/status\"\nid = \"esp-{id}\"\n\
                   exclude = [\"homeassistant/status\", \"octoprint/+\"]\n";
    let daemon = Daemon::start(&config(&broker, devices));
    daemon.wait_connected().await;
    publish(broker.port, "homeassistant/status", "online", true).await;
    publish(broker.port, "octoprint/status", "online", true).await;
    publish(broker.port, "tele/kitchen/LWT", "Online", true).await;
    publish(broker.port, "kitchen/status", "online", true).await;
    publish(broker.port, "kitchen/status", "offline", true).await;
    daemon.wait_event("esp-kitchen", "offline", 1).await;
    publish(broker.port, "tele/kitchen/LWT", "Offline", true).await;
    daemon.wait_event("kitchen", "offline", 1).await;
    // The Tasmota and the ESPHome kitchen, and nothing else.
    wait_devices(&daemon, &[("esp-kitchen", "offline"), ("kitchen", "offline")]).await;
}

#[tokio::test]
async fn a_json_boolean_is_a_state() {
    let broker = Broker::start();
    let shelly = "[[device]]\ntopic = \"shelly/{id}/status\"\nstate_field = \"/online\"\n\
                  online = [\"true\"]\noffline = [\"false\"]\n";
    let daemon = Daemon::start(&config(&broker, shelly));
    daemon.wait_connected().await;
    publish(broker.port, "shelly/plug-1/status", r#"{"online": true, "uptime": 12}"#, true).await;
    publish(broker.port, "shelly/plug-1/status", r#"{"online": false}"#, true).await;
    let event = daemon.wait_event("plug-1", "offline", 1).await;
    assert_eq!(event["payload"], r#"{"online": false}"#);
}
