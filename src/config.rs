//! Configuration: a TOML file, overridden by `LAKESTREAM_*` environment
//! variables, overridden by command-line flags; validated before anything
//! connects, with errors that name the setting.
//!
//! Environment keys mirror the TOML path with `__` between levels:
//! `LAKESTREAM_KAFKA__BROKERS` sets `kafka.brokers`,
//! `LAKESTREAM_LAKE__STORAGE__AZURE_STORAGE_ACCOUNT_KEY` sets
//! `lake.storage.azure_storage_account_key`.
//!
//! Secrets (SASL password, storage keys, SAS tokens, client secrets) are held
//! in [`Secret`], whose `Debug`/`Display` never show the value, and may be read
//! from a mounted file with a `_file` suffix (`sasl_password_file`,
//! `lake.storage.azure_storage_account_key_file`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub const ENV_PREFIX: &str = "LAKESTREAM_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("setting `{setting}`: {message}")]
    Invalid { setting: String, message: String },
}

fn invalid(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { setting: setting.to_string(), message: message.into() }
}

/// A value that must never be printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub lake: LakeConfig,
    pub batch: BatchConfig,
    pub decode: DecodeConfig,
    pub metrics: MetricsConfig,
    pub maintenance: MaintenanceConfig,
}

/// Table maintenance inside `run` (and the defaults of `lakestream maintain`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Run maintenance inside `run`, beside ingestion.
    pub enabled: bool,
    /// How often `run` looks at each table.
    pub interval_secs: u64,
    /// Compact a table (OPTIMIZE) once it has this many files smaller than
    /// half the target size.
    pub compact_min_small_files: usize,
    /// Size compaction aims for.
    pub target_file_bytes: u64,
    /// VACUUM (at most) this often.
    pub vacuum_interval_hours: u64,
    /// Files a commit removed, and files no commit ever added (left by a crash
    /// between upload and commit), are deleted once older than this. At least
    /// 1 hour: younger files may belong to a commit still in flight.
    pub vacuum_retention_hours: u64,
    /// Silver's delete tombstones are kept this long: an event older than a
    /// delete that arrives later than this could bring the row back.
    pub tombstone_retention_hours: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            enabled: true,
            interval_secs: 60,
            compact_min_small_files: 50,
            target_file_bytes: 128 << 20,
            vacuum_interval_hours: 24,
            vacuum_retention_hours: 168,
            tombstone_retention_hours: 30 * 24,
        }
    }
}

