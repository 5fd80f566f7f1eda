//! The real-control-plane harness shared by the test files that run through `e2e/k8s/test`:
//! kubectl and helm with the plane's kubeconfig, the CRD and the chart's RBAC installed once,
//! and the operator under test as a subprocess with a token bound to exactly that RBAC.
#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::Client;

pub const SYSTEM_NS: &str = "sqe-system";

pub fn repo() -> PathBuf {
    // Read at run time: the cargo target dir is shared between checkouts at different
    // paths, so a compile-time path can point at another (or a vanished) checkout.
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run through cargo test"))
        .join("..")
}

pub fn state_dir() -> PathBuf {
    PathBuf::from(std::env::var("SQE_K8S_STATE").expect("run through e2e/k8s/test (SQE_K8S_STATE)"))
}

pub fn kubectl_bin() -> String {
    std::env::var("SQE_KUBECTL").expect("run through e2e/k8s/test (SQE_KUBECTL)")
}

pub fn kubectl_in(stdin: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(kubectl_bin());
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("kubectl");
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

/// kubectl that must succeed; returns stdout.
pub fn kubectl(args: &[&str]) -> String {
    let out = kubectl_in(None, args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn kubectl_apply(ns: &str, yaml: &str) {
    let out = kubectl_in(Some(yaml), &["apply", "-n", ns, "-f", "-"]);
    assert!(
        out.status.success(),
        "apply: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn ensure_namespace(ns: &str) {
    let out = kubectl_in(None, &["get", "namespace", ns]);
    if !out.status.success() {
        kubectl(&["create", "namespace", ns]);
    }
    // Pods are admitted only once the namespace's default ServiceAccount exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubectl_in(None, &["get", "-n", ns, "serviceaccount", "default"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "no default ServiceAccount in {ns}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub const RELEASE: &str = "sqe-operator";

pub fn helm(args: &[&str]) -> String {
    let bin = std::env::var("SQE_HELM").expect("run through e2e/k8s/test (SQE_HELM)");
    let out = Command::new(bin).args(args).output().expect("helm");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn chart_dir() -> String {
    repo()
        .join("charts/sqe-operator")
        .to_str()
        .unwrap()
        .to_string()
}

/// Waits until the SqeCluster CRD is Established. Right after an apply the CRD may have no
/// status yet, and `kubectl wait` then fails at once ("accessor error: <nil>") instead of
/// waiting: retried for a while, then asserted.
pub fn wait_for_crd() {
    let wait = [
        "wait",
        "--for=condition=Established",
        "crd/sqeclusters.sqe.io",
        "--timeout=60s",
    ];
    for _ in 0..30 {
        if kubectl_in(None, &wait).status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    kubectl(&wait);
}

/// Once per test binary: install the CRD and exactly the chart's ServiceAccount and RBAC
/// (rendered by `helm template`), and write a kubeconfig holding a token of that
/// ServiceAccount, which every operator under test uses.
pub fn setup() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        kubectl(&["apply", "--server-side", "--force-conflicts", "-f",
                  repo().join("crds/sqecluster.yaml").to_str().unwrap()]);
        wait_for_crd();
        ensure_namespace(SYSTEM_NS);
        let rbac = helm(&["template", RELEASE, &chart_dir(), "-n", SYSTEM_NS,
            "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"]);
        kubectl_apply(SYSTEM_NS, &rbac);
        let token = kubectl(&["create", "token", RELEASE, "-n", SYSTEM_NS, "--duration=2h"]);
        // Same server and CA as the admin kubeconfig; only the credential differs.
        let admin = std::fs::read_to_string(std::env::var("KUBECONFIG").unwrap()).unwrap();
        let cluster_block = admin.split("\nusers:").next().unwrap().to_string();
        let kc = format!(
            "{cluster_block}\nusers:\n- name: sqe-operator\n  user:\n    token: {}\ncontexts:\n- name: op\n  context: {{cluster: sqe, user: sqe-operator}}\ncurrent-context: op\n",
            token.trim()
        );
        let path = state_dir().join("operator.kubeconfig");
        std::fs::write(&path, kc).unwrap();
        // The credential really is the limited one.
        let kc = path.to_str().unwrap().to_string();
        let can = |args: &[&str]| {
            let mut a = vec!["--kubeconfig", kc.as_str(), "auth", "can-i"];
            a.extend_from_slice(args);
            String::from_utf8_lossy(&kubectl_in(None, &a).stdout).trim().to_string()
        };
        // Secrets: read to hash them, created once for a session store, never changed.
        for verb in ["delete", "update", "patch"] {
            assert_eq!(can(&[verb, "secrets"]), "no", "operator token is over-privileged");
        }
        assert_eq!(can(&["create", "secrets"]), "yes");
        assert_eq!(can(&["delete", "sqeclusters.sqe.io"]), "no", "operator token is over-privileged");
        assert_eq!(can(&["patch", "deployments"]), "yes");
        // The sweep deletes stale objects of every kind it manages.
        assert_eq!(can(&["delete", "deployments"]), "yes");
        path
    })
}

pub struct Operator {
    child: Child,
    pub identity: String,
    metrics: u16,
    log: PathBuf,
}

impl Operator {
    pub fn start(ns: &str, lease: &str, identity: &str) -> Self {
        let kubeconfig = setup();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = state_dir().join(format!("operator-{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sqe-operator"))
            .args([
                "run",
                "--namespace",
                ns,
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--lease-namespace",
                SYSTEM_NS,
                "--lease-name",
                lease,
                "--identity",
                identity,
                "--lease-duration-seconds",
                "6",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,sqe_operator=debug,kube=warn")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start sqe-operator");
        Self {
            child,
            identity: identity.into(),
            metrics: port,
            log,
        }
    }

    pub fn metric(&self, name: &str) -> f64 {
        let out = Command::new("curl")
            .args([
                "-fsS",
                &format!("http://127.0.0.1:{}/metrics", self.metrics),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn writes(&self) -> f64 {
        self.metric("sqe_operator_writes_total")
    }

    /// Deletes sent by the sweep (the `writes` series with verb="delete").
    pub fn deletes(&self) -> f64 {
        let out = Command::new("curl")
            .args([
                "-fsS",
                &format!("http://127.0.0.1:{}/metrics", self.metrics),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.starts_with("sqe_operator_writes_total") && l.contains(r#"verb="delete""#)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn is_leader(&self) -> bool {
        self.metric("sqe_operator_leader ") == 1.0
    }

    /// SIGTERM (the operator releases its Lease), then wait.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if std::thread::panicking() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<_> = log.lines().rev().take(40).collect();
                eprintln!("--- operator {} log (last lines) ---", self.identity);
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

pub async fn client() -> Client {
    Client::try_default().await.expect("admin kubeconfig")
}

pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The `oidc` Secret a test cluster references.
pub fn secret_yaml(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: oidc}}\nstringData: {{client-secret: {value}}}\n"
    )
}

/// A SqeCluster with the fields every test needs; `engine_extra` goes under `spec.engine`,
/// `spec_extra` under `spec` (each line indented and ending in a newline).
pub fn cluster_yaml(name: &str, engine_extra: &str, spec_extra: &str) -> String {
    format!(
        r#"apiVersion: sqe.io/v1alpha1
kind: SqeCluster
metadata: {{name: {name}}}
spec:
  oidc:
    keycloak: {{url: "http://keycloak:8080", realm: sqe}}
    clientId: sqe
    clientSecretRef: {{name: oidc, key: client-secret}}
  polaris: {{uri: "http://polaris:8181/api/catalog", warehouse: lake}}
  engine:
    image: sqe-engine:test
{engine_extra}{spec_extra}"#
    )
}
