//! Checks the deployment files under `docker/` without Docker, a cluster, a
//! broker or a network: they parse, they agree with each other (ports, paths,
//! names, user id), the image's command exists in the CLI, and every
//! configuration they carry (the Kubernetes ConfigMap's TOML, the image's
//! default TOML, the `LAKESTREAM_*` variables of compose.yaml) loads as a
//! lakestream [`Config`].
//!
//! The metrics/health server (`[metrics] listen`, port 9898) is not started:
//! these tests check that every file configures and uses the same port, not
//! that it answers.
//!
//! The operator's files are checked here too: the Grafana dashboard and the
//! alert rules only name metrics that src/metrics.rs registers, the
//! PrometheusRule and the plain rules file hold the same groups, every alert
//! links to a section of docker/RUNBOOK.md, and the manifests pin the image
//! and lock the network down. tests/operator_view.rs checks the same names
//! against a real scrape.

use lakestream::config::{Config, SecurityProtocol};
use lakestream::tables::location::{LakeLocation, StoreKind};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

/// The metrics and health port (`[metrics] listen = "0.0.0.0:9898"`).
const METRICS_PORT: u64 = 9898;
/// `LAKESTREAM_*` variables the binary reads itself, outside the config.
const NON_CONFIG_VARS: &[&str] = &["LAKESTREAM_LOG_FORMAT", "LAKESTREAM_FAILPOINTS"];
/// Where the image installs the binary.
const BINARY_PATH: &str = "/usr/local/bin/lakestream";
/// The image's default config file (docker/lakestream.toml is copied there).
const IMAGE_CONFIG_PATH: &str = "/etc/lakestream/lakestream.toml";
/// Metrics the dashboard shows before the writer exports them: the issue that
/// adds them (unknown source columns dropped by a table with
/// on_new_column = "ignore", and schema evolutions applied) lands separately.
/// Remove each name from this list once src/metrics.rs registers it (the same
/// list is in tests/operator_view.rs).
/// Metrics with no sample in a short run of the shipped tables: a table with
/// `on_new_column = "ignore"` must drop a field first (tests/change_tables.rs scrapes it then).
const PENDING_METRICS: &[&str] = &["lakestream_columns_ignored_total"];
/// The plain Prometheus rules file beside the PrometheusRule (not a Kubernetes manifest).
const RULES_FILE: &str = "k8s/alerts/lakestream.rules.yml";

// ---------------------------------------------------------------- helpers

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docker_dir() -> PathBuf {
    repo_dir().join("docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
}

/// Every YAML document of a file (`---`-separated), empty documents skipped.
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    let mut docs = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{} (document {}) is not valid YAML: {e}", path.display(), i + 1));
        if !value.is_null() {
            docs.push(value);
        }
    }
    docs
}

fn string(value: &Value, what: &str) -> String {
    value.as_str().unwrap_or_else(|| panic!("{what}: expected a string, found {value:?}")).to_string()
}

fn number(value: &Value, what: &str) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("{what}: expected a whole number, found {value:?}"))
}

fn sequence<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value.as_sequence().unwrap_or_else(|| panic!("{what}: expected a list, found {value:?}"))
}

/// A scalar as compose passes it to the container (strings, numbers, booleans).
fn scalar(value: &Value, what: &str) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("{what}: expected a scalar, found {other:?}"),
    }
}

/// Every document under docker/k8s, with the file it came from.
fn k8s_documents() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&docker_dir().join("k8s"), &mut files);
    files
        .into_iter()
        .filter(|f| !is_rules_file(f))
        .flat_map(|f| documents(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

/// A Prometheus rules file (`*.rules.yml`): YAML, but not a Kubernetes manifest.
fn is_rules_file(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".rules.yml"))
}

fn find<'a>(docs: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} `{name}` under docker/k8s, found {}", found.len());
    found[0]
}

fn compose() -> Value {
    let docs = documents(&docker_dir().join("compose.yaml"));
    assert_eq!(docs.len(), 1, "compose.yaml: expected one YAML document");
    docs.into_iter().next().unwrap()
}

/// A service's `environment`, in either compose syntax (map or `KEY=value` list).
fn compose_env(service: &Value, name: &str) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Null => Vec::new(),
        Value::Mapping(map) => {
            map.iter().map(|(k, v)| (scalar(k, name), scalar(v, &format!("service `{name}` environment")))).collect()
        }
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let entry = scalar(item, name);
                match entry.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => panic!("service `{name}`: environment entry `{entry}` has no `=`"),
                }
            })
            .collect(),
        other => panic!("service `{name}`: environment is neither a map nor a list: {other:?}"),
    }
}

/// Services that run the lakestream image.
fn lakestream_services(compose: &Value) -> Vec<(String, Value)> {
    let services = compose["services"].as_mapping().expect("compose.yaml: `services` is a map");
    services
        .iter()
        .filter(|(_, s)| {
            s["build"]["dockerfile"].as_str() == Some("docker/Dockerfile")
                || s["image"].as_str().is_some_and(|i| i.starts_with("lakestream:"))
        })
        .map(|(name, s)| (scalar(name, "service name"), s.clone()))
        .collect()
}

fn string_list(value: &Value, what: &str) -> Vec<String> {
    sequence(value, what).iter().map(|v| scalar(v, what)).collect()
}

/// The value after `flag` in an argument list.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// The words of `lakestream <args> --help`; fails if the subcommand does not exist.
fn cli_help(args: &[&str]) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_lakestream"))
        .args(args)
        .arg("--help")
        .output()
        .expect("the lakestream binary runs");
    assert!(
        output.status.success(),
        "`lakestream {} --help` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).split_whitespace().map(|w| w.trim_end_matches(',').to_string()).collect()
}

/// Asserts that the subcommand of `args` exists and takes every `--flag` in `args`.
fn assert_cli_accepts(args: &[String], origin: &str) {
    let sub = args.first().unwrap_or_else(|| panic!("{origin}: empty command"));
    let help = cli_help(&[sub.as_str()]);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let flag = flag.split('=').next().unwrap();
        assert!(help.contains(flag), "{origin}: `lakestream {sub}` has no flag {flag}");
    }
}

struct Instruction {
    keyword: String,
    args: String,
}

/// The Dockerfile's instructions, per stage (comments dropped, continuations joined).
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let text = read(&docker_dir().join("Dockerfile"));
    let mut logical: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.trim().is_empty(), "Dockerfile ends inside a line continuation");
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((line.as_str(), ""));
        let instruction = Instruction { keyword: keyword.to_ascii_uppercase(), args: args.trim().to_string() };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().expect("the Dockerfile starts with FROM").push(instruction);
    }
    assert!(stages.len() >= 2, "the Dockerfile should be multi-stage");
    stages
}

