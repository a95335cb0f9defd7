//! librdkafka client settings built from [`KafkaConfig`].

use crate::config::KafkaConfig;
use rdkafka::ClientConfig;

/// Settings common to the producer, the consumer and the admin client.
/// Secrets go straight into librdkafka and are never logged: librdkafka's own
/// logging is routed through `tracing` and does not print properties.
pub fn client_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    c.set("security.protocol", k.security_protocol.librdkafka_name());
    if let Some(m) = &k.sasl_mechanism {
        c.set("sasl.mechanism", m);
    }
    if let Some(u) = &k.sasl_username {
        c.set("sasl.username", u);
    }
    if let Some(p) = &k.sasl_password {
        c.set("sasl.password", p.expose());
    }
    if let Some(ca) = &k.ssl_ca_location {
        c.set("ssl.ca.location", ca);
    }
    for (key, value) in &k.properties {
        c.set(key, value.expose());
    }
    c
}

/// An error from librdkafka, with the brokers named, for a user to act on.
pub fn describe(k: &KafkaConfig, what: &str, err: &rdkafka::error::KafkaError) -> String {
    format!("{what} (kafka.brokers = {}): {err}", k.brokers)
}
