//! The operator's view against a real writer: `lakestream run` with `[metrics]
//! listen` on a small topic (with one record that goes to quarantine and
//! maintenance every second), scraped once it has written everything, and
//! every metric name and label name that the Grafana dashboard
//! (docker/grafana/lakestream.json) and the alert rules
//! (docker/k8s/alerts/lakestream.rules.yml) use must be in the scrape.
//! A panel or an alert over a metric the writer does not export (a typo, a
//! rename in src/metrics.rs) fails here instead of showing "No data" in AKS.
//!
//! tests/deploy_files.rs checks the same files statically (they parse, the
//! names are registered in src/metrics.rs, the runbook anchors exist).

mod common;

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Metrics the dashboard shows before the writer exports them: the issue that
/// adds them (unknown source columns dropped by a table with
/// on_new_column = "ignore", and schema evolutions applied) lands separately.
/// Remove each name from this list once src/metrics.rs registers it.
/// Metrics with no sample in a short run of the shipped tables: a table with
/// `on_new_column = "ignore"` must drop a field first (tests/change_tables.rs scrapes it then).
const PENDING_METRICS: &[&str] = &["lakestream_columns_ignored_total"];

/// Labels Prometheus attaches to every scraped series (the ServiceMonitor of
/// docker/k8s/alerts, or the pods' annotation-based scrape), not the writer.
const TARGET_LABELS: &[&str] = &["namespace", "pod", "job", "instance", "container", "service", "endpoint"];

/// Metrics that come from elsewhere: Prometheus itself (`up`), kube-state-metrics
/// (`kube_*`) and the kubelet's cAdvisor (`container_*`).
fn external(metric: &str) -> bool {
    metric == "up" || metric.starts_with("kube_") || metric.starts_with("container_")
}

fn docker_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker")
}

// ------------------------------------------------------------- PromQL names

/// The names an expression uses: metric names, and label names with the metric
/// whose selector they appear in (None for `by`, `without`, `on`, `ignoring`,
/// `group_left`/`group_right` lists, which may name a label of any operand).
#[derive(Debug, Default)]
struct Names {
    metrics: BTreeSet<String>,
    labels: Vec<(Option<String>, String)>,
}

/// Operators and aggregations (an aggregation may be followed by `by (…)` before its `(`).
const KEYWORDS: &[&str] = &[
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "atan2",
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "limitk", "limit_ratio",
];
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A small PromQL scanner (enough for names: strings, durations and Grafana's
/// `$variables` are skipped).
fn promql_names(expr: &str) -> Names {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Names::default();
    let mut i = 0;
    let mut last_metric: Option<String> = None; // an identifier right before `{`
    let mut last_keyword: Option<String> = None; // a grouping keyword right before `(`
    let skip_string = |i: &mut usize| {
        let quote = chars[*i];
        *i += 1;
        while *i < chars.len() && chars[*i] != quote {
            if chars[*i] == '\\' {
                *i += 1;
            }
            *i += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            skip_string(&mut i);
            last_metric = None;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let next = chars.get(j).copied();
            last_metric = None;
            last_keyword = None;
            if GROUPING.contains(&word.as_str()) {
                last_keyword = Some(word);
            } else if KEYWORDS.contains(&word.as_str()) || next == Some('(') {
                // an operator or a function call
            } else {
                names.metrics.insert(word.clone());
                last_metric = Some(word);
            }
        } else if c == '{' {
            // A selector: label matchers up to `}`.
            let metric = last_metric.take();
            i += 1;
            loop {
                while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                    i += 1;
                }
                if i >= chars.len() || chars[i] == '}' {
                    i += 1;
                    break;
                }
                let start = i;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                let label: String = chars[start..i].iter().collect();
                assert!(!label.is_empty(), "cannot read the selector of `{expr}` at {start}");
                names.labels.push((metric.clone(), label));
                while i < chars.len() && "=!~ ".contains(chars[i]) {
                    i += 1;
                }
                assert!(i < chars.len() && "\"'`".contains(chars[i]), "selector value not quoted in `{expr}`");
                skip_string(&mut i);
            }
        } else if c == '(' && last_keyword.is_some() {
            last_keyword = None;
            i += 1;
            let start = i;
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            let list: String = chars[start..i].iter().collect();
            for label in list.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                names.labels.push((None, label.to_string()));
            }
            i += 1;
        } else {
            if !c.is_whitespace() {
                last_metric = None;
                last_keyword = None;
            }
            i += 1;
        }
    }
    names
}