fn instructions<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage.iter().filter(|i| i.keyword == keyword).map(|i| i.args.as_str()).collect()
}

/// The last `keyword` of the stage in exec (JSON) form.
fn exec_form(stage: &[Instruction], keyword: &str) -> Vec<String> {
    let args = *instructions(stage, keyword).last().unwrap_or_else(|| panic!("final stage has no {keyword}"));
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{keyword} {args}: not the exec (JSON array) form: {e}"))
}

/// The config tree a loaded Config serialises to, for looking keys up by path.
fn lookup(tree: &toml::Value, path: &[String]) -> Option<String> {
    let mut node = tree;
    for segment in path {
        node = node.get(segment.as_str())?;
    }
    Some(match node {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Asserts that `lake.storage` keys are options delta-rs/object_store know for the store.
fn assert_storage_keys(config: &Config, origin: &str) {
    use deltalake::logstore::object_store::aws::AmazonS3ConfigKey;
    use deltalake::logstore::object_store::azure::AzureConfigKey;
    let kind = LakeLocation::parse(&config.lake.uri).unwrap_or_else(|e| panic!("{origin}: lake.uri: {e}")).kind;
    for key in config.lake.storage.keys() {
        let known = match kind {
            StoreKind::S3 => AmazonS3ConfigKey::from_str(key).is_ok(),
            StoreKind::Azure => AzureConfigKey::from_str(key).is_ok(),
            StoreKind::Local => true,
        };
        assert!(known, "{origin}: lake.storage.{key} is not a storage option of a {kind:?} lake");
    }
}

/// Asserts that `metrics.listen` serves on METRICS_PORT on all interfaces.
fn assert_listens_on_metrics_port(listen: Option<&str>, origin: &str) {
    let listen = listen.unwrap_or_else(|| {
        panic!("{origin}: metrics.listen is not set, so `run` serves no /metrics, /healthz or /readyz")
    });
    let (host, port) =
        listen.rsplit_once(':').unwrap_or_else(|| panic!("{origin}: metrics.listen `{listen}` is not host:port"));
    assert_eq!(port.parse::<u64>().ok(), Some(METRICS_PORT), "{origin}: metrics.listen `{listen}`");
    assert!(
        matches!(host, "0.0.0.0" | "[::]"),
        "{origin}: metrics.listen `{listen}` is not reachable from outside the container"
    );
}

fn configmap_toml(k8s: &[(PathBuf, Value)]) -> toml::Table {
    let cm = find(k8s, "ConfigMap", "lakestream-config");
    string(&cm["data"]["lakestream.toml"], "ConfigMap data `lakestream.toml`")
        .parse()
        .unwrap_or_else(|e| panic!("the ConfigMap's lakestream.toml is not valid TOML: {e}"))
}

fn toml_str(table: &toml::Table, section: &str, key: &str) -> String {
    table
        .get(section)
        .and_then(|s| s.get(key))
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("ConfigMap TOML: {section}.{key} is missing or not a string"))
        .to_string()
}

fn pod_spec(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]
}

fn container(deployment: &Value) -> &Value {
    let containers = sequence(&pod_spec(deployment)["containers"], "Deployment containers");
    assert_eq!(containers.len(), 1, "the Deployment should have one container");
    &containers[0]
}

/// The mount path of the volume that satisfies `pick`, and the volume.
fn mounted_volume<'a>(deployment: &'a Value, pick: impl Fn(&Value) -> bool, what: &str) -> (String, &'a Value) {
    let volume = sequence(&pod_spec(deployment)["volumes"], "Deployment volumes")
        .iter()
        .find(|v| pick(v))
        .unwrap_or_else(|| panic!("the Deployment has no volume for {what}"));
    let name = string(&volume["name"], "volume name");
    let mount = sequence(&container(deployment)["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"].as_str() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("volume `{name}` ({what}) is not mounted"));
    (string(&mount["mountPath"], "mountPath"), volume)
}

/// Path of a projected key inside a configMap/secret volume (`items`, or the key itself).
fn item_path(source: &Value, key: &str) -> String {
    match source["items"].as_sequence() {
        Some(items) => items
            .iter()
            .find(|i| i["key"].as_str() == Some(key))
            .map(|i| string(&i["path"], "item path"))
            .unwrap_or_else(|| panic!("the volume does not project key `{key}`")),
        None => key.to_string(),
    }
}

fn secret_keys(secret: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for field in ["data", "stringData"] {
        if let Some(map) = secret[field].as_mapping() {
            keys.extend(map.iter().map(|(k, _)| scalar(k, "secret key")));
        }
    }
    keys
}

/// The `--partitions` the compose producer creates the topic with.
fn topic_partitions() -> u64 {
    let compose = compose();
    let command = string_list(&compose["services"]["produce"]["command"], "produce command");
    flag_value(&command, "--partitions").expect("produce has --partitions").parse().expect("--partitions is a number")
}

// ---------------------------------------------------------------- tests

#[test]
fn every_yaml_file_parses() {
    let mut files = Vec::new();
    yaml_files(&docker_dir(), &mut files);
    let names: Vec<String> =
        files.iter().map(|f| f.strip_prefix(docker_dir()).unwrap().display().to_string()).collect();
    for expected in [
        "compose.yaml",
        "k8s/kustomization.yaml",
        "k8s/deployment.yaml",
        "k8s/keda-scaledobject.yaml",
        "k8s/networkpolicy.yaml",
        "k8s/alerts/kustomization.yaml",
        "k8s/alerts/prometheusrule.yaml",
        RULES_FILE,
    ] {
        assert!(names.iter().any(|n| n == expected), "docker/{expected} is missing (found {names:?})");
    }
    for file in &files {
        let docs = documents(file);
        assert!(!docs.is_empty(), "{} holds no YAML document", file.display());
        if is_rules_file(file) {
            assert!(docs[0]["groups"].as_sequence().is_some(), "{}: a rules file has `groups`", file.display());
        } else if file.starts_with(docker_dir().join("k8s")) {
            for doc in &docs {
                assert!(doc["apiVersion"].as_str().is_some(), "{}: a document has no apiVersion", file.display());
                let kind = string(&doc["kind"], &format!("{}: kind", file.display()));
                if kind != "Kustomization" {
                    string(&doc["metadata"]["name"], &format!("{}: {kind} metadata.name", file.display()));
                }
            }
        }
    }
    // The KEDA file is multi-document: TriggerAuthentication + ScaledObject.
    assert_eq!(documents(&docker_dir().join("k8s/keda-scaledobject.yaml")).len(), 2);
}

