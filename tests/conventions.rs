//! Real fleets' conventions: multi-level ids (Zigbee2MQTT's
//! `kitchen/floor_light`), id namespaces per pattern, patterns that leave
//! other software's topics alone, JSON booleans, and a plain payload beside
//! its JSON form. Messages shaped as the firmware sends them.

mod support;

use support::{Broker, Daemon, SOON, config, publish};

/// Waits until `/status` lists exactly these (id, state) pairs.
async fn wait_devices(daemon: &Daemon, want: &[(&str, &str)]) {
    support::wait::until(&format!("devices {want:?}"), SOON, async || {
        let seen = ids(daemon).await;
        if seen.iter().map(|(i, s)| (i.as_str(), s.as_str())).eq(want.iter().copied()) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await
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

/// Each preset against messages shaped as its firmware sends them, all in
/// one fleet: a Tasmota plug, an ESPHome node (in its own namespace), a
/// Shelly Gen2, a Zigbee2MQTT bulb with a multi-level name, and Home
/// Assistant itself (not retained).
#[tokio::test]
async fn every_preset_watches_its_ecosystem_with_one_line() {
    let broker = Broker::start();
    let fleet = "[[device]]\npreset = \"tasmota\"\n\
                 [[device]]\npreset = \"esphome\"\nid = \"esp-{id}\"\n\
                 [[device]]\npreset = \"shelly\"\n\
                 [[device]]\npreset = \"zigbee2mqtt\"\n\
                 [[device]]\npreset = \"homeassistant\"\n";
    let daemon = Daemon::start(&config(&broker, fleet));
    daemon.wait_connected().await;
    let births = [
        ("tele/plug-1/LWT", "Online", true),
        ("kitchen-node/status", "online", true),
        ("shellyplus1pm-a8032ab12345/online", "true", true),
        ("zigbee2mqtt/living/bulb/availability", r#"{"state":"online"}"#, true),
        ("homeassistant/status", "online", false),
    ];
    for (topic, payload, retain) in births {
        publish(broker.port, topic, payload, retain).await;
    }
    wait_devices(
        &daemon,
        &[
            ("esp-kitchen-node", "online"),
            ("homeassistant", "online"),
            ("living/bulb", "online"),
            ("plug-1", "online"),
            ("shellyplus1pm-a8032ab12345", "online"),
        ],
    )
    .await;
    let deaths = [
        ("tele/plug-1/LWT", "Offline", true),
        ("kitchen-node/status", "offline", true),
        ("shellyplus1pm-a8032ab12345/online", "false", true),
        ("zigbee2mqtt/living/bulb/availability", r#"{"state":"offline"}"#, true),
        ("homeassistant/status", "offline", false),
    ];
    for (topic, payload, retain) in deaths {
        publish(broker.port, topic, payload, retain).await;
    }
    for id in ["plug-1", "esp-kitchen-node", "shellyplus1pm-a8032ab12345", "living/bulb", "homeassistant"] {
        daemon.wait_event(id, "offline", 1).await;
    }
}

#[test]
fn check_names_each_preset_and_where_its_convention_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        "[broker]\nurl = \"mqtt://b\"\n[defaults]\npreset = \"tasmota\"\n[[device]]\n[[device]]\npreset = \"bogus\"\n",
    )
    .unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_willwatch")).args(["check", "-c"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("unknown preset `bogus`"), "{stderr}");
    assert!(stderr.contains("presets: tasmota, esphome, shelly, zigbee2mqtt, homeassistant"), "{stderr}");
    let valid = "[broker]\nurl = \"mqtt://b\"\n[defaults]\npreset = \"tasmota\"\n[[device]]\n";
    support::schema::assert_valid(valid);
    std::fs::write(&path, valid).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .args(["check", "--verbose", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("{id} on tele/{id}/LWT") && stdout.contains("online     Online"), "{stdout}");
    assert!(stdout.contains("preset     tasmota (https://tasmota.github.io/docs/MQTT/"), "{stdout}");
}

/// A Zigbee2MQTT bridge dies: one alert, for the bridge, saying how many
/// devices it took down; its devices are shown offline with the cause and
/// their own offline actions are inhibited. When it is back they return to
/// what they report, and one still offline then alerts as its own outage.
#[tokio::test]
async fn a_bridge_takes_its_children_down_with_one_alert() {
    let broker = Broker::start();
    let fleet = "[[device]]\nid = \"z2m-bridge\"\ntopic = \"zigbee2mqtt/bridge/state\"\nstate_field = \"/state\"\n\
                 [[device]]\npreset = \"zigbee2mqtt\"\nparent = \"z2m-bridge\"\n";
    let daemon = Daemon::start(&config(&broker, fleet));
    daemon.wait_connected().await;
    publish(broker.port, "zigbee2mqtt/bridge/state", r#"{"state":"online"}"#, true).await;
    publish(broker.port, "zigbee2mqtt/hall/bulb/availability", r#"{"state":"online"}"#, true).await;
    publish(broker.port, "zigbee2mqtt/plug/availability", r#"{"state":"online"}"#, true).await;
    wait_devices(&daemon, &[("hall/bulb", "online"), ("plug", "online"), ("z2m-bridge", "online")]).await;

    publish(broker.port, "zigbee2mqtt/bridge/state", r#"{"state":"offline"}"#, true).await;
    let event = daemon.wait_event("z2m-bridge", "offline", 1).await;
    assert_eq!(event["children_offline"], 2, "{event}");
    wait_devices(&daemon, &[("hall/bulb", "offline"), ("plug", "offline"), ("z2m-bridge", "offline")]).await;
    let url = format!("{}/status?device=plug", daemon.http_url().await);
    let doc: serde_json::Value = serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(doc["devices"][0]["cause"], "parent z2m-bridge offline");
    // The plug really goes while the bridge is away: no alert of its own.
    publish(broker.port, "zigbee2mqtt/plug/availability", r#"{"state":"offline"}"#, true).await;
    daemon.wait_log("the inhibition", SOON, |l| l["what"] == "device_inhibited" && l["device"] == "plug").await;
    assert!(daemon.events("plug", "offline").is_empty());

    publish(broker.port, "zigbee2mqtt/bridge/state", r#"{"state":"online"}"#, true).await;
    daemon.wait_event("z2m-bridge", "online", 1).await;
    daemon.wait_event("plug", "offline", 1).await;
    assert!(daemon.events("hall/bulb", "offline").is_empty(), "{}", daemon.dump());
    wait_devices(&daemon, &[("hall/bulb", "online"), ("plug", "offline"), ("z2m-bridge", "online")]).await;
}
