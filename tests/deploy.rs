//! Packaging and deployment: the Dockerfile, the image built by
//! `scripts/build-image.sh`, the Kubernetes manifests in `deploy/kubernetes/` and the
//! fleet scrape configuration.
//!
//! Independent checkers do the judging: hadolint lints the Dockerfile,
//! kubernetes-validate checks every core-kind manifest against the Kubernetes schemas it
//! ships (offline, strict), and a real Prometheus applies the fleet relabelling to
//! synthetic pod-discovery targets. What no schema knows is cross-checked against the
//! real binary: ports, probe paths, flags and environment variables in the manifests are
//! the ones it serves and accepts. YAML is read by the tools venv's PyYAML and handed
//! over as JSON.
//!
//! The image test builds the static binary and the image with buildah, unpacks the OCI
//! archive, checks the image config and runs the entrypoint from the unpacked file tree
//! (chroot, as the image's user) against a real Go target.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const DOCKERFILE: &str = "Dockerfile";
const K8S: &str = "deploy/kubernetes";
const SIDECAR: &str = "deploy/kubernetes/sidecar-deployment.yaml";
const SERVICE: &str = "deploy/kubernetes/service.yaml";
const PODMONITOR: &str = "deploy/kubernetes/podmonitor.yaml";
const SERVICEMONITOR: &str = "deploy/kubernetes/servicemonitor.yaml";
const FLEET: &str = "deploy/kubernetes/fleet-deployment.yaml";
const FLEET_SCRAPE: &str = "deploy/kubernetes/prometheus-fleet-scrape.yml";
/// The monitoring example with the sidecar and probe jobs, kept beside the rules.
const PROMETHEUS_KUBERNETES: &str = "deploy/prometheus/prometheus-kubernetes.yml";

/// Kubernetes versions the manifests must validate against: the oldest and the newest
/// whose schemas the pinned kubernetes-validate ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];

/// The exporter's health endpoint, which the probes must use.
const HEALTH_PATH: &str = "/healthz";
const METRICS_PATH: &str = "/metrics";
/// The Kubernetes annotation a pod opts in to fleet probes with, as Prometheus pod
/// discovery names it.
const PROBE_ANNOTATION_LABEL: &str = "__meta_kubernetes_pod_annotation_pprof_exporter_probe_port";

fn tools_bin(name: &str) -> Option<PathBuf> {
    require_tool(root().join(".venv-tools/bin").join(name).to_str().unwrap())
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every document of a YAML file, as JSON values (empty documents left out).
fn yaml_docs(rel: &str) -> Option<Vec<Value>> {
    let python = tools_bin("python")?;
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
             print(json.dumps(docs))",
        ])
        .arg(root().join(rel))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "YAML of {rel} does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("python printed JSON") {
        Value::Array(docs) => Some(docs),
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// The single document of `kind` in a YAML file.
fn one_of_kind(docs: &[Value], kind: &str) -> Value {
    let found: Vec<_> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0].clone()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a Vec<Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no list at {pointer} in {v}"))
}