#[test]
fn kustomization_lists_every_manifest_in_one_namespace() {
    // docker/k8s (the writer) and docker/k8s/alerts (the Prometheus Operator
    // add-on) are two kustomizations; each lists the manifests of its directory.
    let dir = docker_dir().join("k8s");
    for sub in [dir.clone(), dir.join("alerts")] {
        let docs = documents(&sub.join("kustomization.yaml"));
        let listed: BTreeSet<String> =
            string_list(&docs[0]["resources"], "kustomization resources").into_iter().collect();
        let present: BTreeSet<String> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .filter(|p| !is_rules_file(p))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|n| n != "kustomization.yaml")
            .collect();
        assert_eq!(listed, present, "{}/kustomization.yaml resources vs the files beside it", sub.display());
        assert_eq!(docs[0]["namespace"].as_str(), Some("lakestream"), "{}: namespace", sub.display());
    }
    let kustomization_docs = documents(&dir.join("kustomization.yaml"));
    let kustomization = &kustomization_docs[0];

    let namespace = string(&kustomization["namespace"], "kustomization namespace");
    let k8s = k8s_documents();
    find(&k8s, "Namespace", &namespace);
    for (file, doc) in &k8s {
        let kind = string(&doc["kind"], "kind");
        if kind == "Namespace" || kind == "Kustomization" {
            continue;
        }
        assert_eq!(
            doc["metadata"]["namespace"].as_str(),
            Some(namespace.as_str()),
            "{}: {kind} is not in namespace {namespace}",
            file.display()
        );
    }
    // The images: entry rewrites the Deployment's image name.
    let image_names: Vec<String> = sequence(&kustomization["images"], "kustomization images")
        .iter()
        .map(|i| string(&i["name"], "images name"))
        .collect();
    let deployment = find(&k8s, "Deployment", "lakestream");
    let image = string(&container(deployment)["image"], "container image");
    assert!(image_names.contains(&image), "kustomization images {image_names:?} do not rewrite `{image}`");
}

#[test]
fn metrics_port_agrees_everywhere() {
    // Dockerfile EXPOSE (final stage).
    let stages = dockerfile_stages();
    let runtime = stages.last().unwrap();
    let exposed: Vec<u64> = instructions(runtime, "EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse::<u64>().expect("EXPOSE takes port numbers"))
        .collect();
    assert_eq!(exposed, vec![METRICS_PORT], "Dockerfile EXPOSE");

    // The configurations that start the server listen on that port.
    assert_listens_on_metrics_port(
        configmap_toml(&k8s_documents()).get("metrics").and_then(|m| m.get("listen")).and_then(|l| l.as_str()),
        "ConfigMap lakestream.toml",
    );
    let image_config =
        Config::load(Some(docker_dir().join("lakestream.toml").as_path()), Vec::<(String, String)>::new())
            .expect("docker/lakestream.toml loads");
    assert_listens_on_metrics_port(image_config.metrics.listen.as_deref(), "docker/lakestream.toml");

    // Deployment: container port and the probes.
    let k8s = k8s_documents();
    let deployment = find(&k8s, "Deployment", "lakestream");
    let c = container(deployment);
    let ports: Vec<u64> =
        sequence(&c["ports"], "container ports").iter().map(|p| number(&p["containerPort"], "containerPort")).collect();
    assert_eq!(ports, vec![METRICS_PORT], "Deployment containerPort");
    for (probe, path) in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(number(&c[probe]["httpGet"]["port"], probe), METRICS_PORT, "{probe} port");
        assert_eq!(string(&c[probe]["httpGet"]["path"], probe), path, "{probe} path");
    }
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        string(&annotations["prometheus.io/port"], "pod annotation prometheus.io/port"),
        METRICS_PORT.to_string()
    );

    // Service: port and targetPort, and it selects the pods.
    let service = find(&k8s, "Service", "lakestream-metrics");
    let service_ports = sequence(&service["spec"]["ports"], "Service ports");
    assert_eq!(service_ports.len(), 1);
    assert_eq!(number(&service_ports[0]["port"], "Service port"), METRICS_PORT);
    assert_eq!(number(&service_ports[0]["targetPort"], "Service targetPort"), METRICS_PORT);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (selector, what) in [
        (&service["spec"]["selector"], "Service selector"),
        (&find(&k8s, "PodDisruptionBudget", "lakestream")["spec"]["selector"]["matchLabels"], "PDB selector"),
        (&deployment["spec"]["selector"]["matchLabels"], "Deployment selector"),
    ] {
        let selector = selector.as_mapping().unwrap_or_else(|| panic!("{what} is not a map"));
        assert!(!selector.is_empty(), "{what} is empty");
        for (k, v) in selector {
            assert_eq!(&pod_labels[k], v, "{what} {k:?} does not match the pod labels");
        }
    }

    // Compose: every published port of a lakestream service targets 9898.
    let compose = compose();
    for (name, service) in lakestream_services(&compose) {
        if service["ports"].is_null() {
            continue;
        }
        for port in string_list(&service["ports"], &format!("service `{name}` ports")) {
            let container_port = port.rsplit(':').next().unwrap().trim_end_matches("/tcp");
            assert_eq!(container_port, METRICS_PORT.to_string(), "service `{name}` publishes {port}");
        }
        if !service["healthcheck"].is_null() {
            let test = string_list(&service["healthcheck"]["test"], "healthcheck test").join(" ");
            assert!(
                test.contains(&format!("/{METRICS_PORT}")),
                "service `{name}` healthcheck does not use {METRICS_PORT}: {test}"
            );
        }
    }
}

