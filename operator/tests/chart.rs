//! The Helm chart (`charts/sqe-operator`) on a real control plane (`e2e/k8s/up`): installed,
//! upgraded and uninstalled with `helm`, its values checked by the schema, its RBAC proven
//! sufficient (the operator, run with the token of the ServiceAccount `helm install` created,
//! reconciles a SqeCluster to Ready) and no broader than it must be (`kubectl auth can-i`).
//!
//! KWOK runs the chart's operator pods without containers, so the operator under test is this
//! workspace's binary, started on the host with the Deployment's own arguments and that
//! ServiceAccount's token. Ignored by default; `e2e/k8s/test` runs them with `--ignored`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

// ---------------------------------------------------------------------------------------------
// Harness: kubectl, helm, tokens, the operator as a host process.

fn repo() -> PathBuf {
    // Read at run time: the cargo target dir may be shared between checkouts.
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run through cargo test"))
        .join("..")
}

fn chart() -> String {
    repo()
        .join("charts/sqe-operator")
        .to_str()
        .unwrap()
        .to_string()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("run through e2e/k8s/test ({name})"))
}

fn run(bin: &str, stdin: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{bin}: {e}"));
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn must(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubectl_out(stdin: Option<&str>, args: &[&str]) -> Output {
    run(&env("SQE_KUBECTL"), stdin, args)
}

fn kubectl(args: &[&str]) -> String {
    must(&format!("kubectl {args:?}"), kubectl_out(None, args))
}

fn kubectl_apply(ns: &str, yaml: &str) {
    must(
        &format!("apply\n{yaml}"),
        kubectl_out(Some(yaml), &["apply", "-n", ns, "-f", "-"]),
    );
}

fn get_json(args: &[&str]) -> Value {
    let mut a = vec!["get", "-o", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&kubectl(&a)).unwrap()
}

fn exists(args: &[&str]) -> bool {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    kubectl_out(None, &a).status.success()
}

fn helm_out(args: &[&str]) -> Output {
    run(&env("SQE_HELM"), None, args)
}

fn helm(args: &[&str]) -> String {
    must(&format!("helm {args:?}"), helm_out(args))
}

/// `helm install` that must fail; returns its stderr.
fn helm_install_refused(release: &str, set: &[&str]) -> String {
    let mut args = vec!["install", release, &*CHART, "-n", "default"];
    for s in set {
        args.extend(["--set", s]);
    }
    let out = helm_out(&args);
    assert!(!out.status.success(), "helm install {set:?} was accepted");
    assert!(
        !helm_out(&["status", release, "-n", "default"])
            .status
            .success(),
        "a refused install left a release behind"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

static CHART: std::sync::LazyLock<String> = std::sync::LazyLock::new(chart);

fn ensure_namespace(ns: &str) {
    if !exists(&["namespace", ns]) {
        kubectl(&["create", "namespace", ns]);
    }
    eventually(&format!("default ServiceAccount in {ns}"), 60, || {
        exists(&["-n", ns, "serviceaccount", "default"]).then_some(())
    });
}

fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The chart's resource name for a release (`<release>-sqe-operator`, as `_helpers.tpl`).
fn chart_name(release: &str) -> String {
    if release.contains("sqe-operator") {
        release.to_string()
    } else {
        format!("{release}-sqe-operator")
    }
}

/// A kubeconfig for the API server of the admin kubeconfig with a fresh token of the
/// ServiceAccount `ns/sa` (the one `helm install` created) as the only credential.
fn service_account_kubeconfig(ns: &str, sa: &str) -> PathBuf {
    let token = kubectl(&["create", "token", sa, "-n", ns, "--duration=1h"]);
    let admin = std::fs::read_to_string(env("KUBECONFIG")).unwrap();
    let cluster_block = admin.split("\nusers:").next().unwrap();
    let kc = format!(
        "{cluster_block}\nusers:\n- name: {sa}\n  user:\n    token: {}\ncontexts:\n- name: sa\n  context: {{cluster: sqe, user: {sa}}}\ncurrent-context: sa\n",
        token.trim()
    );
    let path = PathBuf::from(env("SQE_K8S_STATE")).join(format!("{ns}-{sa}.kubeconfig"));
    std::fs::write(&path, kc).unwrap();
    path
}

/// `kubectl auth can-i ARGS` with the given credential.
fn can_i(kubeconfig: &Path, args: &[&str]) -> bool {
    let mut a = vec![
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "auth",
        "can-i",
    ];
    a.extend_from_slice(args);
    let out = kubectl_out(None, &a);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "can-i {args:?}: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
}

/// The operator binary started with the arguments of the chart's Deployment (its metrics
/// address moved to a free loopback port) and the ServiceAccount's token.
struct Operator {
    child: Child,
    metrics: u16,
    log: PathBuf,
}

impl Operator {
    fn from_deployment(ns: &str, deployment: &str, kubeconfig: &Path) -> Self {
        let d = get_json(&["-n", ns, "deployment", deployment]);
        let container = &d["spec"]["template"]["spec"]["containers"][0];
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .map(|a| {
                if a.starts_with("--metrics-addr=") {
                    format!("--metrics-addr=127.0.0.1:{port}")
                } else {
                    a
                }
            })
            .collect();
        let rust_log = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "RUST_LOG")
            .and_then(|e| e["value"].as_str())
            .unwrap()
            .to_string();
        let log = PathBuf::from(env("SQE_K8S_STATE")).join(format!("operator-{deployment}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sqe-operator"))
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            // What the Deployment's downward API would give the pod.
            .env("POD_NAMESPACE", ns)
            .env("POD_NAME", format!("{deployment}-host"))
            .env("RUST_LOG", rust_log)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start sqe-operator");
        Self {
            child,
            metrics: port,
            log,
        }
    }

    fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args([
                "-fsS",
                &format!("http://127.0.0.1:{}/metrics", self.metrics),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_leading(&mut self) {
        eventually("the operator leads", 60, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the operator exited ({status}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            self.metrics()
                .lines()
                .any(|l| l == "sqe_operator_leader 1")
                .then_some(())
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<_> = log.lines().rev().take(40).collect();
            eprintln!("--- operator log (last lines) ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// The Secret and SqeCluster the chart's tests apply: the shared builders, one replica.
fn secret_yaml() -> String {
    common::secret_yaml("s1")
}

fn cluster_yaml(name: &str, spec_extra: &str) -> String {
    common::cluster_yaml(name, "    replicas: 1\n", spec_extra)
}

fn wait_cluster_ready(ns: &str, name: &str) {
    must(
        &format!("{ns}/{name} Ready"),
        kubectl_out(
            None,
            &[
                "wait",
                "-n",
                ns,
                "--for=condition=Ready",
                &format!("sqecluster/{name}"),
                "--timeout=120s",
            ],
        ),
    );
}

fn template_kinds(set: &[&str]) -> Vec<String> {
    let mut args = vec!["template", "r", &*CHART, "-n", "sys"];
    for s in set {
        args.extend(["--set", s]);
    }
    helm(&args)
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The specification.

#[test]
#[ignore = "needs the control plane: e2e/k8s/test"]
fn the_chart_lints_and_its_schema_refuses_typos_and_wrong_types_naming_the_key() {
    helm(&["lint", "--strict", &CHART]);
    helm(&[
        "lint",
        "--strict",
        &CHART,
        "--set",
        "watchNamespaces={a,b}",
        "--set",
        "metrics.serviceMonitor.enabled=true",
    ]);

    // A misspelt key, at the top and nested.
    let err = helm_install_refused("typo", &["replicaCont=2"]);
    assert!(
        err.contains("additional properties 'replicaCont' not allowed"),
        "{err}"
    );
    let err = helm_install_refused("typo", &["securityContext.runAsUsr=1"]);
    assert!(
        err.contains("'/securityContext'") && err.contains("'runAsUsr' not allowed"),
        "{err}"
    );
    // A wrong type, a value outside an enum, a string where a list belongs.
    let err = helm_install_refused("typo", &["replicaCount=two"]);
    assert!(
        err.contains("'/replicaCount'") && err.contains("want integer"),
        "{err}"
    );
    let err = helm_install_refused("typo", &["logLevel=loud"]);
    assert!(err.contains("'/logLevel'"), "{err}");
    let err = helm_install_refused("typo", &["watchNamespaces=team-a"]);
    assert!(
        err.contains("'/watchNamespaces'") && err.contains("want array"),
        "{err}"
    );

    // Optional objects appear only when asked for.
    let default = template_kinds(&[]);
    assert!(
        !default.iter().any(|k| k == "ServiceMonitor"),
        "{default:?}"
    );
    assert!(default.iter().any(|k| k == "PodDisruptionBudget"));
    let optional = template_kinds(&[
        "metrics.serviceMonitor.enabled=true",
        "podDisruptionBudget.enabled=false",
    ]);
    assert!(optional.iter().any(|k| k == "ServiceMonitor"));
    assert!(!optional.iter().any(|k| k == "PodDisruptionBudget"));
    // Role mode: namespaced grants only, plus the by-name CRD rule.
    let role_mode = template_kinds(&["watchNamespaces={a,b}"]);
    assert_eq!(role_mode.iter().filter(|k| *k == "Role").count(), 3); // a, b, leader lease
    assert_eq!(role_mode.iter().filter(|k| *k == "ClusterRole").count(), 1);
    let no_crd = template_kinds(&["watchNamespaces={a,b}", "crd.apply=false"]);
    assert!(
        !no_crd
            .iter()
            .any(|k| k == "ClusterRole" || k == "ClusterRoleBinding")
    );
}

#[test]
#[ignore = "needs the control plane: e2e/k8s/test"]
fn in_role_mode_helm_installs_upgrades_and_uninstalls_an_operator_confined_to_its_namespaces() {
    let (op_ns, team_a, team_b, other) =
        ("chart-op", "chart-team-a", "chart-team-b", "chart-other");
    for ns in [op_ns, team_a, team_b, other] {
        ensure_namespace(ns);
    }
    let release = "sqe-ro";
    let name = chart_name(release);
    helm(&[
        "install",
        release,
        &CHART,
        "-n",
        op_ns,
        "--set",
        &format!("watchNamespaces={{{team_a},{team_b}}}"),
        "--set",
        "imagePullSecrets[0].name=regcred",
        "--wait",
        "--timeout=120s",
    ]);

    // The Deployment runs hardened (KWOK makes its pods Ready without containers).
    let d = get_json(&["-n", op_ns, "deployment", &name]);
    assert_eq!(d["status"]["readyReplicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(exists(&["-n", op_ns, "poddisruptionbudget", &name]));

    // What the ServiceAccount may do: its own namespaces, its own CRD, nothing else.
    let kc = service_account_kubeconfig(op_ns, &name);
    for (args, allowed) in [
        (vec!["get", "secrets", "-n", team_a], true), // to hash referenced values
        (vec!["watch", "secrets", "-n", team_b], true),
        (vec!["list", "secrets", "--all-namespaces"], false),
        (vec!["get", "secrets", "-n", other], false),
        (vec!["get", "secrets", "-n", op_ns], false),
        // A session store's Secrets are generated once, only in a watched namespace.
        (vec!["create", "secrets", "-n", team_a], true),
        (vec!["create", "secrets", "-n", other], false),
        (vec!["update", "secrets", "-n", team_a], false),
        (vec!["patch", "secrets", "-n", team_a], false),
        (vec!["delete", "secrets", "-n", team_a], false),
        (vec!["list", "sqeclusters.sqe.io", "-n", team_a], true),
        (
            vec!["list", "sqeclusters.sqe.io", "--all-namespaces"],
            false,
        ),
        (vec!["update", "sqeclusters.sqe.io", "-n", team_a], false), // status only
        (vec!["patch", "deployments", "-n", team_a], true),
        (vec!["patch", "deployments", "-n", other], false),
        (vec!["create", "pods", "-n", team_a], false),
        (
            vec!["patch", "customresourcedefinitions/sqeclusters.sqe.io"],
            true,
        ),
        (
            vec!["patch", "customresourcedefinitions/other.example.com"],
            false,
        ),
        (vec!["create", "customresourcedefinitions"], false),
        (
            vec!["delete", "customresourcedefinitions/sqeclusters.sqe.io"],
            false,
        ),
        (vec!["create", "rolebindings", "-n", team_a], false),
        (vec!["create", "clusterroles"], false),
        (vec!["update", "leases", "-n", op_ns], true), // leader election
        (vec!["update", "leases", "-n", team_a], false),
    ] {
        assert_eq!(can_i(&kc, &args), allowed, "can-i {args:?}");
    }

    // With exactly that token the operator reconciles a SqeCluster in a watched namespace to
    // Ready, and leaves one in an unwatched namespace alone.
    let mut op = Operator::from_deployment(op_ns, &name, &kc);
    op.wait_leading();
    kubectl_apply(team_a, &secret_yaml());
    kubectl_apply(team_a, &cluster_yaml("lake", ""));
    kubectl_apply(other, &secret_yaml());
    kubectl_apply(other, &cluster_yaml("stray", ""));
    wait_cluster_ready(team_a, "lake");
    assert!(exists(&["-n", team_a, "deployment", "lake"]));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!exists(&["-n", other, "deployment", "stray"]));
    assert_eq!(
        get_json(&["-n", other, "sqecluster", "stray"])["status"],
        Value::Null
    );
    assert!(
        !op.log().contains("forbidden"),
        "the operator was refused something:\n{}",
        op.log()
    );

    // An upgrade that changes nothing leaves the pods alone; a changed value rolls them.
    let generation = |d: &Value| d["metadata"]["generation"].as_i64().unwrap();
    let g0 = generation(&d);
    helm(&[
        "upgrade",
        release,
        &CHART,
        "-n",
        op_ns,
        "--reuse-values",
        "--wait",
        "--timeout=120s",
    ]);
    assert_eq!(
        generation(&get_json(&["-n", op_ns, "deployment", &name])),
        g0
    );
    helm(&[
        "upgrade",
        release,
        &CHART,
        "-n",
        op_ns,
        "--reuse-values",
        "--set",
        "logLevel=debug",
        "--wait",
        "--timeout=120s",
    ]);
    let d1 = get_json(&["-n", op_ns, "deployment", &name]);
    assert!(generation(&d1) > g0, "the pod template did not change");
    let env = d1["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains("debug,kube=warn"), "{env}");
    must(
        "rollout",
        kubectl_out(
            None,
            &[
                "-n",
                op_ns,
                "rollout",
                "status",
                &format!("deployment/{name}"),
                "--timeout=120s",
            ],
        ),
    );
    assert_eq!(d1["status"]["updatedReplicas"], 2);
    let replica_sets = get_json(&[
        "-n",
        op_ns,
        "replicasets",
        "-l",
        "app.kubernetes.io/instance=sqe-ro",
    ]);
    assert_eq!(
        replica_sets["items"].as_array().unwrap().len(),
        2,
        "a new ReplicaSet rolled the pods"
    );

    // Uninstall removes the operator and its grants, never the API or the users' clusters.
    drop(op);
    helm(&[
        "uninstall",
        release,
        "-n",
        op_ns,
        "--wait",
        "--timeout=120s",
    ]);
    assert!(!exists(&["-n", op_ns, "deployment", &name]));
    assert!(!exists(&["-n", team_a, "role", &name]));
    assert!(!exists(&["clusterrole", &format!("{name}-crd")]));
    assert!(exists(&["crd", "sqeclusters.sqe.io"]));
    assert!(exists(&["-n", team_a, "sqecluster", "lake"]));
    assert!(
        exists(&["-n", team_a, "deployment", "lake"]),
        "the engine kept running"
    );
    kubectl(&["delete", "-n", team_a, "sqecluster/lake"]);
    kubectl(&["delete", "-n", other, "sqecluster/stray"]);
}

#[test]
#[ignore = "needs the control plane: e2e/k8s/test"]
fn the_operator_upgrades_an_older_crd_so_a_new_field_is_accepted() {
    let (op_ns, apps) = ("chart-cw", "chart-cw-apps");
    ensure_namespace(op_ns);
    ensure_namespace(apps);
    let release = "sqe-cw";
    let name = chart_name(release);
    // Cluster mode (no watchNamespaces): the broader grant the README warns about.
    helm(&[
        "install",
        release,
        &CHART,
        "-n",
        op_ns,
        "--wait",
        "--timeout=120s",
    ]);
    let kc = service_account_kubeconfig(op_ns, &name);
    assert!(can_i(&kc, &["list", "secrets", "--all-namespaces"]));
    assert!(can_i(&kc, &["create", "secrets", "-n", apps]));
    assert!(!can_i(&kc, &["update", "secrets", "-n", apps]));
    assert!(!can_i(
        &kc,
        &["delete", "customresourcedefinitions/sqeclusters.sqe.io"]
    ));
    assert!(!can_i(
        &kc,
        &["patch", "customresourcedefinitions/other.example.com"]
    ));

    // The CRD as an older release shipped it: without `spec.disruption`. A replace, not an
    // apply, so the field really goes (apply would keep fields other managers own).
    let mut crd: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("crds/sqecluster.yaml")).unwrap(),
    )
    .unwrap();
    let spec_props = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    assert!(
        spec_props
            .as_mapping_mut()
            .unwrap()
            .remove("disruption")
            .is_some(),
        "pick another field: spec.disruption is gone from the CRD"
    );
    // The current resourceVersion: the API server refuses unconditional updates of CRDs.
    let rv = get_json(&["crd", "sqeclusters.sqe.io"])["metadata"]["resourceVersion"].clone();
    crd["metadata"]["resourceVersion"] = serde_yaml::Value::String(rv.as_str().unwrap().into());
    let old = serde_yaml::to_string(&crd).unwrap();
    must(
        "replace with the old CRD",
        kubectl_out(Some(&old), &["replace", "-f", "-"]),
    );
    let with_field = cluster_yaml("lake", "  disruption: {maxUnavailable: 2}\n");
    let dry_run = || {
        kubectl_out(
            Some(&with_field),
            &[
                "apply",
                "--dry-run=server",
                "--validate=strict",
                "-n",
                apps,
                "-f",
                "-",
            ],
        )
    };
    eventually("the old schema is served", 30, || {
        let out = dry_run();
        let err = String::from_utf8_lossy(&out.stderr);
        (!out.status.success() && err.contains("unknown field \"spec.disruption\"")).then_some(())
    });

    // The operator, started as the chart runs it (`--apply-crd`) with the chart's token,
    // brings the CRD to its own version before it reconciles.
    let mut op = Operator::from_deployment(op_ns, &name, &kc);
    op.wait_leading();
    eventually("the new field is accepted", 30, || {
        dry_run().status.success().then_some(())
    });
    let managers = get_json(&["crd", "sqeclusters.sqe.io", "--show-managed-fields"])["metadata"]
        ["managedFields"]
        .to_string();
    assert!(managers.contains("sqe-operator-crd"), "{managers}");
    kubectl_apply(apps, &secret_yaml());
    kubectl_apply(apps, &with_field);
    wait_cluster_ready(apps, "lake");
    let pdb = get_json(&["-n", apps, "poddisruptionbudget", "lake"]);
    assert_eq!(
        pdb["spec"]["maxUnavailable"], 2,
        "the new field took effect"
    );

    drop(op);
    helm(&[
        "uninstall",
        release,
        "-n",
        op_ns,
        "--wait",
        "--timeout=120s",
    ]);
    assert!(exists(&["crd", "sqeclusters.sqe.io"]));
    assert!(exists(&["-n", apps, "sqecluster", "lake"]));
    kubectl(&["delete", "-n", apps, "sqecluster/lake"]);
}
