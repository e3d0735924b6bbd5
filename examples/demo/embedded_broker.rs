//! An in-process rumqttd broker on a given port, for the demo and for the
//! tests on machines without mosquitto. rumqttd has no shutdown or
//! readiness API: it runs on its own thread for the life of the process,
//! and callers poll its port.

/// Starts rumqttd on 127.0.0.1:`port` in a background thread.
pub fn start(port: u16) {
    let config = format!(
        r#"
        id = 0
        [router]
        id = 0
        max_connections = 10010
        max_outgoing_packet_count = 200
        max_segment_size = 104857600
        max_segment_count = 10
        [v4.1]
        name = "v4-1"
        listen = "127.0.0.1:{port}"
        next_connection_delay_ms = 1
        [v4.1.connections]
        connection_timeout_ms = 60000
        max_payload_size = 20971520
        max_inflight_count = 100
        dynamic_filters = true
        "#
    );
    let config: rumqttd::Config = toml::from_str(&config).expect("a valid rumqttd config");
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        let _ = broker.start();
    });
}