#[test]
fn image_runs_the_lakestream_binary_with_an_existing_command() {
    let stages = dockerfile_stages();
    let builder = &stages[0];
    let runtime = stages.last().unwrap();

    let builder_from = instructions(builder, "FROM")[0];
    let builder_image = builder_from.split_whitespace().next().unwrap();
    assert!(
        builder_image.starts_with("rust:") && builder_image.ends_with("-bookworm"),
        "builder image {builder_image}"
    );
    assert!(
        instructions(builder, "RUN").iter().any(|r| r.contains("cargo build --release --locked --bin lakestream")),
        "the builder does not run `cargo build --release --locked --bin lakestream`"
    );
    // The builder's toolchain satisfies the crate's rust-version.
    let manifest: toml::Table = read(&repo_dir().join("Cargo.toml")).parse().expect("Cargo.toml parses");
    if let Some(required) = manifest["package"].get("rust-version").and_then(|v| v.as_str()) {
        let version = |s: &str| -> (u32, u32) {
            let mut parts = s.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
        };
        let image_version = builder_image.trim_start_matches("rust:").trim_end_matches("-bookworm");
        assert!(
            version(image_version) >= version(required),
            "builder {builder_image} is older than Cargo.toml's rust-version {required}"
        );
    }
    assert!(instructions(runtime, "FROM")[0].starts_with("debian:bookworm-slim"), "runtime base image");

    // The binary is copied from the builder to BINARY_PATH and is the ENTRYPOINT.
    assert!(
        instructions(runtime, "COPY").iter().any(|c| c.starts_with("--from=builder") && c.ends_with(BINARY_PATH)),
        "the runtime stage does not copy the binary to {BINARY_PATH}"
    );
    assert_eq!(exec_form(runtime, "ENTRYPOINT"), vec![BINARY_PATH.to_string()]);

    // CMD: `run --config /etc/lakestream/lakestream.toml`, accepted by the real CLI.
    let cmd = exec_form(runtime, "CMD");
    assert_eq!(cmd.first().map(String::as_str), Some("run"), "CMD subcommand");
    assert_eq!(flag_value(&cmd, "--config"), Some(IMAGE_CONFIG_PATH), "CMD --config");
    assert_cli_accepts(&cmd, "Dockerfile CMD");
    assert!(
        instructions(runtime, "COPY").iter().any(|c| c.ends_with(IMAGE_CONFIG_PATH)),
        "the image does not contain {IMAGE_CONFIG_PATH}"
    );

    // Non-root user 10001, JSON logs.
    let user = *instructions(runtime, "USER").last().expect("the runtime stage sets USER");
    assert_eq!(user.split(':').next(), Some("10001"), "USER");
    assert!(
        instructions(runtime, "ENV").iter().any(|e| e.split_whitespace().any(|kv| kv == "LAKESTREAM_LOG_FORMAT=json")),
        "the image does not set LAKESTREAM_LOG_FORMAT=json"
    );

    // The Kubernetes container runs the same command as the same user.
    let k8s = k8s_documents();
    let deployment = find(&k8s, "Deployment", "lakestream");
    let args = string_list(&container(deployment)["args"], "container args");
    assert_eq!(args, cmd, "Deployment args vs Dockerfile CMD");
    assert_eq!(number(&pod_spec(deployment)["securityContext"]["runAsUser"], "runAsUser"), 10001);
    assert_eq!(number(&container(deployment)["securityContext"]["runAsUser"], "runAsUser"), 10001);

    // Every lakestream command in compose exists too (produce flags included).
    let compose = compose();
    for (name, service) in lakestream_services(&compose) {
        if service["command"].is_null() {
            continue; // the image's CMD, checked above
        }
        let command = string_list(&service["command"], &format!("service `{name}` command"));
        assert_cli_accepts(&command, &format!("compose service `{name}`"));
    }
}

#[test]
fn build_context_filter_keeps_what_the_dockerfile_copies() {
    let ignore = read(&docker_dir().join("Dockerfile.dockerignore"));
    let lines: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(lines.contains(&"*"), "Dockerfile.dockerignore should exclude everything by default");
    let allowed: BTreeSet<&str> =
        lines.iter().filter_map(|l| l.strip_prefix('!')).map(|l| l.trim_end_matches('/')).collect();
    for stage in dockerfile_stages() {
        for copy in instructions(&stage, "COPY") {
            let words: Vec<&str> = copy.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            if copy.split_whitespace().any(|w| w.starts_with("--from=")) {
                continue;
            }
            for source in &words[..words.len() - 1] {
                let source = source.trim_end_matches('/');
                assert!(repo_dir().join(source).exists(), "COPY source {source} does not exist");
                assert!(allowed.contains(source), "COPY source {source} is excluded by Dockerfile.dockerignore");
            }
        }
    }
}

#[test]
fn configmap_toml_loads_as_config() {
    let k8s = k8s_documents();
    let mut table = configmap_toml(&k8s);
    let deployment = find(&k8s, "Deployment", "lakestream");

    // The config file is where the container's --config points.
    let (config_dir, config_volume) =
        mounted_volume(deployment, |v| v["configMap"]["name"].as_str() == Some("lakestream-config"), "the ConfigMap");
    let config_file = format!("{config_dir}/{}", item_path(&config_volume["configMap"], "lakestream.toml"));
    let args = string_list(&container(deployment)["args"], "container args");
    assert_eq!(flag_value(&args, "--config"), Some(config_file.as_str()), "--config vs the ConfigMap mount");

    // sasl_password_file is key `password` of the mounted Secret.
    let secret = find(&k8s, "Secret", "lakestream-kafka");
    assert!(secret_keys(secret).contains("password"), "Secret lakestream-kafka has no key `password`");
    let (secret_dir, secret_volume) = mounted_volume(
        deployment,
        |v| v["secret"]["secretName"].as_str() == Some("lakestream-kafka"),
        "the Kafka Secret",
    );
    let password_path = format!("{secret_dir}/{}", item_path(&secret_volume["secret"], "password"));
    assert_eq!(
        toml_str(&table, "kafka", "sasl_password_file"),
        password_path,
        "kafka.sasl_password_file vs the Secret mount"
    );

    // Load it as lakestream would, with the secret file replaced by a local one.
    let dir = tempfile::tempdir().unwrap();
    let dummy_secret = dir.path().join("password");
    std::fs::write(&dummy_secret, "dummy-api-secret\n").unwrap();
    table
        .get_mut("kafka")
        .and_then(|k| k.as_table_mut())
        .expect("[kafka] is a table")
        .insert("sasl_password_file".into(), toml::Value::String(dummy_secret.to_str().unwrap().to_string()));
    let file = dir.path().join("lakestream.toml");
    std::fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    let config = Config::load(Some(file.as_path()), Vec::<(String, String)>::new())
        .unwrap_or_else(|e| panic!("the ConfigMap's lakestream.toml does not load: {e}"));

    assert_eq!(config.kafka.security_protocol, SecurityProtocol::SaslSsl);
    assert_eq!(config.kafka.sasl_mechanism.as_deref(), Some("PLAIN"));
    assert_eq!(config.kafka.sasl_password.as_ref().map(|p| p.expose()), Some("dummy-api-secret"));
    assert_eq!(config.kafka.brokers, "pkc-xxxxx.westeurope.azure.confluent.cloud:9092");
    assert_listens_on_metrics_port(config.metrics.listen.as_deref(), "ConfigMap lakestream.toml");
    let location = LakeLocation::parse(&config.lake.uri).unwrap();
    assert_eq!(location.kind, StoreKind::Azure, "the production lake is ADLS Gen2");
    assert!(config.lake.uri.starts_with("abfss://"), "lake.uri {}", config.lake.uri);
    assert_storage_keys(&config, "ConfigMap");

    // The KEDA username is the same API key.
    let username = string(
        &secret["stringData"]["username"],
        "Secret lakestream-kafka stringData.username (the API key KEDA uses)",
    );
    assert_eq!(
        config.kafka.sasl_username.as_deref(),
        Some(username.as_str()),
        "sasl_username vs the Secret's username"
    );

    // Workload identity: same client id in the ServiceAccount and the config; the
    // Deployment uses that ServiceAccount and opts its pods in.
    let account = find(&k8s, "ServiceAccount", "lakestream");
    let client_id =
        string(&account["metadata"]["annotations"]["azure.workload.identity/client-id"], "client-id annotation");
    assert_eq!(client_id.len(), 36, "the client id should be a GUID: {client_id}");
    assert_eq!(config.lake.storage.get("azure_client_id").map(|s| s.expose()), Some(client_id.as_str()));
    assert_eq!(string(&pod_spec(deployment)["serviceAccountName"], "serviceAccountName"), "lakestream");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"].as_str(),
        Some("true"),
        "pod label azure.workload.identity/use must be the string \"true\""
    );
}