/// True when every pair of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_object().expect("matchLabels is a map");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The exporter's `--help` text.
fn exporter_help() -> String {
    let out = Command::new(exporter_bin())
        .arg("--help")
        .output()
        .expect("run pprof-exporter --help");
    assert!(out.status.success(), "--help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The port of the binary's default `--web.listen-address`, as its help states it.
fn default_listen_port(help: &str) -> u16 {
    let start = help
        .find("--web.listen-address")
        .expect("--help documents --web.listen-address");
    let rest = &help[start..];
    let end = rest[2..].find("\n      --").map_or(rest.len(), |i| i + 2);
    let default = rest[..end]
        .split("[default: ")
        .nth(1)
        .and_then(|d| d.split(']').next())
        .expect("--web.listen-address has a default");
    default
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in default {default:?}"))
}

/// The container of a pod template that runs the exporter (its image names it).
fn exporter_container(workload: &Value) -> Value {
    let found: Vec<_> = array_at(workload, "/spec/template/spec/containers")
        .iter()
        .filter(|c| str_at(c, "/image").contains("pprof-exporter"))
        .cloned()
        .collect();
    assert_eq!(found.len(), 1, "one exporter container expected");
    found[0].clone()
}

/// True when `--help` documents `flag` (as in `  -x, --flag <VALUE>` or `  --flag`).
fn help_has_flag(help: &str, flag: &str) -> bool {
    help.lines()
        .any(|l| l.trim_start().starts_with('-') && l.split([' ', ',', '=']).any(|w| w == flag))
}

/// The (name, number) of each container port.
fn container_ports(container: &Value) -> Vec<(String, u64)> {
    array_at(container, "/ports")
        .iter()
        .map(|p| {
            (
                str_at(p, "/name").to_owned(),
                p["containerPort"].as_u64().expect("numeric containerPort"),
            )
        })
        .collect()
}

/// Checks the exporter container against the binary: flags and environment variables
/// exist, the one port is the default listen port, probes hit /healthz on it, and the
/// container is locked down. Returns the port's name. `check_args` is false only while
/// the binary lacks the mode the args are for.
fn check_exporter_container(c: &Value, help: &str, check_args: bool) -> String {
    let ports = container_ports(c);
    assert_eq!(ports.len(), 1, "the exporter serves on one port: {ports:?}");
    let (port_name, port) = ports[0].clone();
    assert_eq!(
        port,
        u64::from(default_listen_port(help)),
        "containerPort must be the binary's default listen port"
    );
    for arg in array_at(c, "/args").iter().filter(|_| check_args) {
        let arg = arg.as_str().expect("string args");
        let flag = arg.split('=').next().unwrap();
        assert!(
            flag.starts_with("--"),
            "{arg:?}: flags are written --flag=value"
        );
        assert!(
            help_has_flag(help, flag),
            "{flag} is not a flag of the binary"
        );
        assert!(
            !arg.contains('\''),
            "{arg:?}: no shell runs args, quotes stay literal"
        );
    }
    if let Some(env) = c.get("env").and_then(Value::as_array) {
        for var in env {
            let name = str_at(var, "/name");
            assert!(
                help.contains(&format!("[env: {name}=")),
                "{name} is not an environment variable of the binary"
            );
        }
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        let p = &c[probe]["httpGet"];
        assert_eq!(p["path"], HEALTH_PATH, "{probe} path");
        assert!(
            p["port"] == port_name.as_str() || p["port"] == port,
            "{probe} must use the metrics port, not {}",
            p["port"]
        );
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert!(
        sc["runAsUser"].as_u64().is_some_and(|u| u > 0),
        "numeric non-root user"
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(
        c["resources"]["requests"]["memory"].is_string()
            && c["resources"]["limits"]["memory"].is_string(),
        "memory request and limit"
    );
    port_name
}

/// The instructions of each Dockerfile stage, as (INSTRUCTION, arguments), with
/// comments dropped and continuation lines folded.
fn dockerfile_stages(text: &str) -> Vec<Vec<(String, String)>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(t);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for l in logical {
        let (instr, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let instr = instr.to_ascii_uppercase();
        if instr == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("instruction before the first FROM")
            .push((instr, args.trim().to_owned()));
    }
    stages
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn get_json(url: &str) -> Value {
    let (status, body) = http_get(url);
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(hadolint) = tools_bin("hadolint") else {
        return;
    };
    // Default failure threshold: any finding, down to style, fails.
    let out = run_ok(Command::new(hadolint).arg(root().join(DOCKERFILE)));
    assert!(out.trim().is_empty(), "hadolint findings:\n{out}");
}

#[test]
fn dockerfile_runtime_stage_is_static_and_unprivileged() {
    let stages = dockerfile_stages(&read(DOCKERFILE));
    assert!(stages.len() >= 2, "multi-stage build expected");
    let runtime = stages.last().unwrap();
    let from = &runtime[0].1;
    assert!(
        from == "scratch" || from.starts_with("gcr.io/distroless/static"),
        "runtime base must hold no libc: {from}"
    );
    let all = |name: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let user = all("USER");
    assert_eq!(user.len(), 1, "one USER");
    let (uid, gid) = user[0].split_once(':').expect("USER uid:gid");
    let uid: u32 = uid
        .parse()
        .expect("numeric uid, so runAsNonRoot can check it");
    let _: u32 = gid.parse().expect("numeric gid");
    assert_ne!(uid, 0, "non-root user");
    let port = default_listen_port(&exporter_help());
    assert_eq!(all("EXPOSE"), vec![port.to_string().as_str()]);
    assert_eq!(all("ENTRYPOINT"), vec![r#"["/pprof-exporter"]"#]);
    assert!(
        all("CMD").is_empty(),
        "the binary's defaults are the image's"
    );
    // The static link is requested where the binary is built.
    let build: String = stages[..stages.len() - 1]
        .iter()
        .flatten()
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(build.contains("+crt-static") && build.contains("--target"));
    // scripts/build-image.sh builds the binary the same way.
    let flags = |text: &str| {
        let at = text.find("RUSTFLAGS='").expect("RUSTFLAGS set") + "RUSTFLAGS='".len();
        text[at..].split('\'').next().unwrap_or_default().to_owned()
    };
    assert_eq!(flags(&build), flags(&read("scripts/build-image.sh")));
    // Keeping target/ out of the build context keeps gigabytes out of it.
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim_end_matches('/') == "target"));

    // The manifests run the image as the same user.
    let Some(sidecar) = yaml_docs(SIDECAR) else {
        return;
    };
    let deployment = one_of_kind(&sidecar, "Deployment");
    let c = exporter_container(&deployment);
    assert_eq!(c["securityContext"]["runAsUser"], uid);
}

#[test]
fn core_manifests_pass_kubernetes_validate() {
    let Some(validate) = tools_bin("kubernetes-validate") else {
        return;
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join(K8S)).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let rel = path
                .strip_prefix(root())
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let docs = yaml_docs(&rel).unwrap();
            let core = docs
                .iter()
                .all(|d| !str_at(d, "/apiVersion").contains(".coreos.com/"));
            if core {
                files.push((path, docs.len()));
            }
        }
    }
    assert!(files.len() >= 3, "core manifests found: {files:?}");
    for version in KUBERNETES_VERSIONS {
        let out = run_ok(
            Command::new(&validate)
                .args(["--strict", "--kubernetes-version", version])
                .args(files.iter().map(|(p, _)| p)),
        );
        let passed = out
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        let expected: usize = files.iter().map(|(_, n)| n).sum();
        assert_eq!(passed, expected, "Kubernetes {version}:\n{out}");
        assert!(!out.contains("WARN") && !out.contains("ERROR"), "{out}");
    }
}

#[test]
fn sidecar_manifest_agrees_with_the_binary() {
    let Some(docs) = yaml_docs(SIDECAR) else {
        return;
    };
    let help = exporter_help();
    let deployment = one_of_kind(&docs, "Deployment");
    assert_eq!(deployment["apiVersion"], "apps/v1");
    let pod = &deployment["spec"]["template"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    assert_eq!(
        pod["spec"]["shareProcessNamespace"], true,
        "the exporter reads the target's /proc"
    );
    let c = exporter_container(&deployment);
    let port_name = check_exporter_container(&c, &help, true);
    let (_, port) = container_ports(&c)[0].clone();
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], METRICS_PATH);
    assert_eq!(c["resources"]["requests"]["cpu"], "10m");

    let args: Vec<&str> = array_at(&c, "/args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--target=http://localhost:6060"), "{args:?}");
    // Finding the target's PID reads its /proc/<pid>/fd: same user for every container.
    let pod_user = &pod["spec"]["securityContext"]["runAsUser"];
    for other in array_at(pod, "/spec/containers") {
        let user = other["securityContext"]
            .get("runAsUser")
            .unwrap_or(pod_user);
        assert_eq!(
            user, &c["securityContext"]["runAsUser"],
            "{}",
            other["name"]
        );
    }
    // The sidecar discovery job of the monitoring example keeps this port by name.
    if let Some(prom) = yaml_docs(PROMETHEUS_KUBERNETES) {
        let jobs = array_at(&prom[0], "/scrape_configs");
        let keeps_port = jobs
            .iter()
            .flat_map(|j| array_at(j, "/relabel_configs"))
            .any(|r| {
                r["source_labels"] == json!(["__meta_kubernetes_pod_container_port_name"])
                    && r["regex"] == port_name.as_str()
            });
        assert!(
            keeps_port,
            "{PROMETHEUS_KUBERNETES} must keep port {port_name}"
        );
    }

    // The binary accepts the manifest's args and serves what the probes and the
    // annotations ask for.
    let exporter = Exporter::start(&args);
    for path in [HEALTH_PATH, METRICS_PATH] {
        let (status, body) = exporter.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
    }
}

#[test]
fn service_and_monitors_select_the_sidecar() {
    let (Some(sidecar), Some(service), Some(pm), Some(sm)) = (
        yaml_docs(SIDECAR),
        yaml_docs(SERVICE),
        yaml_docs(PODMONITOR),
        yaml_docs(SERVICEMONITOR),
    ) else {
        return;
    };
    let deployment = one_of_kind(&sidecar, "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let c = exporter_container(&deployment);
    let (port_name, port) = container_ports(&c)[0].clone();

    let service = one_of_kind(&service, "Service");
    assert!(selects(&service["spec"]["selector"], pod_labels));
    let sports = array_at(&service, "/spec/ports");
    assert_eq!(sports.len(), 1);
    assert_eq!(sports[0]["port"], port);
    assert_eq!(sports[0]["targetPort"], port_name.as_str());
    let service_port_name = str_at(&sports[0], "/name");

    let pm = one_of_kind(&pm, "PodMonitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert!(selects(&pm["spec"]["selector"]["matchLabels"], pod_labels));
    let endpoints = array_at(&pm, "/spec/podMetricsEndpoints");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], port_name.as_str());
    assert_eq!(endpoints[0]["path"], METRICS_PATH);

    let sm = one_of_kind(&sm, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert!(selects(
        &sm["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    let endpoints = array_at(&sm, "/spec/endpoints");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], service_port_name);
    assert_eq!(endpoints[0]["path"], METRICS_PATH);

    // Both monitors give the dashboard its "app" label, as the plain scrape configs do.
    for monitor in [&pm, &sm] {
        let eps = monitor["spec"]
            .get("podMetricsEndpoints")
            .or(monitor["spec"].get("endpoints"))
            .unwrap();
        let relabel = &eps[0]["relabelings"];
        assert!(
            relabel
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["targetLabel"] == "app")),
            "{}",
            monitor["kind"]
        );
    }
}

#[test]
fn fleet_manifest_agrees_with_the_binary_and_the_scrape_config() {
    let (Some(docs), Some(scrape)) = (yaml_docs(FLEET), yaml_docs(FLEET_SCRAPE)) else {
        return;
    };
    let help = exporter_help();
    // Until the binary has fleet mode at all (no /probe route, no flag that mentions
    // probes), only the manifest's own consistency and its agreement with the scrape
    // configuration can be checked. Once it has (under whatever names), all of it is.
    let fleet_built = help.to_lowercase().contains("probe") || {
        let exporter = Exporter::start(&[]);
        let (status, _) = exporter.get(&format!("/probe?target=127.0.0.1:{}", free_port()));
        status != 404
    };
    let deployment = one_of_kind(&docs, "Deployment");
    let service = one_of_kind(&docs, "Service");
    let c = exporter_container(&deployment);
    let port_name = check_exporter_container(&c, &help, fleet_built);
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        &deployment["spec"]["template"]["metadata"]["labels"]
    ));
    assert!(selects(
        &service["spec"]["selector"],
        &deployment["spec"]["template"]["metadata"]["labels"]
    ));
    let sport = &array_at(&service, "/spec/ports")[0];
    assert_eq!(sport["targetPort"], port_name.as_str());

    // Every probe goes to this Service.
    let address = format!(
        "{}.{}.svc:{}",
        str_at(&service, "/metadata/name"),
        str_at(&service, "/metadata/namespace"),
        sport["port"]
    );
    let job = &array_at(&scrape[0], "/scrape_configs")[0];
    assert_eq!(job["metrics_path"], "/probe");
    let relabel = array_at(job, "/relabel_configs");
    let to_address: Vec<_> = relabel
        .iter()
        .filter(|r| r["target_label"] == "__address__")
        .collect();
    assert_eq!(to_address.len(), 1);
    assert_eq!(to_address[0]["replacement"], address.as_str());
    // The monitoring example's probe job uses the same opt-in and the same Service.
    if let Some(prom) = yaml_docs(PROMETHEUS_KUBERNETES) {
        let text = prom[0].to_string();
        assert!(text.contains(PROBE_ANNOTATION_LABEL) && text.contains(&address));
    }

    let args: Vec<&str> = array_at(&c, "/args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let allow: Vec<_> = args
        .iter()
        .filter(|a| a.starts_with("--probe.allow="))
        .collect();
    assert_eq!(allow.len(), 1, "fleet mode needs an allow-list: {args:?}");
    if !fleet_built {
        eprintln!("SKIP: the binary serves no /probe yet; fleet args not run");
        return;
    }
    // The binary accepts the args, and its allow-list refuses a target outside it (a
    // loopback one, so nothing is contacted even if it did not).
    let exporter = Exporter::start(&args);
    let (status, body) = exporter.get(HEALTH_PATH);
    assert_eq!(status, 200, "{body}");
    let (status, body) = exporter.get(&format!("/probe?target=127.0.0.1:{}", free_port()));
    assert!(
        (400..500).contains(&status),
        "a target outside --probe.allow must be refused, got {status}: {body}"
    );
}

/// Runs the fleet job's relabelling in a real Prometheus: the job is used as written
/// except that file discovery hands it targets labelled as Kubernetes pod discovery
/// labels them (Debian's Prometheus has no Kubernetes discovery), and probes are sent
/// to a closed loopback port instead of the Service.
#[test]
fn fleet_relabelling_turns_annotated_pods_into_probes() {
    let (Some(prometheus), Some(scrape)) = (require_tool("prometheus"), yaml_docs(FLEET_SCRAPE))
    else {
        return;
    };
    let dir = scratch("fleet-relabel");
    let closed = format!("127.0.0.1:{}", free_port());

    // Pod discovery: one target per container port, or one per container without ports.
    let pod = |name: &str, ip: &str, phase: &str, annotation: Option<&str>, port: Option<&str>| {
        let mut labels = json!({
            "__meta_kubernetes_namespace": "shop",
            "__meta_kubernetes_pod_name": name,
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_phase": phase,
            "__meta_kubernetes_pod_label_app_kubernetes_io_name": "checkout",
            "__meta_kubernetes_pod_container_name": "app",
        });
        if let Some(a) = annotation {
            labels[PROBE_ANNOTATION_LABEL] = json!(a);
            labels["__meta_kubernetes_pod_annotationpresent_pprof_exporter_probe_port"] =
                json!("true");
        }
        let address = match port {
            Some(p) => {
                labels["__meta_kubernetes_pod_container_port_number"] = json!(p);
                labels["__meta_kubernetes_pod_container_port_protocol"] = json!("TCP");
                format!("{ip}:{p}")
            }
            None => ip.to_owned(),
        };
        json!({"targets": [address], "labels": labels})
    };
    let groups = json!([
        // Annotated, running, two ports: one probe.
        pod(
            "checkout-a",
            "10.1.2.3",
            "Running",
            Some("6060"),
            Some("8080")
        ),
        pod(
            "checkout-a",
            "10.1.2.3",
            "Running",
            Some("6060"),
            Some("9090")
        ),
        // Annotated, running, no ports.
        pod("checkout-b", "10.1.2.4", "Running", Some("6061"), None),
        // Not annotated, not running, annotation not a port: none.
        pod("checkout-c", "10.1.2.5", "Running", None, Some("8080")),
        pod(
            "checkout-d",
            "10.1.2.6",
            "Pending",
            Some("6060"),
            Some("8080")
        ),
        pod(
            "checkout-e",
            "10.1.2.7",
            "Running",
            Some("pprof"),
            Some("8080")
        ),
    ]);
    let sd_file = dir.join("pods.json");
    std::fs::write(&sd_file, groups.to_string()).unwrap();

    let mut job = array_at(&scrape[0], "/scrape_configs")[0].clone();
    let job_name = str_at(&job, "/job_name").to_owned();
    assert!(job["kubernetes_sd_configs"][0]["role"] == "pod");
    let obj = job.as_object_mut().unwrap();
    obj.remove("kubernetes_sd_configs");
    obj.insert("file_sd_configs".into(), json!([{"files": [sd_file]}]));
    for r in obj["relabel_configs"].as_array_mut().unwrap() {
        if r["target_label"] == "__address__" {
            r["replacement"] = json!(closed);
        }
    }
    // JSON is YAML: Prometheus reads it as it is.
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, json!({"scrape_configs": [job]}).to_string()).unwrap();

    let web = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"));
    let (proc, _) = Proc::spawn(
        cmd,
        "Server is ready to receive web requests",
        Duration::from_secs(60),
    );

    // Discovery reaches the scrape pool within a few seconds (it is throttled to 5s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let active = loop {
        let targets = get_json(&format!("http://{web}/api/v1/targets?state=active"));
        let active = targets["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !active.is_empty() {
            break active;
        }
        assert!(
            Instant::now() < deadline,
            "no active targets; log:\n{}",
            proc.output()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut got: Vec<(String, Value)> = active
        .iter()
        .map(|t| (str_at(t, "/scrapeUrl").to_owned(), t["labels"].clone()))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let expect = |pod: &str, target: &str| {
        (
            format!(
                "http://{closed}/probe?target={}",
                target.replace(':', "%3A")
            ),
            json!({
                "app": "checkout",
                "instance": target,
                "job": job_name,
                "namespace": "shop",
                "pod": pod,
            }),
        )
    };
    assert_eq!(
        got,
        vec![
            expect("checkout-a", "10.1.2.3:6060"),
            expect("checkout-b", "10.1.2.4:6061"),
        ]
    );
}

/// Builds the image as documented, then checks the OCI archive and runs its entrypoint.
#[test]
fn image_builds_static_and_runs() {
    let (Some(_), Some(_), Some(_), Some(chroot)) = (
        require_tool("buildah"),
        require_tool("file"),
        require_tool("tar"),
        require_tool("chroot"),
    ) else {
        return;
    };
    // Cargo gives tests the build script's OUT_DIR; the script must not mistake it.
    let out = run_ok(
        Command::new("bash")
            .arg(root().join("scripts/build-image.sh"))
            .env_remove("IMAGE_OUT_DIR")
            .env_remove("IMAGE_NAME"),
    );
    eprintln!("{out}");
    assert!(out.contains("static-pie linked") || out.contains("statically linked"));
    // The functions in scripts/link-order.txt are still in the code, and lld laid them
    // out together: unordered, they spread over nearly all of it. (rustc links with lld
    // on x86_64 Linux; elsewhere the binary is linked as it comes.)
    let layout = out
        .lines()
        .find_map(|l| l.strip_prefix("build-image: layout: "))
        .expect("layout line");
    let n: Vec<u64> = layout
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [found, listed, span_kb, code_kb] = n[..] else {
        panic!("layout: {layout}")
    };
    assert!(listed >= 500 && found * 10 >= listed * 9, "{layout}");
    if !layout.ends_with("not linked by lld, so not ordered") {
        assert!(layout.ends_with("linked by lld"), "{layout}");
        assert!(span_kb * 2 < code_kb, "{layout}");
    }

    // Unpack the OCI archive: index -> manifest -> config and the single layer.
    let dir = scratch("image");
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(root().join("target/image/pprof-exporter.oci.tar"))
            .arg("-C")
            .arg(&dir),
    );
    let blob = |digest: &str| -> PathBuf {
        dir.join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
    };
    let blob_json = |digest: &str| -> Value {
        serde_json::from_slice(&std::fs::read(blob(digest)).unwrap()).unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = blob_json(str_at(&index, "/manifests/0/digest"));
    let config = blob_json(str_at(&manifest, "/config/digest"));
    let cfg = &config["config"];
    assert_eq!(config["os"], "linux");
    assert_eq!(cfg["Entrypoint"], json!(["/pprof-exporter"]));
    assert!(cfg["Cmd"].is_null(), "no CMD: {cfg}");
    let port = default_listen_port(&exporter_help());
    assert!(
        cfg["ExposedPorts"].get(format!("{port}/tcp")).is_some(),
        "{cfg}"
    );
    let user = str_at(cfg, "/User").to_owned();
    assert!(!user.starts_with("0:") && user.split(':').all(|p| p.parse::<u32>().is_ok()));
    let layers = array_at(&manifest, "/layers");
    assert_eq!(layers.len(), 1, "one layer");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(blob(str_at(&layers[0], "/digest")))
            .arg("-C")
            .arg(&rootfs),
    );
    let mut files = BTreeSet::new();
    list_files(&rootfs, &rootfs, &mut files);
    assert_eq!(
        files,
        BTreeSet::from([
            "etc/ssl/certs/ca-certificates.crt".to_owned(),
            "pprof-exporter".to_owned()
        ]),
        "the image holds the binary and CA roots, nothing else"
    );
    let kind = run_ok(
        Command::new("file")
            .arg("-b")
            .arg(rootfs.join("pprof-exporter")),
    );
    assert!(kind.contains("static"), "{kind}");

    // Run the entrypoint with no arguments from the image's file tree, as its user;
    // the environment moves the listener to a free loopback port and the target to a
    // real Go service. Like the kubelet, provide /etc/hosts, so "localhost" resolves
    // with no libc or NSS modules in the image.
    let is_root = run_ok(Command::new("id").arg("-u")).trim() == "0";
    if !is_root {
        assert!(!ci(), "CI runs as root");
        eprintln!("SKIP: running the image's entrypoint needs chroot, so root");
        return;
    }
    std::fs::write(
        rootfs.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    .unwrap();
    let leaky = Leaky::start(Go::V119, &[]);
    let target = leaky
        .as_ref()
        .map(|l| format!("http://localhost:{}", l.port()));
    let entrypoint: Vec<String> = serde_json::from_value(cfg["Entrypoint"].clone()).unwrap();
    let mut cmd = Command::new(chroot);
    cmd.arg(format!("--userspec={user}"))
        .arg(&rootfs)
        .args(&entrypoint)
        .env_clear()
        .env("PPROF_EXPORTER_WEB_LISTEN_ADDRESS", "127.0.0.1:0")
        .env("PPROF_EXPORTER_SCRAPE_INTERVAL", "1s")
        .env("NO_COLOR", "1");
    if let Some(t) = &target {
        cmd.env("PPROF_EXPORTER_TARGET", t);
    }
    let (proc, line) = Proc::spawn(cmd, "serving", Duration::from_secs(30));
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("address="))
        .unwrap_or_else(|| panic!("no address= in {line:?}"))
        .trim_matches('"')
        .to_owned();
    let (status, body) = http_get(&format!("http://{addr}{HEALTH_PATH}"));
    assert_eq!(status, 200, "{body}");
    let Some(target) = target else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(&format!("http://{addr}{METRICS_PATH}"));
        assert_eq!(status, 200);
        let m = Metrics::parse(&body);
        if m.get("pprof_up", &[("target", &target)]) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pprof_up never reached 1:\n{body}\nlog:\n{}",
            proc.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn list_files(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            list_files(base, &path, out);
        } else {
            out.insert(
                path.strip_prefix(base)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
}

#[test]
fn dockerfile_parser_folds_continuations_and_stages() {
    let stages = dockerfile_stages(
        "# c\nFROM a AS b\nRUN x \\\n  y\n\nFROM scratch\ncopy --from=b / /\nUSER 1:1\n",
    );
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0][1], ("RUN".to_owned(), "x  y".to_owned()));
    assert_eq!(stages[1][1].0, "COPY");
    assert_eq!(stages[1][2], ("USER".to_owned(), "1:1".to_owned()));
}

#[test]
fn flags_are_found_in_help() {
    let help =
        "Options:\n      --target <TARGETS>\n          Base URL\n      --heap.gc\n  -h, --help\n";
    assert!(help_has_flag(help, "--target"));
    assert!(help_has_flag(help, "--heap.gc"));
    assert!(help_has_flag(help, "--help"));
    assert!(!help_has_flag(help, "--heap"));
    assert!(!help_has_flag(help, "Base"));
}

#[test]
fn default_port_is_read_from_help() {
    let help = "      --web.listen-address <LISTEN>\n          Address [env: X=] [default: 0.0.0.0:10060]\n      --log.level <L>\n          [default: info]\n";
    assert_eq!(default_listen_port(help), 10060);
}
