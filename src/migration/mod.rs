//! Versioned schema changes: `migrations/NNNN_name.sql`, applied in order by
//! `lakestream migrate`, recorded in each table's properties.
//!
//! Each table records the last migration applied to it
//! (`lakestream.migration.version`) and the checksum of every applied file
//! (`lakestream.migration.NNNN.checksum`). So `migrate`:
//! - applies only what a table lacks, and is idempotent (a second run does nothing);
//! - refuses a file that changed after it was applied (a schema change is a new
//!   migration, never an edit);
//! - refuses a table at a version this lakestream does not know (a newer release migrated it);
//! - checks at the end that the tables are exactly what `tables/*.toml` define,
//!   so definitions and migrations cannot disagree.
//!
//! `run` refuses to start unless every table is at the latest migration it was
//! built with ([`ensure_current`]); a lake with no table yet is migrated first.

pub mod sql;

use crate::tables::definition::{self, parse_type, TableDefinition};
use crate::tables::location::LakeLocation;
use anyhow::{anyhow, bail, Context};
use deltalake::arrow::datatypes::{Field, Schema};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::StructType;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use sql::{Column, Statement};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const VERSION_PROPERTY: &str = "lakestream.migration.version";

fn checksum_property(version: u32) -> String {
    format!("lakestream.migration.{version:04}.checksum")
}

/// The migrations this lakestream was built with.
const EMBEDDED: [(&str, &str); 2] = [
    ("migrations/0001_create_tables.sql", include_str!("../../migrations/0001_create_tables.sql")),
    ("migrations/0002_silver_kafka_timestamp.sql", include_str!("../../migrations/0002_silver_kafka_timestamp.sql")),
];

#[derive(Clone, Debug)]
pub struct Migration {
    pub version: u32,
    pub file: String,
    pub checksum: String,
    pub statements: Vec<sql::Located>,
}

/// FNV-1a (64 bit) of the file with line endings normalised: detects an edited
/// file (not a defence against tampering with intent, which the log's
/// history shows anyway).
pub fn checksum(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.replace("\r\n", "\n").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}")
}

/// Parses and checks a set of migration files: numbered 0001, 0002… without
/// gaps, every statement valid and about a table of `tables/`.
pub fn parse_all(files: Vec<(String, String)>) -> anyhow::Result<Vec<Migration>> {
    let tables = definition::all()?;
    let mut out: Vec<Migration> = Vec::new();
    for (file, text) in files {
        let base = Path::new(&file).file_name().and_then(|n| n.to_str()).unwrap_or(&file).to_string();
        let version: u32 = base
            .split('_')
            .next()
            .filter(|d| d.len() == 4)
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| anyhow!("{file}: a migration file is named NNNN_what_it_does.sql"))?;
        let statements = sql::parse(&text).map_err(|(line, reason)| anyhow!("{file}:{line}: {reason}"))?;
        for s in &statements {
            if !tables.iter().any(|d| d.sql_name == s.statement.table()) {
                bail!("{file}:{}: table `{}` is not defined in tables/", s.line, s.statement.table());
            }
            let columns = match &s.statement {
                Statement::CreateTable { columns, .. } | Statement::AddColumns { columns, .. } => columns.as_slice(),
                _ => &[],
            };
            for c in columns {
                parse_type(&c.type_text).map_err(|r| anyhow!("{file}:{}: column `{}`: {r}", c.line, c.name))?;
            }
        }
        out.push(Migration { version, file, checksum: checksum(&text), statements });
    }
    out.sort_by_key(|m| m.version);
    for (i, m) in out.iter().enumerate() {
        if m.version != i as u32 + 1 {
            bail!("{}: migrations are numbered 0001, 0002, … without gaps or duplicates; expected {:04}", m.file, i + 1);
        }
    }
    Ok(out)
}

/// The migration files to use instead of the compiled ones (`--migrations
/// DIR` or `LAKESTREAM_MIGRATIONS`), set once at start.
static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Reads the migrations from `dir` instead of those built in, for every
/// command: a new table is a definition and a migration, not a build.
pub fn use_dir(dir: &Path) {
    let _ = DIR.set(dir.to_path_buf());
}