#[test]
fn deployment_is_restricted_and_stops_gracefully() {
    let k8s = k8s_documents();
    let deployment = find(&k8s, "Deployment", "lakestream");
    let pod = pod_spec(deployment);
    let c = container(deployment);
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false));
    // A read-only root needs a writable /tmp.
    let (tmp, _) = mounted_volume(deployment, |v| !v["emptyDir"].is_null(), "an emptyDir");
    assert_eq!(tmp, "/tmp");
    assert!(number(&pod["terminationGracePeriodSeconds"], "terminationGracePeriodSeconds") >= 60);
    let strategy = &deployment["spec"]["strategy"];
    assert_eq!(strategy["type"].as_str(), Some("RollingUpdate"));
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"].as_u64(), Some(1));
    assert_eq!(find(&k8s, "PodDisruptionBudget", "lakestream")["spec"]["maxUnavailable"].as_u64(), Some(1));
    let resources = &c["resources"];
    for (path, expected) in [
        (&resources["requests"]["cpu"], "500m"),
        (&resources["requests"]["memory"], "1Gi"),
        (&resources["limits"]["cpu"], "2"),
        (&resources["limits"]["memory"], "4Gi"),
    ] {
        assert_eq!(scalar(path, "resources"), expected);
    }
    let replicas = number(&deployment["spec"]["replicas"], "replicas");
    assert!(replicas <= topic_partitions(), "{replicas} replicas for {} partitions", topic_partitions());
}

#[test]
fn keda_scales_the_deployment_on_the_configured_group() {
    let k8s = k8s_documents();
    let config = configmap_toml(&k8s);
    let deployment = find(&k8s, "Deployment", "lakestream");
    let scaled = find(&k8s, "ScaledObject", "lakestream");
    assert_eq!(
        string(&scaled["spec"]["scaleTargetRef"]["name"], "scaleTargetRef"),
        string(&deployment["metadata"]["name"], "name")
    );

    let partitions = topic_partitions();
    let max = number(&scaled["spec"]["maxReplicaCount"], "maxReplicaCount");
    let min = number(&scaled["spec"]["minReplicaCount"], "minReplicaCount");
    assert_eq!(max, partitions, "maxReplicaCount should equal the partition count");
    assert!(min >= 1 && min <= max);
    assert!(number(&deployment["spec"]["replicas"], "replicas") <= max);

    let triggers = sequence(&scaled["spec"]["triggers"], "triggers");
    assert_eq!(triggers.len(), 1);
    let trigger = &triggers[0];
    assert_eq!(trigger["type"].as_str(), Some("kafka"));
    let metadata = &trigger["metadata"];
    assert_eq!(string(&metadata["consumerGroup"], "consumerGroup"), toml_str(&config, "kafka", "group_id"));
    assert_eq!(string(&metadata["topic"], "topic"), toml_str(&config, "kafka", "topic"));
    assert_eq!(string(&metadata["bootstrapServers"], "bootstrapServers"), toml_str(&config, "kafka", "brokers"));
    let lag: u64 = string(&metadata["lagThreshold"], "lagThreshold").parse().expect("lagThreshold is a number");
    assert!(lag > 0);

    // SASL credentials come from the Secret through the TriggerAuthentication.
    let auth = find(&k8s, "TriggerAuthentication", &string(&trigger["authenticationRef"]["name"], "authenticationRef"));
    let secret = find(&k8s, "Secret", "lakestream-kafka");
    let keys = secret_keys(secret);
    let mut parameters = BTreeSet::new();
    for reference in sequence(&auth["spec"]["secretTargetRef"], "secretTargetRef") {
        assert_eq!(string(&reference["name"], "secretTargetRef name"), "lakestream-kafka");
        let key = string(&reference["key"], "secretTargetRef key");
        assert!(keys.contains(&key), "Secret lakestream-kafka has no key `{key}`");
        parameters.insert(string(&reference["parameter"], "parameter"));
    }
    assert!(parameters.contains("username") && parameters.contains("password"), "{parameters:?}");
}

#[test]
fn image_default_config_loads() {
    let path = docker_dir().join("lakestream.toml");
    let config = Config::load(Some(path.as_path()), Vec::<(String, String)>::new())
        .unwrap_or_else(|e| panic!("docker/lakestream.toml does not load: {e}"));
    assert_eq!(config.kafka.topic, "orders");
}

