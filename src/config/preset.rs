//! Presets: the presence conventions of common device firmware and
//! software, so that watching one of theirs takes a line
//! (`preset = "tasmota"`). A preset sets the payloads, the JSON rule and,
//! when `topic` is left out, the usual status topic; any key written next
//! to it wins. Each names where its convention is documented.

/// One ecosystem's presence convention.
#[derive(Debug)]
pub struct Preset {
    pub name: &'static str,
    /// The status topic its devices use by default.
    pub topic: &'static str,
    /// For a preset whose topic is one exact topic: the device's id.
    pub id: Option<&'static str>,
    pub online: &'static [&'static str],
    pub offline: &'static [&'static str],
    pub state_field: Option<&'static str>,
    /// Topics under its pattern that other software uses.
    pub exclude: &'static [&'static str],
    /// Its devices' status is retained (so the broker tells it again
    /// after a reconnect).
    pub retained: bool,
    /// Where the convention is documented.
    pub source: &'static str,
}

pub const PRESETS: [Preset; 5] = [
    Preset {
        name: "tasmota",
        topic: "tele/{id}/LWT",
        id: None,
        online: &["Online"],
        offline: &["Offline"],
        state_field: None,
        exclude: &[],
        retained: true,
        source: "https://tasmota.github.io/docs/MQTT/ (LWT: tele/%topic%/LWT, Online / Offline, retained)",
    },
    Preset {
        name: "esphome",
        topic: "{id}/status",
        id: None,
        online: &["online"],
        offline: &["offline"],
        state_field: None,
        exclude: &["homeassistant/status"],
        retained: true,
        source: "https://esphome.io/components/mqtt.html (birth and will: <topic_prefix>/status, online / offline, retained)",
    },
    Preset {
        name: "shelly",
        topic: "{id}/online",
        id: None,
        online: &["true"],
        offline: &["false"],
        state_field: None,
        exclude: &[],
        retained: true,
        source: "https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Mqtt (Gen2: <topic_prefix>/online, true / false, retained)",
    },
    Preset {
        name: "zigbee2mqtt",
        topic: "zigbee2mqtt/{*id}/availability",
        id: None,
        online: &["online"],
        offline: &["offline"],
        state_field: Some("/state"),
        exclude: &[],
        retained: true,
        source: "https://www.zigbee2mqtt.io/guide/configuration/device-availability.html (zigbee2mqtt/<friendly_name>/availability, {\"state\":\"online\"}, or plain online in legacy mode)",
    },
    Preset {
        name: "homeassistant",
        topic: "homeassistant/status",
        id: Some("homeassistant"),
        online: &["online"],
        offline: &["offline"],
        state_field: None,
        exclude: &[],
        retained: false,
        source: "https://www.home-assistant.io/integrations/mqtt/#birth-and-last-will-messages (homeassistant/status, online / offline, not retained)",
    },
];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The names, for error hints.
pub fn names() -> String {
    PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}