/// The migrations in force: those of [`use_dir`]'s directory, else those built in.
pub fn embedded() -> anyhow::Result<Vec<Migration>> {
    if let Some(dir) = DIR.get() {
        return from_dir(dir);
    }
    parse_all(EMBEDDED.iter().map(|(f, t)| (f.to_string(), t.to_string())).collect())
}

/// The `*.sql` files of a directory (`migrate --migrations DIR`).
pub fn from_dir(dir: &Path) -> anyhow::Result<Vec<Migration>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read the migrations directory {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sql") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            files.push((path.display().to_string(), text));
        }
    }
    parse_all(files)
}

/// The latest migration in force (see [`embedded`]).
pub fn latest() -> u32 {
    match DIR.get() {
        Some(dir) => from_dir(dir).map(|m| m.len() as u32).unwrap_or(0),
        None => EMBEDDED.len() as u32,
    }
}

/// One table of the lake as migrations see it.
struct TableState {
    definition: &'static TableDefinition,
    table: DeltaTable,
    exists: bool,
    version: u32,
    checksums: BTreeMap<u32, String>,
}

impl TableState {
    async fn open(location: &LakeLocation, storage: &HashMap<String, String>, definition: &'static TableDefinition) -> anyhow::Result<TableState> {
        let url = location.table_url(&definition.path);
        let context = || format!("table {} at {url}", definition.name);
        let table = DeltaTableBuilder::from_url(url.clone())
            .with_context(context)?
            .with_storage_options(storage.clone())
            .build()
            .with_context(context)?;
        let exists = table.verify_deltatable_existence().await.with_context(context)?;
        let mut state = TableState { definition, table, exists, version: 0, checksums: BTreeMap::new() };
        if exists {
            state.table.load().await.with_context(context)?;
            state.read_properties()?;
        }
        Ok(state)
    }

    fn read_properties(&mut self) -> anyhow::Result<()> {
        let snapshot = self.table.snapshot()?;
        let config = snapshot.metadata().configuration();
        self.version = match config.get(VERSION_PROPERTY) {
            None => 0,
            Some(v) => v.parse().map_err(|_| anyhow!("table {}: {VERSION_PROPERTY} = `{v}` is not a number", self.definition.name))?,
        };
        self.checksums = config
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix("lakestream.migration.")?.strip_suffix(".checksum")?;
                Some((n.parse().ok()?, v.clone()))
            })
            .collect();
        Ok(())
    }
}

/// What `migrate` did.
#[derive(Debug, Default)]
pub struct Report {
    /// (table, from version, to version) for every table.
    pub tables: Vec<(String, u32, u32)>,
}