/// Grafana's `label_values(selector, label)`: the selector's names plus the label.
fn variable_query_names(query: &str) -> Names {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("dashboard variable query `{query}` is not label_values(selector, label)"));
    let (selector, label) = inner.rsplit_once(',').expect("label_values takes a selector and a label");
    let mut names = promql_names(selector);
    let metric = names.metrics.iter().next().cloned();
    names.labels.push((metric, label.trim().to_string()));
    names
}

/// Every expression of the dashboard and the alert rules, with where it is.
fn operator_expressions() -> Vec<(String, Names)> {
    let mut out = Vec::new();
    let path = docker_dir().join("grafana/lakestream.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("the dashboard is JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target has an expr");
            out.push((format!("dashboard panel `{}`: {expr}", panel["title"].as_str().unwrap_or("?")), promql_names(expr)));
        }
    }
    for var in dashboard["templating"]["list"].as_array().expect("templating") {
        if var["type"] == "query" {
            let query = var["query"]["query"].as_str().or(var["query"].as_str()).expect("variable query");
            out.push((format!("dashboard variable `{}`: {query}", var["name"]), variable_query_names(query)));
        }
    }
    let path = docker_dir().join("k8s/alerts/lakestream.rules.yml");
    let rules: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).expect("rules YAML");
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let expr = rule["expr"].as_str().expect("rule expr");
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap_or("?");
            out.push((format!("rule `{name}`: {expr}"), promql_names(expr)));
        }
    }
    assert!(out.len() > 20, "found only {} expressions", out.len());
    out
}

#[test]
fn promql_scanner_reads_names() {
    let n = promql_names(
        r#"histogram_quantile(0.99, sum by (le, table) (rate(lakestream_commit_duration_seconds_bucket{namespace=~"$namespace", table=~"a{b}"}[$__rate_interval]))) > 1e3 and on (pod) up{job="x"} == 0"#,
    );
    assert_eq!(
        n.metrics.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["lakestream_commit_duration_seconds_bucket", "up"]
    );
    let labels: Vec<(Option<&str>, &str)> = n.labels.iter().map(|(m, l)| (m.as_deref(), l.as_str())).collect();
    assert_eq!(
        labels,
        vec![
            (None, "le"),
            (None, "table"),
            (Some("lakestream_commit_duration_seconds_bucket"), "namespace"),
            (Some("lakestream_commit_duration_seconds_bucket"), "table"),
            (None, "pod"),
            (Some("up"), "job"),
        ]
    );
    let v = variable_query_names(r#"label_values(lakestream_assigned_partitions{namespace=~"$namespace"}, pod)"#);
    assert!(v.metrics.contains("lakestream_assigned_partitions"));
    assert_eq!(v.labels.last().unwrap(), &(Some("lakestream_assigned_partitions".to_string()), "pod".to_string()));
}

// ------------------------------------------------------------- the scrape

/// What /metrics exposes: sample names with their label names, and the
/// declared families (`# TYPE name type`), which are there before their first sample.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<String, BTreeSet<String>>,
    values: Vec<(String, BTreeMap<String, String>, f64)>,
    families: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                let (name, kind) = (words.next().unwrap(), words.next().unwrap_or("unknown"));
                s.families.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
            let name = &line[..name_end];
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if rest.starts_with('{') {
                let body_end = closing_brace(rest);
                let mut body = &rest[1..body_end];
                while !body.is_empty() {
                    let (key, after) = body.split_once("=\"").unwrap_or_else(|| panic!("bad labels in `{line}`"));
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let mut end = after.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => value.push(chars.next().map(|(_, c)| c).unwrap_or('\\')),
                            '"' => {
                                end = i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    labels.insert(key.trim_start_matches(',').trim().to_string(), value);
                    body = after[end..].trim_start_matches(',');
                }
                rest = &rest[body_end + 1..];
            }
            let value: f64 = rest.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            s.samples.entry(name.to_string()).or_default().extend(labels.keys().cloned());
            s.values.push((name.to_string(), labels, value));
        }
        s
    }

    /// Whether `name` is exposed: as a sample, or as a declared family that
    /// yields it (`_total` of a counter; `_bucket`, `_sum`, `_count` of a histogram).
    fn exposes(&self, name: &str) -> bool {
        self.samples.contains_key(name)
            || self.families.iter().any(|(family, kind)| match kind.as_str() {
                "counter" => name == format!("{family}_total"),
                "histogram" => ["_bucket", "_sum", "_count"].iter().any(|s| name == format!("{family}{s}")),
                _ => name == family,
            })
    }

    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .values
            .iter()
            .filter(|(n, labels, _)| n == name && filter.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| *v)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    fn series(&self, name: &str) -> usize {
        self.values.iter().filter(|(n, _, _)| n == name).count()
    }
}