#[test]
fn compose_lakestream_variables_are_config_keys() {
    let compose = compose();
    let image_config = docker_dir().join("lakestream.toml");
    let mut writers: Vec<(String, String, String)> = Vec::new();
    let mut checked = 0;
    for (name, service) in compose["services"].as_mapping().expect("services").iter() {
        let name = scalar(name, "service name");
        let vars: Vec<(String, String)> = compose_env(service, &name)
            .into_iter()
            .filter(|(k, _)| k.starts_with(lakestream::config::ENV_PREFIX))
            .collect();
        if vars.is_empty() {
            continue;
        }
        let config_vars: Vec<(String, String)> =
            vars.iter().filter(|(k, _)| !NON_CONFIG_VARS.contains(&k.as_str())).cloned().collect();

        // Exactly these variables make a valid configuration…
        let config = Config::load(None, config_vars.clone())
            .unwrap_or_else(|e| panic!("service `{name}`: its LAKESTREAM_* variables do not load: {e}"));
        // …and each one lands on a config key (lakestream silently ignores a
        // variable whose first segment is not a section).
        let tree = toml::Value::try_from(&config).expect("a Config serialises");
        for (var, value) in &config_vars {
            let path: Vec<String> =
                var[lakestream::config::ENV_PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect();
            assert!(
                path.len() >= 2 && tree.get(path[0].as_str()).is_some(),
                "service `{name}`: {var} names no config section, so lakestream ignores it"
            );
            let last = path.last().unwrap();
            if let Some(stripped) = last.strip_suffix("_file") {
                // A secret file: the config holds the secret under the key without `_file`.
                let mut secret_path = path.clone();
                *secret_path.last_mut().unwrap() = stripped.to_string();
                assert!(
                    lookup(&tree, &secret_path).is_some(),
                    "service `{name}`: {var} did not set {}",
                    secret_path.join(".")
                );
            } else {
                let found = lookup(&tree, &path)
                    .unwrap_or_else(|| panic!("service `{name}`: {var} is not a config key ({})", path.join(".")));
                assert_eq!(&found, value, "service `{name}`: {var} sets {} to a different value", path.join("."));
            }
        }
        assert_storage_keys(&config, &format!("service `{name}`"));

        // What the container really runs: the image's default config file plus these variables.
        if service["command"].is_null() {
            let effective = Config::load(Some(image_config.as_path()), config_vars.clone())
                .unwrap_or_else(|e| panic!("service `{name}`: image config + variables do not load: {e}"));
            assert_listens_on_metrics_port(effective.metrics.listen.as_deref(), &format!("service `{name}`"));
            writers.push((name.clone(), effective.kafka.group_id.clone(), effective.lake.uri.clone()));
        }
        checked += 1;
    }
    assert!(checked >= 1, "no compose service sets LAKESTREAM_* variables");

    // The MinIO writer.
    let services = &compose["services"];
    let env: std::collections::BTreeMap<String, String> =
        compose_env(&services["lakestream"], "lakestream").into_iter().collect();
    let vars: Vec<(String, String)> = env.clone().into_iter().filter(|(k, _)| k.starts_with("LAKESTREAM_")).collect();
    let config = Config::load(None, vars).unwrap();
    assert_eq!(config.lake.uri, "s3://lake/orders");
    assert_eq!(config.kafka.brokers, "kafka:9092");
    let storage = |key: &str| config.lake.storage.get(key).map(|s| s.expose().to_string());
    assert_eq!(storage("aws_endpoint_url").as_deref(), Some("http://minio:9000"));
    assert_eq!(storage("aws_region").as_deref(), Some("us-east-1"));
    assert_eq!(storage("aws_allow_http").as_deref(), Some("true"));
    let minio: std::collections::BTreeMap<String, String> =
        compose_env(&services["minio"], "minio").into_iter().collect();
    assert_eq!(storage("aws_access_key_id"), minio.get("MINIO_ROOT_USER").cloned(), "access key vs MinIO's user");
    assert_eq!(
        storage("aws_secret_access_key"),
        minio.get("MINIO_ROOT_PASSWORD").cloned(),
        "secret key vs MinIO's password"
    );
    // The bucket the one-shot mc job creates is the lake's bucket.
    let bucket = LakeLocation::parse(&config.lake.uri).unwrap().root.host_str().unwrap().to_string();
    let mc = string_list(&services["create-bucket"]["command"], "create-bucket command");
    assert!(
        mc.iter().any(|a| a.ends_with(&format!("/{bucket}"))),
        "create-bucket {mc:?} does not create bucket `{bucket}`"
    );

    // The producer writes the topic the writers read.
    let produce = string_list(&services["produce"]["command"], "produce command");
    assert_eq!(produce.first().map(String::as_str), Some("produce"));
    assert_eq!(flag_value(&produce, "--topic"), Some(config.kafka.topic.as_str()));
    assert_eq!(flag_value(&produce, "--brokers"), Some(config.kafka.brokers.as_str()));

    // Two writers of different lakes must not share a consumer group (the
    // partitions would be split between the lakes).
    assert!(writers.iter().any(|(n, _, _)| n == "lakestream"), "{writers:?}");
    let groups: BTreeSet<&str> = writers.iter().map(|(_, g, _)| g.as_str()).collect();
    assert_eq!(groups.len(), writers.len(), "writers share a consumer group: {writers:?}");
}

/// The migration Job runs an existing command with the Deployment's config,
/// identity and Kafka secret (the config is validated whole).
#[test]
fn migrate_job_runs_lakestream_migrate_like_the_deployment() {
    let k8s = k8s_documents();
    let job = find(&k8s, "Job", "lakestream-migrate");
    let deployment = find(&k8s, "Deployment", "lakestream");
    let job_pod = &job["spec"]["template"]["spec"];
    let job_container = &sequence(&job_pod["containers"], "job containers")[0];
    let args = string_list(&job_container["args"], "job args");
    assert_eq!(args.first().map(String::as_str), Some("migrate"));
    assert_cli_accepts(&args, "k8s/migrate-job.yaml");
    let deployment_args = string_list(&container(deployment)["args"], "deployment args");
    assert_eq!(flag_value(&args, "--config"), flag_value(&deployment_args, "--config"), "same config file");
    assert_eq!(job_container["image"], container(deployment)["image"], "same image name (rewritten by kustomization)");
    let pod = pod_spec(deployment);
    assert_eq!(job_pod["serviceAccountName"], pod["serviceAccountName"]);
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"]
    );
    assert_eq!(job_pod["volumes"], pod["volumes"].as_sequence().map(|v| Value::Sequence(v.iter().filter(|v| v["emptyDir"].is_null()).cloned().collect())).unwrap());
}

// ---------------------------------------------------------------- the operator's view

/// Sample names the writer exports, read from src/metrics.rs: each
/// `registry.register("name", help, m.field.clone())` under the registry prefix
/// `lakestream`, with the suffixes the text format gives the field's type
/// (counters `_total`; histograms `_bucket`, `_sum`, `_count`; gauges none).
fn exported_metrics() -> BTreeSet<String> {
    let source = read(&repo_dir().join("src/metrics.rs"));
    assert!(source.contains("sub_registry_with_prefix(\"lakestream\")"), "src/metrics.rs: the registry prefix is not `lakestream`");
    let mut field_types: BTreeMap<&str, &str> = BTreeMap::new();
    for line in source.lines() {
        if let Some((field, ty)) = line.trim().strip_prefix("pub ").and_then(|rest| rest.split_once(':')) {
            field_types.insert(field.trim(), ty.trim());
        }
    }
    let mut names = BTreeSet::new();
    for call in source.split("registry.register(").skip(1) {
        let name = call.split('"').nth(1).expect("registry.register(\"name\", …)");
        let argument = call.split(".clone()").next().unwrap();
        let field = argument.rsplit_once("m.").map(|(_, f)| f.trim()).unwrap_or_else(|| {
            panic!("src/metrics.rs: cannot tell which field `{name}` registers (expected `m.<field>.clone()`)")
        });
        let ty = field_types
            .get(field)
            .unwrap_or_else(|| panic!("src/metrics.rs: `{name}` registers `m.{field}`, not a `pub` field of Metrics"));
        let base = format!("lakestream_{name}");
        if ty.contains("Histogram") {
            names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{base}{s}")));
        } else if ty.contains("Counter") {
            names.insert(format!("{base}_total"));
        } else if ty.contains("Gauge") {
            names.insert(base);
        } else {
            panic!("src/metrics.rs: `{name}` has a type this test does not know: {ty}");
        }
    }
    // The standard process metrics, registered at the root (no prefix).
    for (name, exported) in [("process_resident_memory_bytes", "process_resident_memory_bytes"), ("process_cpu_seconds", "process_cpu_seconds_total")] {
        if source.contains(&format!("root.register(\"{name}\"")) {
            names.insert(exported.to_string());
        }
    }
    assert!(names.len() >= 15, "read only {} metrics from src/metrics.rs: {names:?}", names.len());
    names
}