impl MaintenanceConfig {
    /// Tombstones written before this time are expired, from the table by
    /// maintenance and from the writer's memory.
    pub fn tombstone_cutoff(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() - chrono::Duration::hours(self.tombstone_retention_hours as i64)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` for /metrics, /healthz and /readyz (e.g. `0.0.0.0:9898` in a
    /// container). Unset: no HTTP endpoint.
    pub listen: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
    fn uses_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    pub topic: String,
    /// Consumer group shared by all writers of one pipeline.
    pub group_id: String,
    pub security_protocol: SecurityProtocol,
    /// PLAIN (Confluent Cloud API keys), SCRAM-SHA-256 or SCRAM-SHA-512.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    pub sasl_password_file: Option<PathBuf>,
    pub ssl_ca_location: Option<String>,
    /// Any other librdkafka property, passed through as is.
    pub properties: BTreeMap<String, Secret>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "orders".into(),
            group_id: "lakestream".into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            sasl_password_file: None,
            ssl_ca_location: None,
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// `./lake`, `file:///…`, `abfss://container@account.dfs.core.windows.net/path`,
    /// `az://container/path` or `s3://bucket/path`.
    pub uri: String,
    /// object_store / delta-rs storage options (`azure_storage_account_key`,
    /// `azure_storage_use_emulator`, `aws_endpoint_url`, `aws_allow_http`, …).
    /// A key ending in `_file` is read from that file, without the suffix.
    pub storage: BTreeMap<String, Secret>,
    /// The highest Delta reader version lakestream accepts on a table. 1 keeps
    /// every table readable by Power BI, Databricks and older readers; a table
    /// someone upgraded (deletion vectors, column mapping…) is refused instead
    /// of written.
    pub max_reader_version: i32,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig { uri: "./lake".into(), storage: BTreeMap::new(), max_reader_version: 1 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch closes at this many records…
    pub max_records: usize,
    /// …or this many bytes of keys and values…
    pub max_bytes: usize,
    /// …or this long after its first record, whichever comes first: the
    /// deadline of a live stream, which bounds how stale the tables are.
    pub max_latency_ms: u64,
    /// The deadline instead while catching up (the batch's newest record is
    /// older than this by its Kafka timestamp, or at least a full batch waits
    /// by the lag or the end offsets seen at assignment): a backlog is read in full
    /// batches rather than one commit per `max_latency_ms`. A `max_latency_ms`
    /// above it applies to both.
    pub catch_up_latency_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_records: 50_000, max_bytes: 64 << 20, max_latency_ms: 300, catch_up_latency_ms: 5_000 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Values above this size are quarantined as `oversized` (bronze keeps them).
    pub max_record_bytes: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig { max_record_bytes: 1 << 20 }
    }
}

impl Config {
    /// Loads the file (if any), applies the environment, reads `_file`
    /// secrets and validates. Flags are applied by the caller, then
    /// [`Config::validate`] again.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut tree = match path {
            Some(p) => {
                let shown = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse { path: shown.clone(), message: e.to_string() })?
            }
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default()).expect("defaults serialise");
        let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        vars.sort();
        for (var, value) in vars {
            apply_env(&mut tree, &defaults, &var, value)?;
        }
        let origin = path.map(|p| p.display().to_string()).unwrap_or_else(|| "environment".into());
        let mut config: Config = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse { path: origin, message: e.to_string() })?;
        config.resolve_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(file) = self.kafka.sasl_password_file.take() {
            self.kafka.sasl_password = Some(read_secret_file("kafka.sasl_password_file", &file)?);
        }
        let file_keys: Vec<String> = self.lake.storage.keys().filter(|k| k.ends_with("_file")).cloned().collect();
        for key in file_keys {
            let path = self.lake.storage.remove(&key).unwrap();
            let value = read_secret_file(&format!("lake.storage.{key}"), Path::new(path.expose()))?;
            self.lake.storage.insert(key.trim_end_matches("_file").to_string(), value);
        }
        Ok(())
    }

    /// Checks every setting that can be checked without a network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "is empty; expected host:port[,host:port…]"));
        }
        for b in k.brokers.split(',') {
            let b = b.trim();
            let port_ok = b.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !port_ok {
                return Err(invalid("kafka.brokers", format!("`{b}` is not host:port")));
            }
        }
        if k.topic.trim().is_empty() {
            return Err(invalid("kafka.topic", "is empty"));
        }
        if k.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "is empty"));
        }
        if k.security_protocol.uses_sasl() {
            let mech = k.sasl_mechanism.as_deref().unwrap_or("");
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&mech) {
                return Err(invalid(
                    "kafka.sasl_mechanism",
                    format!("`{mech}` is not supported with {}; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", k.security_protocol.librdkafka_name()),
                ));
            }
            if k.sasl_username.as_deref().unwrap_or("").is_empty() {
                return Err(invalid("kafka.sasl_username", "is required for SASL (the Confluent Cloud API key)"));
            }
            if k.sasl_password.as_ref().is_none_or(|p| p.expose().is_empty()) {
                return Err(invalid(
                    "kafka.sasl_password",
                    "is required for SASL: set LAKESTREAM_KAFKA__SASL_PASSWORD or kafka.sasl_password_file",
                ));
            }
        } else if k.sasl_mechanism.is_some() || k.sasl_username.is_some() {
            return Err(invalid(
                "kafka.security_protocol",
                "SASL settings are given but the protocol is not sasl_ssl or sasl_plaintext",
            ));
        }
        for key in k.properties.keys() {
            let owned = ["bootstrap.servers", "group.id", "enable.auto.commit", "security.protocol", "sasl.password"];
            if owned.contains(&key.as_str()) {
                return Err(invalid(&format!("kafka.properties.{key}"), "is set by lakestream itself; use the kafka.* setting"));
            }
        }
        let b = &self.batch;
        if b.max_records == 0 {
            return Err(invalid("batch.max_records", "must be at least 1"));
        }
        if b.max_bytes < 1024 {
            return Err(invalid("batch.max_bytes", "must be at least 1024"));
        }
        if b.max_latency_ms == 0 {
            return Err(invalid("batch.max_latency_ms", "must be at least 1"));
        }

        if self.decode.max_record_bytes == 0 {
            return Err(invalid("decode.max_record_bytes", "must be at least 1"));
        }
        if let Some(listen) = &self.metrics.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid("metrics.listen", format!("`{listen}` is not ip:port (e.g. 0.0.0.0:9898)")));
            }
        }
        if !(1..=3).contains(&self.lake.max_reader_version) {
            return Err(invalid("lake.max_reader_version", "must be 1, 2 or 3"));
        }
        let m = &self.maintenance;
        if m.interval_secs == 0 {
            return Err(invalid("maintenance.interval_secs", "must be at least 1"));
        }
        if m.compact_min_small_files < 2 {
            return Err(invalid("maintenance.compact_min_small_files", "must be at least 2"));
        }
        if m.target_file_bytes < 1 << 20 {
            return Err(invalid("maintenance.target_file_bytes", "must be at least 1048576 (1 MiB)"));
        }
        if m.vacuum_retention_hours < 1 {
            return Err(invalid(
                "maintenance.vacuum_retention_hours",
                "must be at least 1: a younger unreferenced file may belong to a commit still in flight",
            ));
        }
        if m.vacuum_interval_hours == 0 {
            return Err(invalid("maintenance.vacuum_interval_hours", "must be at least 1"));
        }
        if m.tombstone_retention_hours < 1 {
            return Err(invalid("maintenance.tombstone_retention_hours", "must be at least 1"));
        }
        let location = crate::tables::location::LakeLocation::parse(&self.lake.uri)
            .map_err(|message| invalid("lake.uri", message))?;
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        crate::tables::location::check_credentials(location.kind, &self.lake.storage, &env)
            .map_err(|message| invalid("lake.storage", message))?;
        Ok(())
    }

    /// The configuration as TOML with every secret replaced, for `check` and logs.
    pub fn redacted(&self) -> String {
        let mut copy = self.clone();
        if copy.kafka.sasl_password.is_some() {
            copy.kafka.sasl_password = Some(Secret::new("<redacted>"));
        }
        for (key, value) in copy.kafka.properties.iter_mut().chain(copy.lake.storage.iter_mut()) {
            if is_secret_key(key) {
                *value = Secret::new("<redacted>");
            }
        }
        toml::to_string(&copy).unwrap_or_default()
    }
}

