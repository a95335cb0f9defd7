//! The `lakestream` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use lakestream::config::Config;
use lakestream::pipeline::{self, RunOptions};
use lakestream::produce::{self, ProduceOptions};
use lakestream::tables::lake::Lake;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "lakestream", version, about = "Exactly-once Kafka order stream to Delta Lake (bronze, silver, quarantine)")]
struct Cli {
    /// Read the table definitions from this directory (its *.toml) instead of
    /// those built in: a new table is a file here and a migration.
    #[arg(long, global = true, env = "LAKESTREAM_TABLES")]
    tables: Option<PathBuf>,
    /// Read the migrations from this directory (its NNNN_*.sql) instead of those built in.
    #[arg(long, global = true, env = "LAKESTREAM_MIGRATIONS")]
    migrations: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by the commands that talk to Kafka. Secrets are not flags:
/// they come from the config file, LAKESTREAM_* variables or mounted files.
#[derive(clap::Args)]
struct Common {
    /// TOML configuration file (every key can also be set as LAKESTREAM_SECTION__KEY).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers, host:port[,host:port…] (kafka.brokers).
    #[arg(long)]
    brokers: Option<String>,
    /// The order topic (kafka.topic).
    #[arg(long)]
    topic: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Replay the order dataset into the topic as change events.
    Produce {
        #[command(flatten)]
        common: Common,
        /// The dataset: `Sales Transaction v.4a.csv`, plain or .gz.
        #[arg(long)]
        input: PathBuf,
        /// Only the first N rows of the file.
        #[arg(long)]
        limit: Option<usize>,
        /// Events per second (default: as fast as the broker takes them).
        #[arg(long)]
        rate: Option<f64>,
        /// Partitions of the topic when it is created.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Replication factor of the topic when it is created (3 on Confluent Cloud).
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
        /// Share of order lines that also get an update, delete, re-delivery or out-of-order pair.
        #[arg(long, default_value_t = 0.0)]
        mutations: f64,
        /// Seed for the mutations: the same seed gives the same events.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Count and report rows that do not parse instead of stopping at the first.
        #[arg(long)]
        skip_bad_rows: bool,
        /// Replay the file N times, each with new transaction numbers and later order dates (to grow the tables for benchmarks).
        #[arg(long, default_value_t = 1)]
        replays: u32,
        /// Number the replays from K (with --replays N: replays K..K+N-1), to add later
        /// business to a topic or lake grown before (tests/bench/flat.sh).
        #[arg(long, default_value_t = 0)]
        first_replay: u32,
    },
    /// Run the streaming writer: Kafka to the bronze, silver and quarantine tables.
    Run {
        #[command(flatten)]
        common: Common,
        /// Consumer group shared by all writers (kafka.group_id).
        #[arg(long)]
        group: Option<String>,
        /// Lake root: a path, file://, abfss://, az:// or s3:// (lake.uri).
        #[arg(long)]
        lake: Option<String>,
        /// Exit 0 once every assigned partition is committed up to its end offset at start.
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Validate the configuration, reach the broker and the lake, and report what is there.
    Check {
        #[command(flatten)]
        common: Common,
        /// Lake root (lake.uri).
        #[arg(long)]
        lake: Option<String>,
    },
    /// Apply the pending migrations (migrations/*.sql) to every table of the lake.
    Migrate {
        /// TOML configuration file (lake.storage.* credentials).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Lake root (lake.uri).
        #[arg(long)]
        lake: Option<String>,
        /// Stop after this migration (default: the last).
        #[arg(long)]
        to: Option<u32>,
    },
    /// One maintenance round on every table now: compact small files, vacuum,
    /// expire silver tombstones and checkpoint (safe while `run` is writing).
    Maintain {
        /// TOML configuration file (lake.storage.* credentials, maintenance.*).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Lake root (lake.uri).
        #[arg(long)]
        lake: Option<String>,
        /// Skip VACUUM (compaction, tombstones and the checkpoint still run).
        #[arg(long)]
        no_vacuum: bool,
    },
    /// List the tables (tables/*.toml, or --tables DIR) in commit order, as JSON lines:
    /// name, path, role, topic and crash points (the chaos harness reads it).
    Tables,
    /// Print a table's change data feed (e.g. silver/order_lines) as JSON lines.
    Changes {
        /// TOML configuration file (for lake.storage.* credentials).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The table's full URI, e.g. ./lake/silver/order_lines or abfss://…/silver/order_lines.
        #[arg(long)]
        table: String,
        /// First table version to read changes from.
        #[arg(long, default_value_t = 0)]
        starting_version: i64,
    },
}

fn load_config(common: &Common) -> anyhow::Result<Config> {
    let mut config = Config::load(common.config.as_deref(), std::env::vars())?;
    if let Some(b) = &common.brokers {
        config.kafka.brokers = b.clone();
    }
    if let Some(t) = &common.topic {
        config.kafka.topic = t.clone();
    }
    Ok(config)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(
        "info,deltalake=warn,deltalake_core=warn,deltalake_core::writer::stats=error,datafusion=warn,buoyant_kernel=off,object_store=warn,aws_config=warn,rdkafka=warn",
    ));
    let json = match std::env::var("LAKESTREAM_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !produce::stderr_is_terminal(),
    };
    lakestream::logs::set_json_logs(json);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(lakestream::logs::StderrLogs);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    if let Some(dir) = &cli.tables {
        lakestream::tables::definition::use_dir(dir);
    }
    if let Some(dir) = &cli.migrations {
        lakestream::migration::use_dir(dir);
    }
    // The table definitions (tables/*.toml) must be consistent, their expressions valid.
    lakestream::tables::registry::check_all().map_err(anyhow::Error::msg)?;
    match cli.command {
        Command::Produce { common, input, limit, rate, partitions, replication_factor, mutations, seed, skip_bad_rows, replays, first_replay } => {
            let config = load_config(&common)?;
            config.validate()?;
            let options = ProduceOptions {
                topic: config.kafka.topic.clone(),
                input,
                limit,
                rate,
                partitions,
                replication: replication_factor,
                mutations,
                seed,
                skip_bad_rows,
                replays,
                first_replay,
                progress_bar: produce::stderr_is_terminal(),
            };
            let kafka = config.kafka.clone();
            let report = tokio::task::spawn_blocking(move || produce::produce(&kafka, &options))
                .await
                .context("the producer thread failed")??;
            let s = &report.summary;
            println!(
                "produced {} events to {} in {:.1} s: {:.0} events/s (inserts {}, updates {}, deletes {}, re-deliveries {}, out-of-order pairs {}{}{})",
                report.events,
                config.kafka.topic,
                report.elapsed.as_secs_f64(),
                report.events_per_second(),
                s.inserts,
                s.updates,
                s.deletes,
                s.redeliveries,
                s.out_of_order,
                if report.bad_rows.is_empty() { String::new() } else { format!(", bad rows skipped {}", report.bad_rows.len()) },
                if report.topic_created { ", topic created" } else { "" },
            );
            Ok(())
        }
        Command::Check { common, lake } => {
            let mut config = load_config(&common)?;
            if let Some(l) = lake {
                config.lake.uri = l;
            }
            print!("{}", lakestream::check::check(&config).await?);
            println!("check: ok");
            Ok(())
        }
        Command::Migrate { config, lake, to } => {
            let mut config = Config::load(config.as_deref(), std::env::vars())?;
            if let Some(l) = lake {
                config.lake.uri = l;
                config.validate()?;
            }
            let lake = Lake::of(&config)?;
            let migrations = lakestream::migration::embedded()?;
            let report = lakestream::migration::migrate(&lake.location, &lake.storage, &migrations, to).await?;
            for (table, from, to) in report.tables {
                if from == to {
                    println!("{table}: at migration {to:04}, nothing to do");
                } else {
                    println!("{table}: migration {from:04} -> {to:04}");
                }
            }
            Ok(())
        }
        Command::Maintain { config, lake, no_vacuum } => {
            let mut config = Config::load(config.as_deref(), std::env::vars())?;
            if let Some(l) = lake {
                config.lake.uri = l;
                config.validate()?;
            }
            let round = lakestream::maintenance::Round { vacuum: !no_vacuum, checkpoint: true, compact_any: true };
            for (_, mut table) in lakestream::tables::lake::open_tables(&config).await? {
                let r = lakestream::maintenance::maintain(&mut table, &config.maintenance, round).await?;
                let shown = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                println!(
                    "{}: {} files ({} small); compacted {}; vacuumed {}; tombstones expired {}; checkpoint at version {}",
                    r.table,
                    r.files,
                    r.small_files,
                    shown(r.compacted.map(|c| {
                        let skipped = if c.skipped_partitions > 0 { format!(" ({} partitions left for the next round)", c.skipped_partitions) } else { String::new() };
                        format!("{} files into {}{skipped}", c.removed, c.added)
                    })),
                    shown(r.vacuumed.map(|n| format!("{n} files"))),
                    shown(r.tombstones_expired.map(|n| n.to_string())),
                    shown(r.checkpoint.map(|v| v.to_string())),
                );
            }
            Ok(())
        }
        Command::Tables => {
            for line in lakestream::tables::registry::describe() {
                println!("{line}");
            }
            Ok(())
        }
        Command::Changes { config, table, starting_version } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            let lake = Lake::new(&table, &config.lake.storage, "--table")?;
            let batches = lakestream::tables::change_feed::read(lake.location.root, lake.storage, starting_version)
                .await
                .with_context(|| format!("cannot read the change data feed of {table}"))?;
            lakestream::tables::change_feed::to_json_lines(&batches, std::io::stdout().lock()).map_err(|e| anyhow::anyhow!(e))?;
            Ok(())
        }
        Command::Run { common, group, lake, until_caught_up } => {
            let mut config = load_config(&common)?;
            if let Some(g) = group {
                config.kafka.group_id = g;
            }
            if let Some(l) = lake {
                config.lake.uri = l;
            }
            config.validate()?;
            let summary = pipeline::run(config, RunOptions { until_caught_up }, shutdown_signal()).await?;
            println!(
                "wrote {} records in {} batches ({} quarantined, {} commits)",
                summary.records, summary.batches, summary.quarantined, summary.commits
            );
            Ok(())
        }
    }
}

/// The error and its causes, each once: many library errors repeat their
/// source in their own message, which `{:#}` would print again.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

// Rust's allocations go to jemalloc (see lakestream::memory for why and how
// it is set); librdkafka's C allocations stay with glibc's malloc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts (the environment's
/// `_RJEM_MALLOC_CONF` is applied over them): see [`lakestream::memory::JEMALLOC`].
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = lakestream::memory::JEMALLOC;

fn main() -> ExitCode {
    // Before any thread exists (the runtime's, librdkafka's): see lakestream::memory.
    let malloc = lakestream::memory::tune();
    let cli = Cli::parse();
    init_logging();
    tracing::debug!(?malloc, "malloc tuning");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_inner(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