/// Metric names in a PromQL expression: identifiers `lakestream_…` and `process_…`
/// (the writer's; `up`, `kube_*` and `container_*` come from Prometheus,
/// kube-state-metrics and cAdvisor). Quoted strings are skipped.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let mut unquoted = String::new();
    let mut quote: Option<char> = None;
    for c in expr.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None => unquoted.push(c),
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$'))
        .filter(|w| w.starts_with("lakestream_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

fn dashboard() -> serde_json::Value {
    let path = docker_dir().join("grafana/lakestream.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// Every PromQL expression of the dashboard (panel targets and variable queries), with its origin.
fn dashboard_expressions(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("the dashboard has panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("panel {}: a target without expr", panel["title"]));
            out.push((format!("panel {}", panel["title"]), expr.to_string()));
        }
    }
    for var in dashboard["templating"]["list"].as_array().expect("templating.list") {
        if var["type"] == "query" {
            let query = var["query"]["query"].as_str().or(var["definition"].as_str()).expect("variable query");
            out.push((format!("variable {}", var["name"]), query.to_string()));
        }
    }
    out
}

/// The alert rules of the plain file: (group, alert name, rule).
fn alert_rules(rules: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for group in sequence(&rules["groups"], "groups") {
        let group_name = string(&group["name"], "group name");
        for rule in sequence(&group["rules"], &format!("group {group_name} rules")) {
            let name = string(&rule["alert"], &format!("group {group_name}: rule alert"));
            out.push((group_name.clone(), name, rule.clone()));
        }
    }
    out
}

/// The anchors GitHub (and most Markdown renderers) give the headings of a file.
fn markdown_anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = slug.clone();
        let mut n = 1;
        while anchors.contains(&anchor) {
            anchor = format!("{slug}-{n}");
            n += 1;
        }
        anchors.insert(anchor);
    }
    anchors
}

#[test]
fn dashboard_is_importable_and_names_only_exported_metrics() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36, "schemaVersion of Grafana 10+");
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()) && dashboard["title"].as_str().is_some());
    // The data source is the variable DS_PROMETHEUS (any Prometheus data source).
    let vars = dashboard["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("the dashboard has no variable `{name}`"))
    };
    assert_eq!(var("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(var("DS_PROMETHEUS")["query"], "prometheus");
    for name in ["namespace", "pod", "table"] {
        assert_eq!(var(name)["type"], "query", "variable {name}");
        assert_eq!(var(name)["datasource"]["uid"], "${DS_PROMETHEUS}", "variable {name} data source");
    }
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(ids.insert(panel["id"].as_u64().expect("panel id")), "panel id {} twice", panel["id"]);
        for key in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][key].is_u64(), "panel {title}: gridPos.{key}");
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {title}: data source");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no targets");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {title}: target data source");
        }
    }

    let exported = exported_metrics();
    let mut used = BTreeSet::new();
    for (origin, expr) in dashboard_expressions(&dashboard) {
        for name in promql_metric_names(&expr) {
            assert!(
                exported.contains(&name) || PENDING_METRICS.contains(&name.as_str()),
                "dashboard {origin}: `{name}` is not a metric src/metrics.rs registers ({expr})"
            );
            used.insert(name);
        }
        if expr.contains("lakestream_") && !expr.starts_with("label_values(") {
            for var in ["$namespace", "$pod"] {
                assert!(expr.contains(var), "dashboard {origin}: the expression ignores {var}: {expr}");
            }
        }
    }
    // Every metric the writer exports has a panel (a new metric needs one).
    for name in &exported {
        let family_used = used.contains(name)
            || (name.ends_with("_sum") || name.ends_with("_count"))
                && used.contains(&format!("{}_bucket", name.rsplit_once('_').unwrap().0));
        assert!(family_used, "no dashboard panel shows {name} (docker/grafana/lakestream.json)");
    }
    for name in PENDING_METRICS {
        assert!(used.contains(*name), "the dashboard should already show {name}");
    }
    assert!(
        dashboard_expressions(&dashboard)
            .iter()
            .any(|(_, e)| e.contains("histogram_quantile(0.99") && e.contains("lakestream_commit_duration_seconds_bucket")),
        "the dashboard shows the p99 commit duration"
    );
}

#[test]
fn alert_rules_match_the_prometheusrule_and_link_to_the_runbook() {
    let k8s = k8s_documents();
    let rule = find(&k8s, "PrometheusRule", "lakestream");
    assert_eq!(rule["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    let plain_docs = documents(&docker_dir().join(RULES_FILE));
    assert_eq!(plain_docs.len(), 1, "{RULES_FILE}: one YAML document");
    let plain = &plain_docs[0];
    // The plain file is the PrometheusRule's spec (docker/validate.sh --write-rules).
    assert_eq!(
        &rule["spec"], plain,
        "docker/{RULES_FILE} differs from the spec of docker/k8s/alerts/prometheusrule.yaml: run docker/validate.sh --write-rules"
    );
    let alerts = alert_rules(plain);
    let names: BTreeSet<&str> = alerts.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names.len(), alerts.len(), "an alert name is used twice");
    for expected in [
        "LakestreamConsumerLagGrowing",
        "LakestreamFreshnessHigh",
        "LakestreamQuarantineRateHigh",
        "LakestreamCommitsFailing",
        "LakestreamCommitConflicts",
        "LakestreamPodNotReady",
        "LakestreamNoPartitionsAssigned",
        "LakestreamMaintenanceFailing",
    ] {
        assert!(names.contains(expected), "alert {expected} is missing from the rules");
    }

    let runbook = read(&docker_dir().join("RUNBOOK.md"));
    let anchors = markdown_anchors(&runbook);
    let exported = exported_metrics();
    for (group, name, rule) in &alerts {
        let what = format!("alert {name} (group {group})");
        let expr = string(&rule["expr"], &format!("{what}: expr"));
        for metric in promql_metric_names(&expr) {
            assert!(
                exported.contains(&metric) || PENDING_METRICS.contains(&metric.as_str()),
                "{what}: `{metric}` is not a metric src/metrics.rs registers"
            );
        }
        assert!(rule["for"].as_str().is_some(), "{what}: no `for`");
        assert!(
            matches!(rule["labels"]["severity"].as_str(), Some("warning" | "critical")),
            "{what}: severity should be warning or critical"
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                rule["annotations"][key].as_str().is_some_and(|v| !v.trim().is_empty()),
                "{what}: annotation {key} is missing"
            );
        }
        let url = string(&rule["annotations"]["runbook_url"], "runbook_url");
        let (page, anchor) =
            url.split_once('#').unwrap_or_else(|| panic!("{what}: runbook_url {url} has no #anchor"));
        assert!(url.starts_with("https://") && page.ends_with("/docker/RUNBOOK.md"), "{what}: runbook_url {url}");
        assert!(anchors.contains(anchor), "{what}: docker/RUNBOOK.md has no heading with anchor #{anchor} ({anchors:?})");
    }
}

