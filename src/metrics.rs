//! Prometheus metrics and the health endpoints, served over HTTP.
//!
//! `GET /metrics` (Prometheus text format), `GET /healthz` (the process is
//! alive: 200), `GET /readyz` (200 once the writer holds partitions and its
//! last lake operation succeeded; 503 otherwise) for the Kubernetes probes.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    pub records_consumed: Counter,
    pub rows_written: Family<Labels, Counter>,
    pub quarantined: Family<Labels, Counter>,
    pub batch_records: Histogram,
    pub commit_seconds: Family<Labels, Histogram>,
    pub commit_conflicts: Family<Labels, Counter>,
    pub batch_retries: Counter,
    pub table_version: Family<Labels, Gauge>,
    pub consumer_lag: Family<Labels, Gauge>,
    pub committed_offset: Family<Labels, Gauge>,
    pub freshness_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub assigned_partitions: Gauge,
    pub open_batch_records: Gauge,
    pub table_files: Family<Labels, Gauge>,
    pub maintenance_runs: Family<Labels, Counter>,
    pub maintenance_files_compacted: Family<Labels, Counter>,
    pub maintenance_files_vacuumed: Family<Labels, Counter>,
    pub maintenance_failures: Family<Labels, Counter>,
    pub columns_ignored: Family<Labels, Counter>,
    pub schema_changes: Family<Labels, Counter>,
    /// The standard process metrics (no `lakestream_` prefix), read from /proc at each scrape.
    pub process_resident_memory_bytes: Gauge,
    pub process_cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Kafka timestamp (ms) of the newest record committed to every table.
    pub last_committed_ts_ms: AtomicI64,
    pub lake_ok: AtomicBool,
    default_topic: std::sync::OnceLock<String>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("lakestream");
        let m = Metrics {
            records_consumed: Counter::default(),
            rows_written: Family::default(),
            quarantined: Family::default(),
            batch_records: Histogram::new(exponential_buckets(10.0, 4.0, 9)),
            commit_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 14))),
            commit_conflicts: Family::default(),
            batch_retries: Counter::default(),
            table_version: Family::default(),
            consumer_lag: Family::default(),
            committed_offset: Family::default(),
            freshness_seconds: Gauge::default(),
            assigned_partitions: Gauge::default(),
            open_batch_records: Gauge::default(),
            table_files: Family::default(),
            maintenance_runs: Family::default(),
            maintenance_files_compacted: Family::default(),
            maintenance_files_vacuumed: Family::default(),
            maintenance_failures: Family::default(),
            columns_ignored: Family::default(),
            schema_changes: Family::default(),
            process_resident_memory_bytes: Gauge::default(),
            process_cpu_seconds: Counter::default(),
            last_committed_ts_ms: AtomicI64::new(0),
            lake_ok: AtomicBool::new(true),
            default_topic: std::sync::OnceLock::new(),
            registry: Registry::default(),
        };
        registry.register("records_consumed", "Kafka records written to all tables", m.records_consumed.clone());
        registry.register("rows_written", "Rows committed, per table", m.rows_written.clone());
        registry.register("quarantined", "Records quarantined, per error kind", m.quarantined.clone());
        registry.register("batch_records", "Records per batch", m.batch_records.clone());
        registry.register("commit_duration_seconds", "Duration of a table commit (files and log)", m.commit_seconds.clone());
        registry.register("commit_conflicts", "Commits that lost a race and were retried, per table", m.commit_conflicts.clone());
        registry.register("batch_retries", "Batch cycles retried after an error", m.batch_retries.clone());
        registry.register("table_version", "Delta version of each table after our last commit", m.table_version.clone());
        registry.register(
            "consumer_lag",
            "Records in Kafka not yet in every table, per partition (high watermark - committed - 1)",
            m.consumer_lag.clone(),
        );
        registry.register("committed_offset", "Last offset held by every table, per partition", m.committed_offset.clone());
        registry.register(
            "freshness_seconds",
            "Now minus the Kafka timestamp of the newest record committed to every table",
            m.freshness_seconds.clone(),
        );
        registry.register("assigned_partitions", "Partitions this writer owns", m.assigned_partitions.clone());
        registry.register("open_batch_records", "Records in the batch being filled", m.open_batch_records.clone());
        registry.register("table_files", "Data files in each table, as seen by the last maintenance round", m.table_files.clone());
        registry.register("maintenance_runs", "Maintenance operations done, per table and operation", m.maintenance_runs.clone());
        registry.register("maintenance_files_compacted", "Small files replaced by compaction, per table", m.maintenance_files_compacted.clone());
        registry.register("maintenance_files_vacuumed", "Unreferenced files deleted by VACUUM, per table", m.maintenance_files_vacuumed.clone());
        registry.register("maintenance_failures", "Maintenance rounds that failed (retried next round), per table", m.maintenance_failures.clone());
        registry.register(
            "columns_ignored",
            "Values of fields a change table has no column for, dropped (on_new_column = ignore), per table and field",
            m.columns_ignored.clone(),
        );
        registry.register(
            "schema_changes",
            "Batches that grew a change table by new columns (on_new_column = evolve), per table",
            m.schema_changes.clone(),
        );
        root.register("process_resident_memory_bytes", "Resident memory size in bytes", m.process_resident_memory_bytes.clone());
        root.register("process_cpu_seconds", "Total user and system CPU time spent in seconds", m.process_cpu_seconds.clone());
        Arc::new(Metrics { registry: root, ..m })
    }

    pub fn table(&self, table: &str) -> Labels {
        labels(&[("table", table)])
    }

    /// The labels of a partition: `partition` for `kafka.topic` (as before a
    /// run read several topics), `topic` and `partition` for another topic.
    pub fn partition(&self, p: &crate::offsets::TopicPartition) -> Labels {
        if self.default_topic.get().is_some_and(|t| *t == p.topic) {
            return vec![("partition", p.partition.to_string())];
        }
        vec![("topic", p.topic.clone()), ("partition", p.partition.to_string())]
    }

    /// Sets `kafka.topic`, whose partitions are labelled by number alone.
    pub fn set_default_topic(&self, topic: &str) {
        let _ = self.default_topic.set(topic.to_string());
    }

    pub fn kind(&self, kind: &str) -> Labels {
        labels(&[("kind", kind)])
    }

    pub fn record_maintenance(&self, r: &crate::maintenance::TableReport) {
        let t = self.table(r.table);
        self.table_files.get_or_create(&t).set(r.files as i64);
        let op = |name: &str| labels(&[("table", r.table), ("operation", name)]);
        if let Some(c) = r.compacted {
            self.maintenance_runs.get_or_create(&op("optimize")).inc();
            self.maintenance_files_compacted.get_or_create(&t).inc_by(c.removed);
        }
        if let Some(n) = r.vacuumed {
            self.maintenance_runs.get_or_create(&op("vacuum")).inc();
            self.maintenance_files_vacuumed.get_or_create(&t).inc_by(n as u64);
        }
        if r.tombstones_expired.is_some() {
            self.maintenance_runs.get_or_create(&op("expire_tombstones")).inc();
        }
    }

    /// Updates the freshness gauge from the last committed Kafka timestamp.
    pub fn refresh_freshness(&self) {
        let ts = self.last_committed_ts_ms.load(Ordering::Relaxed);
        if ts > 0 {
            let now = chrono::Utc::now().timestamp_millis();
            self.freshness_seconds.set((now - ts).max(0) as f64 / 1000.0);
        }
    }

    /// Reads RSS (`/proc/self/status`, VmRSS) and CPU time (`/proc/self/stat`,
    /// utime + stime at 100 ticks a second) into the process metrics.
    fn refresh_process(&self) {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok());
            if let Some(kb) = kb {
                self.process_resident_memory_bytes.set(kb * 1024);
            }
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces), 1-based from field 3.
            let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let seconds = (ticks(11) + ticks(12)) as f64 / 100.0; // utime, stime
            let seen = self.process_cpu_seconds.get();
            if seconds > seen {
                self.process_cpu_seconds.inc_by(seconds - seen);
            }
        }
    }

    pub fn render(&self) -> String {
        self.refresh_freshness();
        self.refresh_process();
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("encoding metrics to a string");
        out
    }

    pub fn ready(&self) -> bool {
        self.assigned_partitions.get() > 0 && self.lake_ok.load(Ordering::Relaxed)
    }
}

/// Serves /metrics, /healthz and /readyz on `listen` until the process ends.
pub async fn serve(listen: &str, metrics: Arc<Metrics>) -> anyhow::Result<std::net::SocketAddr> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("setting `metrics.listen`: cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let m1 = metrics.clone();
    let m2 = metrics;
    let app = axum::Router::new()
        .route("/metrics", get(move || async move { m1.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                if m2.ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready: no partitions assigned or the lake is unreachable\n")
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    tracing::info!(%addr, "metrics and health endpoints listening");
    Ok(addr)
}
