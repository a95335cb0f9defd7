//! Opening the lake: the one place where `lake.uri` and `lake.storage.*`
//! become a location and the storage options every table is opened with.
//! `run`, `check`, `migrate`, `maintain` and `changes` all start here, so a
//! URI is parsed, the cloud handlers registered and the credentials passed
//! the same way whichever command opens the lake.

use crate::config::{Config, Secret};
use crate::tables::location::{register_object_stores, storage_options, LakeLocation};
use crate::tables::registry::{self, TableRole};
use crate::tables::LakeTable;
use anyhow::{anyhow, Context};
use std::collections::{BTreeMap, HashMap};
use url::Url;

pub struct Lake {
    pub location: LakeLocation,
    /// object_store options (secrets exposed: never log them).
    pub storage: HashMap<String, String>,
}

impl Lake {
    /// The lake at `uri`; `setting` names where the URI came from, for messages.
    pub fn new(uri: &str, storage: &BTreeMap<String, Secret>, setting: &str) -> anyhow::Result<Lake> {
        register_object_stores();
        let location = LakeLocation::parse(uri).map_err(|m| anyhow!("setting `{setting}`: {m}"))?;
        Ok(Lake { location, storage: storage_options(storage) })
    }

    /// The lake of the configuration (`lake.uri`, `lake.storage.*`).
    pub fn of(config: &Config) -> anyhow::Result<Lake> {
        Lake::new(&config.lake.uri, &config.lake.storage, "lake.uri")
    }

    /// The URL of the table at `path` (e.g. `silver/order_lines`).
    pub fn table_url(&self, path: &str) -> Url {
        self.location.table_url(path)
    }

    /// Migrates a new lake, checks that every table is at the current
    /// migration and readable with `max_reader_version`, and opens them in
    /// the registry's (commit) order. Errors name `lake.uri`.
    pub async fn open_tables(&self, max_reader_version: i32) -> anyhow::Result<Vec<(TableRole, LakeTable)>> {
        let root = &self.location.root;
        let mut loaded = crate::migration::ensure_current(&self.location, &self.storage)
            .await
            .with_context(|| format!("the lake at lake.uri = {root} is not ready"))?;
        let mut tables = Vec::new();
        for (role, spec) in registry::specs() {
            let table = match loaded.remove(spec.name) {
                Some(delta) => LakeTable::from_loaded(spec, delta).map_err(anyhow::Error::from),
                None => LakeTable::open(&self.location, &self.storage, spec).await.map_err(anyhow::Error::from),
            }
            .with_context(|| format!("cannot open the lake at lake.uri = {root} (check lake.uri and lake.storage.*)"))?;
            table.check_protocol(max_reader_version)?;
            tables.push((role, table));
        }
        Ok(tables)
    }
}

/// Opens every table of the configured lake (see [`Lake::open_tables`]).
pub async fn open_tables(config: &Config) -> anyhow::Result<Vec<(TableRole, LakeTable)>> {
    Lake::of(config)?.open_tables(config.lake.max_reader_version).await
}