#[test]
fn network_policy_allows_only_kafka_storage_dns_and_identity() {
    let k8s = k8s_documents();
    let deny = find(&k8s, "NetworkPolicy", "default-deny");
    assert_eq!(deny["spec"]["podSelector"], Value::Mapping(Default::default()), "default-deny selects every pod");
    assert_eq!(string_list(&deny["spec"]["policyTypes"], "policyTypes"), vec!["Ingress", "Egress"]);
    assert!(deny["spec"]["ingress"].is_null() && deny["spec"]["egress"].is_null(), "default-deny allows nothing");

    let policy = find(&k8s, "NetworkPolicy", "lakestream");
    assert_eq!(string_list(&policy["spec"]["policyTypes"], "policyTypes"), vec!["Ingress", "Egress"]);
    // It selects the writers' and the migrate Job's pods.
    let selected = |labels: &Value| -> bool {
        let selector = &policy["spec"]["podSelector"];
        let by_labels = selector["matchLabels"].as_mapping().map_or(true, |m| m.iter().all(|(k, v)| &labels[k] == v));
        let by_expressions = selector["matchExpressions"].as_sequence().map_or(true, |exprs| {
            exprs.iter().all(|e| {
                assert_eq!(e["operator"].as_str(), Some("In"), "podSelector: only `In` expressions are checked");
                string_list(&e["values"], "values").iter().any(|v| labels[&e["key"]].as_str() == Some(v.as_str()))
            })
        });
        by_labels && by_expressions
    };
    let deployment = find(&k8s, "Deployment", "lakestream");
    let job = find(&k8s, "Job", "lakestream-migrate");
    assert!(selected(&deployment["spec"]["template"]["metadata"]["labels"]), "the policy does not select the writers");
    assert!(selected(&job["spec"]["template"]["metadata"]["labels"]), "the policy does not select the migrate Job");

    let ports = |rule: &Value| -> Vec<(u64, String)> {
        sequence(&rule["ports"], "ports")
            .iter()
            .map(|p| (number(&p["port"], "port"), p["protocol"].as_str().unwrap_or("TCP").to_string()))
            .collect()
    };
    // Ingress: the metrics port only, nothing else.
    let ingress = sequence(&policy["spec"]["ingress"], "ingress");
    assert_eq!(ingress.len(), 1);
    assert_eq!(ports(&ingress[0]), vec![(METRICS_PORT, "TCP".to_string())], "ingress ports");
    // Egress: DNS, Kafka, HTTPS (storage and Entra ID login), the metadata endpoint on 80.
    let kafka_port: u64 = configmap_toml(&k8s)["kafka"]["brokers"]
        .as_str()
        .and_then(|b| b.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("kafka.brokers has a port");
    let mut allowed: BTreeSet<(u64, String, Vec<String>)> = BTreeSet::new();
    for rule in sequence(&policy["spec"]["egress"], "egress") {
        let to: Vec<String> = rule["to"]
            .as_sequence()
            .map(|peers| peers.iter().map(|p| string(&p["ipBlock"]["cidr"], "egress to: only ipBlocks")).collect())
            .unwrap_or_default();
        for (port, protocol) in ports(rule) {
            allowed.insert((port, protocol, to.clone()));
        }
    }
    let any = vec!["0.0.0.0/0".to_string()];
    let expected: BTreeSet<(u64, String, Vec<String>)> = [
        (53, "UDP".to_string(), vec![]),
        (53, "TCP".to_string(), vec![]),
        (kafka_port, "TCP".to_string(), any.clone()),
        (443, "TCP".to_string(), any),
        (80, "TCP".to_string(), vec!["169.254.169.254/32".to_string()]),
    ]
    .into_iter()
    .collect();
    assert_eq!(allowed, expected, "egress rules (port, protocol, destinations)");
}

#[test]
fn image_is_pinned_by_kustomize_with_tag_and_digest() {
    let k8s = k8s_documents();
    let docs = documents(&docker_dir().join("k8s/kustomization.yaml"));
    let images = sequence(&docs[0]["images"], "kustomization images");
    for (what, doc) in [("Deployment", find(&k8s, "Deployment", "lakestream")), ("Job", find(&k8s, "Job", "lakestream-migrate"))] {
        for c in sequence(&doc["spec"]["template"]["spec"]["containers"], "containers") {
            let image = string(&c["image"], "image");
            assert!(!image.contains(':') && !image.contains('@'), "{what}: `{image}` names a tag or digest: set it in images:");
            let entry = images
                .iter()
                .find(|i| i["name"].as_str() == Some(image.as_str()))
                .unwrap_or_else(|| panic!("{what}: no images: entry rewrites `{image}`"));
            let new_name = string(&entry["newName"], "images newName");
            assert!(new_name.contains(".azurecr.io/"), "newName {new_name} is not an ACR image");
            let tag = scalar(&entry["newTag"], "images newTag");
            assert!(!tag.is_empty() && tag != "latest", "images newTag `{tag}`");
            let digest = string(&entry["digest"], "images digest");
            let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("digest {digest} is not sha256:…"));
            assert!(hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()), "digest {digest}");
        }
    }
}

#[test]
fn promql_metric_names_skips_strings() {
    let names = promql_metric_names(
        r#"sum by (table) (rate(lakestream_rows_written_total{table=~"lakestream_x", pod=~"$pod"}[$__rate_interval])) / process_cpu_seconds_total"#,
    );
    assert_eq!(names.into_iter().collect::<Vec<_>>(), vec!["lakestream_rows_written_total", "process_cpu_seconds_total"]);
    assert!(markdown_anchors("# A\n## LakestreamFreshnessHigh\n```\n# not a heading\n```\n## Replay from a timestamp\n")
        .is_superset(&["a", "lakestreamfreshnesshigh", "replay-from-a-timestamp"].map(String::from).into_iter().collect()));
}
