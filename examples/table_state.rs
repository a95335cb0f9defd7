//! For the soak benchmark (tests/bench/soak.sh): what a run left in each
//! table. Prints, per table directory given, one line: version, active files,
//! `_delta_log` entries and how long delta-rs takes to load the snapshot.
//!
//!   cargo run --release --example table_state -- LAKE/bronze/orders LAKE/silver/order_lines ...

use deltalake::DeltaTableBuilder;
use std::time::Instant;

#[tokio::main]
async fn main() {
    for dir in std::env::args().skip(1) {
        let path = std::path::absolute(&dir).expect("a path");
        let url = url::Url::from_directory_path(&path).expect("a directory");
        let started = Instant::now();
        let table = match DeltaTableBuilder::from_url(url).and_then(|b| Ok(b.build()?)) {
            Ok(mut t) => match t.load().await {
                Ok(()) => t,
                Err(e) => {
                    println!("{dir}: cannot load: {e}");
                    continue;
                }
            },
            Err(e) => {
                println!("{dir}: {e}");
                continue;
            }
        };
        let load_ms = started.elapsed().as_secs_f64() * 1000.0;
        let files = table.snapshot().map(|s| s.log_data().num_files()).unwrap_or(0);
        let log_entries = std::fs::read_dir(path.join("_delta_log")).map(|d| d.count()).unwrap_or(0);
        println!(
            "{dir}: version {}, {files} active files, {log_entries} _delta_log entries, snapshot load {load_ms:.0} ms",
            table.version().map_or("-".to_string(), |v| v.to_string())
        );
    }
}