fn closing_brace(s: &str) -> usize {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '}' if !in_string => return i,
            _ => {}
        }
    }
    panic!("unterminated labels in `{s}`")
}

/// GET `path` on 127.0.0.1:`port`: (status, body), or None if nothing answers yet.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            out.push_str(after.get(..size)?);
            rest = after.get(size + 2..)?;
        }
        out
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The writer's log, for failure messages.
fn log_tail(path: &std::path::Path) -> String {
    tail(&std::fs::read_to_string(path).unwrap_or_default(), 4000).to_string()
}

#[test]
fn dashboard_and_alerts_use_only_what_the_writer_exports() {
    let expressions = operator_expressions();

    // A small topic: valid change events, one record that is not JSON (quarantine)
    // and one change event with a field silver has no column for (counted in
    // lakestream_columns_ignored_total where the table ignores new columns).
    let topic = unique("operator");
    produce(&topic, &["--limit", "3000", "--partitions", "3"]);
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let extra_field = json!({
        "op": "c", "ts_ms": 1_700_000_000_000i64, "source": {"table": "order_lines", "seq": 1}, "before": null,
        "after": {"transaction_no": "900001", "line_no": 1, "order_date": "2019-12-09", "product_no": "22596",
                  "product_name": "Tin", "price": 10.65, "quantity": 1, "customer_no": "13069",
                  "country": "United Kingdom", "gift_wrap": true}
    })
    .to_string();
    for payload in [b"{not json".as_slice(), extra_field.as_bytes()] {
        producer.send(BaseRecord::<str, [u8]>::to(&topic).key("900001").payload(payload)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(20)).unwrap();
    let ends = end_offsets(&topic);
    let records: i64 = ends.iter().map(|(_, e)| e).sum();

    // The writer, serving /metrics, with small batches (many small files) and
    // maintenance every second, so that every family has samples.
    let lake = Lake::local();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("lakestream.log");
    let mut cmd = lakestream();
    cmd.args(["run", "--brokers", &brokers(), "--topic", &topic, "--group", &unique("g"), "--lake", &lake.uri]);
    cmd.env("LAKESTREAM_METRICS__LISTEN", format!("127.0.0.1:{port}"))
        .env("LAKESTREAM_BATCH__MAX_RECORDS", "500")
        .env("LAKESTREAM_BATCH__MAX_LATENCY_MS", "300")
        .env("LAKESTREAM_MAINTENANCE__INTERVAL_SECS", "1")
        .env("LAKESTREAM_MAINTENANCE__COMPACT_MIN_SMALL_FILES", "2")
        .env("LAKESTREAM_KAFKA__PROPERTIES__session.timeout.ms", "6000")
        .env("LAKESTREAM_KAFKA__PROPERTIES__heartbeat.interval.ms", "500");
    let out = std::fs::File::create(&log).unwrap();
    let mut writer = Writer(cmd.stdout(Stdio::from(out.try_clone().unwrap())).stderr(Stdio::from(out)).spawn().unwrap());

    // Poll /metrics until the writer has committed every record, quarantined the
    // bad one, reported the lag of every partition and run maintenance.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = String::new();
    let scrape = loop {
        if let Some(status) = writer.0.try_wait().unwrap() {
            panic!("lakestream run exited ({status}) before the scrape:\n{}", log_tail(&log));
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the metrics of {records} committed records; last scrape:\n{last}\nlog:\n{}",
            log_tail(&log)
        );
        if let Some((200, body)) = http_get(port, "/metrics") {
            let s = Scrape::parse(&body);
            let done = s.sum("lakestream_rows_written_total", &[("table", "bronze.orders")]) == Some(records as f64)
                && s.sum("lakestream_quarantined_total", &[("kind", "not_json")]) == Some(1.0)
                && s.series("lakestream_consumer_lag") == ends.len()
                && s.sum("lakestream_consumer_lag", &[]) == Some(0.0)
                && s.series("lakestream_maintenance_runs_total") > 0
                && s.series("lakestream_table_files") > 0;
            last = body;
            if done {
                break s;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(http_get(port, "/readyz").map(|(s, _)| s), Some(200), "/readyz while the writer owns partitions");
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200));
    drop(writer);

    // Every name the dashboard and the rules use is in the scrape.
    let checkable = |m: &str| !external(m) && !PENDING_METRICS.contains(&m);
    let any_lakestream_label: BTreeSet<&String> =
        scrape.samples.iter().filter(|(n, _)| n.starts_with("lakestream_")).flat_map(|(_, l)| l).collect();
    let mut missing = Vec::new();
    for (origin, names) in &expressions {
        for metric in names.metrics.iter().filter(|m| checkable(m)) {
            if !scrape.exposes(metric) {
                missing.push(format!("metric {metric} ({origin})"));
            }
        }
        for (metric, label) in &names.labels {
            // `topic` labels the lag of topics other than kafka.topic (change
            // tables on their own topics); this run reads kafka.topic only.
            if TARGET_LABELS.contains(&label.as_str()) || label == "topic" {
                continue;
            }
            // The metrics the label may belong to: its selector's, or any operand's.
            let owners: Vec<&String> = match metric {
                Some(m) if !checkable(m) => continue,
                Some(m) => vec![m],
                None => names.metrics.iter().filter(|m| checkable(m)).collect(),
            };
            if owners.is_empty() {
                continue; // only external or pending metrics
            }
            let with_samples: Vec<&&String> = owners.iter().filter(|m| scrape.samples.contains_key(m.as_str())).collect();
            let found = if with_samples.is_empty() {
                // A family declared but without samples in this run (e.g.
                // maintenance failures): the label must at least exist.
                any_lakestream_label.contains(label)
            } else {
                with_samples.iter().any(|m| scrape.samples[m.as_str()].contains(label))
            };
            if !found {
                missing.push(format!("label `{label}` of {owners:?} ({origin})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard or the alert rules use names that `lakestream run` does not export:\n  {}\n\nscrape:\n{}",
        missing.join("\n  "),
        scrape.samples.iter().map(|(n, l)| format!("{n} {l:?}")).collect::<Vec<_>>().join("\n")
    );
    // What the scrape did not exercise (declared family, no sample).
    let unexercised: Vec<&String> = expressions
        .iter()
        .flat_map(|(_, n)| n.metrics.iter())
        .filter(|m| checkable(m) && !scrape.samples.contains_key(m.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    eprintln!("metrics declared but without a sample in this run (labels checked loosely): {unexercised:?}");
}

/// Drops the terminal's control sequences (colours, cursor moves, line clears).
fn plain_text(raw: &str) -> String {
    let escapes = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
    escapes.replace_all(raw, "").replace('\r', "\n")
}

/// On a terminal, `run` shows a status line (records committed, rate, and
/// with --until-caught-up what is left) and logs one line per batch; each
/// table's commit is debug detail there. (JSON logs keep a `committed` event
/// per table: the chaos harness and the benchmarks count them.)
#[test]
fn a_terminal_run_shows_a_status_line_and_one_line_per_batch() {
    let topic = unique("watch");
    produce(&topic, &["--limit", "6000", "--partitions", "2"]);
    let lake = tempfile::tempdir().unwrap();
    let command = format!(
        "{} run --brokers {} --topic {topic} --group {topic} --lake {} --until-caught-up",
        env!("CARGO_BIN_EXE_lakestream"),
        brokers(),
        lake.path().join("lake").display()
    );
    // `script` runs the writer on a pseudo-terminal and copies what it draws.
    let mut terminal = std::process::Command::new("script");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LAKESTREAM_") && !k.starts_with("LAKESTREAM_TEST_")) {
        terminal.env_remove(k);
    }
    let out = terminal
        .args(["-qefc", &command, "/dev/null"])
        .env_remove("RUST_LOG")
        .env("LAKESTREAM_BATCH__MAX_RECORDS", "1000")
        .env("COLUMNS", "200")
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let text = plain_text(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "the run failed:\n{}", tail(&text, 4000));
    let batches: usize = regex::Regex::new(r"wrote 6000 records in (\d+) batches")
        .unwrap()
        .captures(&text)
        .unwrap_or_else(|| panic!("no summary line:\n{}", tail(&text, 4000)))[1]
        .parse()
        .unwrap();
    assert!(batches >= 6, "1000-record batches: {batches}");
    let batch_lines = text.lines().filter(|l| l.contains("batch committed")).count();
    assert_eq!(batch_lines, batches, "one log line per batch:\n{}", tail(&text, 4000));
    assert!(text.lines().any(|l| l.contains("batch committed") && l.contains("silver.order_lines v")), "the batch line names each table's version");
    assert!(!text.lines().any(|l| l.contains(" committed table=")), "per-table commit lines are debug on a terminal:\n{}", tail(&text, 4000));
    assert!(
        text.contains("records committed") && text.contains("records/s") && text.contains("to go"),
        "no status line (records committed, rate, what is left):\n{}",
        tail(&text, 4000)
    );
}