/// Applies the migrations a table lacks, up to `target` (default: the last),
/// then checks the tables against their definitions (when at the last).
pub async fn migrate(
    location: &LakeLocation,
    storage: &HashMap<String, String>,
    migrations: &[Migration],
    target: Option<u32>,
) -> anyhow::Result<Report> {
    let last = migrations.last().map_or(0, |m| m.version);
    let target = target.unwrap_or(last);
    if target > last {
        bail!("--to {target}: the last migration is {last:04}");
    }
    let mut states = Vec::new();
    for d in definition::all()? {
        states.push(TableState::open(location, storage, d).await?);
    }
    let before: Vec<u32> = states.iter().map(|s| s.version).collect();
    for s in &states {
        if s.version > last {
            bail!(
                "table {} is at migration {:04}, but this lakestream knows migrations up to {last:04}: a newer release migrated it; use that release",
                s.definition.name,
                s.version
            );
        }
        for m in migrations.iter().filter(|m| m.version <= s.version) {
            match s.checksums.get(&m.version) {
                Some(recorded) if *recorded != m.checksum => bail!(
                    "{} changed after it was applied to table {} (recorded {recorded}, file {}): restore the file as it was; \
                     a schema change is a new migration",
                    m.file,
                    s.definition.name,
                    m.checksum
                ),
                _ => {}
            }
        }
    }
    for m in migrations.iter().filter(|m| m.version <= target) {
        if states.iter().all(|s| s.version >= m.version) {
            continue;
        }
        for located in &m.statements {
            let state = states
                .iter_mut()
                .find(|s| s.definition.sql_name == located.statement.table())
                .expect("tables checked when parsing");
            if state.version >= m.version {
                continue;
            }
            apply(state, location, &located.statement)
                .await
                .with_context(|| format!("{}:{}: applying to table {}", m.file, located.line, state.definition.name))?;
        }
        for state in states.iter_mut().filter(|s| s.exists && s.version < m.version) {
            let mut properties = HashMap::from([(VERSION_PROPERTY.to_string(), m.version.to_string())]);
            properties.insert(checksum_property(m.version), m.checksum.clone());
            let table = state.table.clone().set_tbl_properties().with_properties(properties).with_raise_if_not_exists(false).await?;
            state.table = table;
            state.read_properties()?;
        }
        tracing::info!(migration = %m.file, "migration applied");
    }
    if target == last {
        for s in &states {
            check_matches_definition(s)?;
        }
    }
    Ok(Report {
        tables: states.iter().zip(before).map(|(s, b)| (s.definition.name.clone(), b, s.version)).collect(),
    })
}

fn arrow_field(c: &Column) -> anyhow::Result<Field> {
    Ok(Field::new(&c.name, parse_type(&c.type_text).map_err(anyhow::Error::msg)?, c.nullable))
}

fn kernel_fields(columns: &[Column]) -> anyhow::Result<Vec<deltalake::kernel::StructField>> {
    let schema = Schema::new(columns.iter().map(arrow_field).collect::<anyhow::Result<Vec<_>>>()?);
    let kernel: StructType = (&schema).try_into_kernel().map_err(|e| anyhow!("schema does not convert to Delta: {e}"))?;
    Ok(kernel
        .fields()
        .zip(columns)
        .map(|(f, c)| match &c.comment {
            Some(text) => f.clone().with_metadata([("comment".to_string(), text.clone())]),
            None => f.clone(),
        })
        .collect())
}

