//! `mqtts://` to mosquitto with a CA and a client certificate made by the
//! test, and clear errors when TLS cannot work.

mod support;

use std::path::Path;
use std::time::Duration;

use support::pki::{Pki, make_pki};
use support::{Broker, BrokerOptions, Daemon, eventually};

fn tls_config(broker: &Broker, ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let mut broker_section = format!(
        "state_dir = \"state\"\n\n[broker]\nurl = \"mqtts://127.0.0.1:{}\"\nclient_id = \"willwatch-tls\"\nca_file = \"{}\"\n",
        broker.port,
        ca.display()
    );
    if let Some((cert, key)) = client {
        broker_section.push_str(&format!("cert_file = \"{}\"\nkey_file = \"{}\"\n", cert.display(), key.display()));
    }
    format!("{broker_section}\n[http]\nlisten = \"\"\n\n[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\n")
}

fn tls_broker() -> Option<(Broker, Pki)> {
    let dir = tempfile::tempdir().unwrap().keep();
    let pki = make_pki(&dir, "good");
    let broker = Broker::mosquitto(BrokerOptions { tls: Some(pki.server.clone()), ..Default::default() })?;
    Some((broker, pki))
}

#[tokio::test]
async fn mutual_tls_connects_and_detects() {
    let Some((broker, pki)) = tls_broker() else {
        return;
    };
    let daemon = Daemon::start(&tls_config(&broker, &pki.ca, Some((&pki.client_cert, &pki.client_key))));
    daemon.wait_connected().await;
    publish_over_tls(&broker, &pki, "plant/pump-7/status", "offline").await;
    daemon.wait_event("pump-7", "offline", 1).await;
    assert!(daemon.logs(|l| l["level"] == "ERROR").is_empty(), "{}", daemon.dump());
}

async fn publish_over_tls(broker: &Broker, pki: &Pki, topic: &str, payload: &str) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
    let mut options = MqttOptions::new("tls-publisher", "127.0.0.1", broker.port);
    let read = |p: &Path| std::fs::read(p).unwrap();
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: read(&pki.ca),
        alpn: None,
        client_auth: Some((read(&pki.client_cert), read(&pki.client_key))),
    }));
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(eventloop.poll().await.expect("TLS publisher"), Event::Incoming(Packet::PubAck(_))) {}
    })
    .await
    .expect("publish acknowledged");
}

#[tokio::test]
async fn an_untrusted_broker_certificate_is_a_clear_tls_error() {
    let Some((broker, pki)) = tls_broker() else {
        return;
    };
    let other = make_pki(broker.dir(), "other");
    let daemon = Daemon::start(&tls_config(&broker, &other.ca, Some((&pki.client_cert, &pki.client_key))));
    let error = daemon.wait_log("a TLS error", Duration::from_secs(10), |l| l["what"] == "broker_tls_failed").await;
    assert_eq!(error["level"], "ERROR");
    assert!(error["error"].as_str().unwrap().contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn a_missing_client_certificate_is_refused_and_retried() {
    let Some((broker, pki)) = tls_broker() else {
        return;
    };
    let daemon = Daemon::start(&tls_config(&broker, &pki.ca, None));
    eventually("two failed attempts", Duration::from_secs(20), || {
        let failures = daemon.logs(|l| l["attempt"].as_u64().is_some() && l["retry_in"].is_string());
        (failures.len() >= 2).then_some(())
    })
    .await;
    assert!(daemon.logs(|l| l["what"] == "broker_connected").is_empty(), "{}", daemon.dump());
}