/// Keys whose values are credentials.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "sas", "credential", "signature", "sig"]
        .iter()
        .any(|word| k.contains(word))
        && !k.ends_with("key_id")
        && !k.contains("keystore.location")
}

fn read_secret_file(setting: &str, path: &Path) -> Result<Secret, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| Secret::new(s.trim_end_matches(['\r', '\n'])))
        .map_err(|e| invalid(setting, format!("cannot read {}: {e}", path.display())))
}

/// Sets one `LAKESTREAM_A__B__C` variable into the TOML tree. The type is taken
/// from the default configuration where the path exists there (so numbers and
/// booleans parse), and is a string elsewhere (maps such as `lake.storage`).
fn apply_env(tree: &mut toml::Table, defaults: &toml::Table, var: &str, value: String) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env { var: var.into(), message: "empty path segment".into() });
    }
    // Only variables naming a config section are ours; others (LAKESTREAM_TEST_…) are ignored.
    if path.len() < 2 || !defaults.contains_key(&path[0]) {
        return Ok(());
    }
    let mut default = defaults.get(&path[0]);
    for segment in &path[1..] {
        default = default.and_then(|d| d.as_table()).and_then(|t| t.get(segment));
    }
    let typed = match default {
        Some(toml::Value::Integer(_)) => toml::Value::Integer(value.trim().parse().map_err(|_| ConfigError::Env {
            var: var.into(),
            message: format!("expected a whole number, found `{value}`"),
        })?),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(value.trim().parse().map_err(|_| ConfigError::Env {
            var: var.into(),
            message: format!("expected true or false, found `{value}`"),
        })?),
        _ => toml::Value::String(value),
    };
    let mut node = tree;
    for segment in &path[..path.len() - 1] {
        let entry = node.entry(segment.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.into(),
            message: format!("`{segment}` is not a section"),
        })?;
    }
    node.insert(path[path.len() - 1].clone(), typed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn file_then_environment_with_types_from_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[kafka]\ntopic = \"t1\"\n[batch]\nmax_records = 10\n").unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("LAKESTREAM_BATCH__MAX_RECORDS", "20"),
                ("LAKESTREAM_LAKE__STORAGE__AZURE_STORAGE_USE_EMULATOR", "true"),
                ("LAKESTREAM_TEST_BROKERS", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.topic, "t1");
        assert_eq!(c.batch.max_records, 20);
        assert_eq!(c.lake.storage["azure_storage_use_emulator"].expose(), "true");
    }

    #[test]
    fn errors_name_the_setting() {
        let e = Config::load(None, env(&[("LAKESTREAM_BATCH__MAX_RECORDS", "many")])).unwrap_err();
        assert_eq!(e.to_string(), "environment variable LAKESTREAM_BATCH__MAX_RECORDS: expected a whole number, found `many`");
        let e = Config::load(None, env(&[("LAKESTREAM_KAFKA__BROKERS", "localhost")])).unwrap_err();
        assert_eq!(e.to_string(), "setting `kafka.brokers`: `localhost` is not host:port");
        let e = Config::load(None, env(&[("LAKESTREAM_KAFKA__SECURITY_PROTOCOL", "sasl_ssl")])).unwrap_err();
        assert!(e.to_string().starts_with("setting `kafka.sasl_mechanism`"), "{e}");
        let e = Config::load(None, env(&[("LAKESTREAM_LAKE__URI", "ftp://x/y")])).unwrap_err();
        assert!(e.to_string().starts_with("setting `lake.uri`"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[kafka]\nbrokerz = \"x\"\n").unwrap();
        let e = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(e.contains("unknown field `brokerz`") && e.contains("c.toml"), "{e}");
    }

    #[test]
    fn secrets_are_redacted_and_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "s3cr3t-key\n").unwrap();
        let c = Config::load(
            None,
            env(&[
                ("LAKESTREAM_KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
                ("LAKESTREAM_KAFKA__SASL_MECHANISM", "PLAIN"),
                ("LAKESTREAM_KAFKA__SASL_USERNAME", "APIKEY"),
                ("LAKESTREAM_KAFKA__SASL_PASSWORD", "hunter2-password"),
                ("LAKESTREAM_LAKE__STORAGE__AZURE_STORAGE_ACCOUNT_KEY_FILE", key_file.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(c.lake.storage["azure_storage_account_key"].expose(), "s3cr3t-key");
        let shown = format!("{} {:?}", c.redacted(), c);
        assert!(!shown.contains("hunter2") && !shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("APIKEY"));
    }

    #[test]
    fn maintenance_and_metrics_settings_are_checked_up_front() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.maintenance.enabled && c.maintenance.vacuum_retention_hours == 168);
        let cases = [
            ("LAKESTREAM_METRICS__LISTEN", "9898", "metrics.listen"),
            ("LAKESTREAM_MAINTENANCE__VACUUM_RETENTION_HOURS", "0", "maintenance.vacuum_retention_hours"),
            ("LAKESTREAM_MAINTENANCE__INTERVAL_SECS", "0", "maintenance.interval_secs"),
            ("LAKESTREAM_MAINTENANCE__COMPACT_MIN_SMALL_FILES", "1", "maintenance.compact_min_small_files"),
            ("LAKESTREAM_MAINTENANCE__TARGET_FILE_BYTES", "1000", "maintenance.target_file_bytes"),
        ];
        for (var, value, setting) in cases {
            let e = Config::load(None, env(&[(var, value)])).unwrap_err().to_string();
            assert!(e.contains(setting), "{var}={value}: {e}");
        }
        let e = Config::load(None, env(&[("LAKESTREAM_MAINTENANCE__ENABLED", "sometimes")])).unwrap_err().to_string();
        assert!(e.contains("LAKESTREAM_MAINTENANCE__ENABLED"), "{e}");
    }
}