async fn apply(state: &mut TableState, location: &LakeLocation, statement: &Statement) -> anyhow::Result<()> {
    match statement {
        Statement::CreateTable { if_not_exists, columns, partitioned_by, comment, properties, .. } => {
            if state.exists {
                if !if_not_exists {
                    bail!("the table exists already (CREATE TABLE without IF NOT EXISTS)");
                }
                // A table lakestream created before it had migrations (no version
                // recorded) is adopted: it gets the properties the CREATE declares.
                // Its columns are checked against the definition at the end.
                if state.version == 0 {
                    let config = state.table.snapshot()?.metadata().configuration().clone();
                    let missing: HashMap<String, String> =
                        properties.iter().filter(|(k, v)| config.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
                    if !missing.is_empty() {
                        state.table = state.table.clone().set_tbl_properties().with_properties(missing).with_raise_if_not_exists(false).await?;
                    }
                }
                return Ok(());
            }
            let url = location.table_url(&state.definition.path);
            if url.scheme() == "file" {
                if let Ok(path) = url.to_file_path() {
                    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
                }
            }
            let mut create = state
                .table
                .clone()
                .create()
                .with_table_name(&state.definition.name)
                .with_columns(kernel_fields(columns)?)
                .with_partition_columns(partitioned_by.clone())
                .with_configuration(properties.iter().map(|(k, v)| (k.clone(), Some(v.clone()))))
                .with_save_mode(SaveMode::ErrorIfExists);
            if let Some(c) = comment {
                create = create.with_comment(c);
            }
            match create.await {
                Ok(t) => state.table = t,
                // Another lakestream created it at the same moment: use theirs.
                Err(e) => {
                    state.table.load().await.map_err(|_| e)?;
                }
            }
            state.exists = true;
            state.read_properties()?;
        }
        Statement::AddColumns { columns, .. } => {
            let snapshot = state.table.snapshot()?;
            let schema = snapshot.schema();
            let mut missing = Vec::new();
            for c in columns {
                let wanted = kernel_fields(std::slice::from_ref(c))?.remove(0);
                match schema.field(&c.name) {
                    Some(have) if have.data_type() == wanted.data_type() => {}
                    Some(have) => bail!("column `{}` exists as {:?}, the migration adds it as {}", c.name, have.data_type(), c.type_text),
                    None if !c.nullable => bail!("column `{}`: an added column must be nullable (old files have no value for it)", c.name),
                    None => missing.push(wanted),
                }
            }
            if !missing.is_empty() {
                state.table = state.table.clone().add_columns().with_fields(missing).await?;
            }
        }
        Statement::SetProperties { properties, .. } => {
            let snapshot = state.table.snapshot()?;
            let config = snapshot.metadata().configuration();
            if properties.iter().any(|(k, v)| config.get(k) != Some(v)) {
                let map: HashMap<String, String> = properties.clone().into_iter().collect();
                state.table = state.table.clone().set_tbl_properties().with_properties(map).with_raise_if_not_exists(false).await?;
            }
        }
        Statement::AddConstraint { name, expression, .. } => {
            let key = format!("delta.constraints.{}", name.to_ascii_lowercase());
            let snapshot = state.table.snapshot()?;
            match snapshot.metadata().configuration().get(&key) {
                Some(existing) if existing == expression => {}
                Some(existing) => bail!("constraint `{name}` exists with another expression: {existing}"),
                None => state.table = state.table.clone().add_constraint().with_constraint(name.clone(), expression.clone()).await?,
            }
        }
    }
    Ok(())
}

/// The table (after every migration) is exactly what its definition says.
fn check_matches_definition(state: &TableState) -> anyhow::Result<()> {
    let d = state.definition;
    if !state.exists {
        bail!("migrations and {} disagree: no migration creates table `{}`", d.file, d.sql_name);
    }
    let snapshot = state.table.snapshot()?;
    let actual = snapshot.schema();
    let expected: StructType = d.schema.as_ref().try_into_kernel().map_err(|e| anyhow!("{}: {e}", d.file))?;
    let mut problems = Vec::new();
    let want: Vec<String> = expected.fields().map(|f| f.name().clone()).collect();
    // Columns a change table grew by itself (on_new_column = "evolve") are recorded as such.
    let config = snapshot.metadata().configuration();
    let have: Vec<String> = actual
        .fields()
        .map(|f| f.name().clone())
        .filter(|n| want.contains(n) || !config.contains_key(&crate::tables::evolution::property(n)))
        .collect();
    if have != want {
        problems.push(format!("columns are {have:?} after the migrations, {want:?} in the definition"));
    }
    for f in expected.fields() {
        if let Some(a) = actual.field(f.name()) {
            if a.data_type() != f.data_type() {
                problems.push(format!("column `{}` is {:?} after the migrations, {:?} in the definition", f.name(), a.data_type(), f.data_type()));
            }
            if a.is_nullable() != f.is_nullable() {
                problems.push(format!("column `{}` nullable = {} after the migrations, {} in the definition", f.name(), a.is_nullable(), f.is_nullable()));
            }
        }
    }
    let partitions = snapshot.metadata().partition_columns();
    if partitions != &d.partition_by {
        problems.push(format!("partitioned by {partitions:?} after the migrations, {:?} in the definition", d.partition_by));
    }
    for (k, v) in &d.properties {
        if config.get(k) != Some(v) {
            problems.push(format!("property {k} = {:?} after the migrations, {v:?} in the definition", config.get(k)));
        }
    }
    if !problems.is_empty() {
        bail!("migrations and {} disagree on table {}:\n  {}", d.file, d.name, problems.join("\n  "));
    }
    Ok(())
}

async fn read_states(location: &LakeLocation, storage: &HashMap<String, String>) -> anyhow::Result<Vec<TableState>> {
    let mut states = Vec::new();
    for d in definition::all()? {
        states.push(TableState::open(location, storage, d).await?);
    }
    Ok(states)
}

/// `run`'s check: every table at the latest migration. A lake without any
/// table is new: it is migrated now. Returns the tables it loaded for the
/// check, by name, so that the writer does not load them again (empty when
/// it migrated: they changed since).
pub async fn ensure_current(location: &LakeLocation, storage: &HashMap<String, String>) -> anyhow::Result<HashMap<String, DeltaTable>> {
    let migrations = embedded()?;
    let latest = latest();
    let mut states = read_states(location, storage).await?;
    if states.iter().all(|s| !s.exists) {
        tracing::info!(lake = %location.root, "new lake: creating the tables by applying migrations/");
        // Several writers may start on a new lake at once: the one that loses a
        // race (a creation, a properties commit) reads the lake again and is
        // done when another has finished the job.
        let mut attempt = 1;
        loop {
            match migrate(location, storage, &migrations, None).await {
                Ok(_) => return Ok(HashMap::new()),
                Err(e) if attempt < 5 => {
                    tracing::info!(error = %format!("{e:#}"), attempt, "migrating the new lake raced another writer; looking again");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                    attempt += 1;
                    states = read_states(location, storage).await?;
                    if states.iter().all(|s| s.exists && s.version == latest) {
                        return Ok(HashMap::new());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    // Another lakestream may be creating or migrating the lake right now: while
    // the tables keep changing, look again (for up to a minute); a lake that
    // stays behind is refused.
    let started = std::time::Instant::now();
    loop {
        if states.iter().all(|s| s.exists && s.version == latest) {
            return Ok(states.into_iter().map(|s| (s.definition.name.clone(), s.table)).collect());
        }
        let seen: Vec<Option<i64>> = states.iter().map(|s| s.exists.then(|| s.table.version().map(|v| v as i64)).flatten()).collect();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        states = read_states(location, storage).await?;
        let now: Vec<Option<i64>> = states.iter().map(|s| s.exists.then(|| s.table.version().map(|v| v as i64)).flatten()).collect();
        if now == seen || started.elapsed() > std::time::Duration::from_secs(60) {
            break;
        }
    }
    for s in &states {
        if !s.exists || s.version != latest {
            let state = match (s.exists, s.version) {
                (false, _) => "does not exist".to_string(),
                (true, 0) => "has no migration version (created before lakestream recorded migrations)".to_string(),
                (true, v) => format!("is at migration {v:04}"),
            };
            bail!(
                "table {} {state}, this lakestream needs migration {latest:04}: run `lakestream migrate --lake {}` \
                 (safe while other writers run: they pick the change up on restart)",
                s.definition.name,
                location.root
            );
        }
    }
    Ok(states.into_iter().map(|s| (s.definition.name.clone(), s.table)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_migrations_parse() {
        let m = embedded().unwrap();
        assert_eq!(m.len() as u32, latest());
        assert_eq!(m[0].statements.len(), 4, "0001 creates the four tables");
    }

    #[test]
    fn numbering_must_be_contiguous() {
        let files = vec![("migrations/0002_x.sql".to_string(), "ALTER TABLE silver_order_lines SET TBLPROPERTIES ('a' = 'b');".to_string())];
        assert!(parse_all(files).unwrap_err().to_string().contains("expected 0001"));
        let unknown = vec![("0001_x.sql".to_string(), "\nALTER TABLE gold SET TBLPROPERTIES ('a' = 'b');".to_string())];
        assert_eq!(parse_all(unknown).unwrap_err().to_string(), "0001_x.sql:2: table `gold` is not defined in tables/");
    }

    #[test]
    fn checksums_ignore_line_endings_only() {
        assert_eq!(checksum("a\r\nb"), checksum("a\nb"));
        assert_ne!(checksum("a b"), checksum("a  b"));
    }
}
