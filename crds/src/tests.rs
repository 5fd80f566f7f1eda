use super::*;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    // Read at run time: the cargo target dir is shared between checkouts at different
    // paths, so a compile-time path can point at another (or a vanished) checkout.
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run through cargo test"))
}

/// Every YAML document of kind SqeCluster in a file.
pub(crate) fn clusters_in(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some("SqeCluster"))
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn committed_crd_matches_the_types() {
    // Regenerate with `cargo run -p sqe-operator -- crd > crds/sqecluster.yaml`.
    let path = root().join("sqecluster.yaml");
    let want = crd_yaml().unwrap();
    let chart_copy = root().join("../charts/sqe-operator/crds/sqecluster.yaml");
    if std::env::var_os("SQE_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
        std::fs::write(&chart_copy, &want).unwrap();
    }
    // Helm installs CRDs from the chart's own crds/ folder; it must be the same file.
    let chart = std::fs::read_to_string(&chart_copy).unwrap_or_default();
    assert!(
        chart == want,
        "charts/sqe-operator/crds/sqecluster.yaml is stale: copy crds/sqecluster.yaml"
    );
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "crds/sqecluster.yaml is stale: run `cargo run -p sqe-operator -- crd > crds/sqecluster.yaml`"
    );
}

#[test]
fn crd_identity_and_printer_columns() {
    let crd = SqeCluster::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("sqeclusters.sqe.io"));
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["sqe".to_string()]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let cols: Vec<_> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Ready", "Replicas", "Endpoint", "Age"]);
}

#[test]
fn schema_carries_the_cross_field_rules() {
    let text = serde_json::to_string(&SqeCluster::crd()).unwrap();
    for rule in [
        "has(self.keycloak) != has(self.issuer)",
        "!(has(self.replicas) && has(self.autoscaling))",
        "self.minReplicas <= self.maxReplicas",
        "isQuantity(self)",
    ] {
        assert!(text.contains(rule), "missing CEL rule {rule}");
    }
}

#[test]
fn valid_examples_deserialize_with_defaults() {
    let files = yaml_files(&root().join("examples"));
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let docs = clusters_in(&f);
        assert_eq!(docs.len(), 1, "{}: one SqeCluster per example", f.display());
        let c: SqeCluster = serde_json::from_value(docs[0].clone())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(!c.spec.oidc.modes.is_empty());
        assert_eq!(
            c.spec.oidc.keycloak.is_some(),
            c.spec.oidc.issuer.is_none(),
            "{}",
            f.display()
        );
    }
}

#[test]
fn invalid_examples_say_what_the_api_server_must_answer() {
    let files = yaml_files(&root().join("examples/invalid"));
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.lines().any(|l| l.starts_with("# expect: ")),
            "{}: needs a `# expect: <message part>` line",
            f.display()
        );
        assert_eq!(clusters_in(&f).len(), 1, "{}", f.display());
    }
}

#[test]
fn defaults_are_filled_in() {
    let c: SqeClusterSpec = serde_json::from_value(serde_json::json!({
        "oidc": {"issuer": "https://idp.example", "clientId": "sqe"},
        "polaris": {"uri": "http://polaris:8181/api/catalog", "warehouse": "lake"},
        "engine": {"image": "sqe:1"}
    }))
    .unwrap();
    assert_eq!(c.oidc.modes, vec![AuthMode::Password]);
    assert_eq!(c.service.port, 50051);
    assert_eq!(c.service.type_, ServiceType::ClusterIP);
    assert_eq!(c.engine.image_pull_policy, PullPolicy::IfNotPresent);
    assert_eq!(c.engine.log_level, LogLevel::Info);
}
