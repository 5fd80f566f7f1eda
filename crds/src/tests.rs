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
    assert_eq!(
        cols,
        [
            "Ready",
            "Replicas",
            "Ready Replicas",
            "Paused",
            "Endpoint",
            "Reason",
            "Age"
        ]
    );
}

#[test]
fn the_scale_subresource_drives_engine_replicas_and_reports_the_pods_selector() {
    let crd = SqeCluster::crd();
    let scale = crd.spec.versions[0]
        .subresources
        .as_ref()
        .unwrap()
        .scale
        .clone()
        .expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.engine.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    // Each path names a field the types really have.
    let s = serde_json::to_value(SqeClusterStatus {
        selector: Some("a=b".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s["selector"], "a=b");
    assert_eq!(s["replicas"], 0);
}

#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
            return;
        };
        for (name, sub) in props {
            let here = format!("{path}.{name}");
            if sub.get("description").is_none() {
                missing.push(here.clone());
            }
            walk(&here, sub, missing);
            if let Some(items) = sub.get("items") {
                walk(&format!("{here}[]"), items, missing);
            }
        }
    }
    let crd = serde_json::to_value(SqeCluster::crd()).unwrap();
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let mut missing = Vec::new();
    walk("spec", &root["spec"], &mut missing);
    walk("status", &root["status"], &mut missing);
    assert!(missing.is_empty(), "no description: {missing:#?}");
    // Our doc comments reach kubectl explain as one line per paragraph, not cut at the
    // source's 100 columns.
    let spec = &root["spec"];
    for d in [
        &spec["description"],
        &spec["properties"]["clusterOperation"]["properties"]["reconciliationPaused"]["description"],
        &spec["properties"]["engine"]["properties"]["replicas"]["description"],
    ] {
        let d = d.as_str().unwrap();
        assert!(!d.contains('\n'), "{d}");
    }
}

#[test]
fn schema_carries_the_cross_field_rules() {
    let text = serde_json::to_string(&SqeCluster::crd()).unwrap();
    for rule in [
        "has(self.keycloak) != has(self.issuer)",
        "!(has(self.replicas) && has(self.autoscaling))",
        "self.minReplicas <= self.maxReplicas",
        "isQuantity(self)",
        "!e.name.startsWith('SQE_')",
        "!(v.name in ['config', 'tmp', 'tls', 'catalog-ca', 'session-keys', 'session-store-ca'])",
        "has(self.managed) != has(self.external)",
        "self.matches('^rediss?://[^/@]+/?$')",
        "!m.mountPath.startsWith('/etc/sqe/')",
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

#[test]
fn reserved_names_in_the_cel_rules_are_the_published_constants() {
    let text = serde_json::to_string(&SqeCluster::crd()).unwrap();
    assert!(text.contains(&format!("startsWith('{RESERVED_ENV_PREFIX}')")));
    let names = RESERVED_VOLUME_NAMES.map(|n| format!("'{n}'")).join(", ");
    assert!(text.contains(&format!("[{names}]")), "{names}");
    for dir in RESERVED_MOUNT_DIRS {
        assert!(text.contains(&format!("m.mountPath != '{dir}'")), "{dir}");
    }
}

#[test]
fn cluster_operation_defaults_to_reconciling_without_a_restart_nonce() {
    let c: SqeClusterSpec = serde_json::from_value(serde_json::json!({
        "oidc": {"issuer": "https://idp.example", "clientId": "sqe"},
        "polaris": {"uri": "http://polaris:8181/api/catalog", "warehouse": "lake"},
        "engine": {"image": "sqe:1"}
    }))
    .unwrap();
    assert_eq!(c.cluster_operation, ClusterOperationSpec::default());
    assert!(!c.cluster_operation.reconciliation_paused);
}

/// Every YAML document under `deploy/`, parsed, with the file it came from.
fn deploy_docs() -> Vec<(PathBuf, serde_yaml::Value)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "yaml") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("../deploy"), &mut files);
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            docs.push((f.clone(), v));
        }
    }
    docs
}

fn kind_of(v: &serde_yaml::Value) -> (&str, &str) {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
    (s("apiVersion"), s("kind"))
}

#[test]
fn gitops_examples_parse_and_name_what_exists() {
    let docs = deploy_docs();
    let kinds: Vec<_> = docs.iter().map(|(_, v)| kind_of(v).1).collect();
    for want in [
        "Application",
        "HelmRelease",
        "GitRepository",
        "SqeCluster",
        "ConfigMap",
    ] {
        assert!(kinds.contains(&want), "no {want} under deploy/: {kinds:?}");
    }
    for (f, v) in &docs {
        let (api, kind) = kind_of(v);
        assert!(!api.is_empty() && !kind.is_empty(), "{}", f.display());
        // Paths into this repository that Argo CD and Flux read must exist.
        let path = match kind {
            "Application" => v["spec"]["source"]["path"].as_str(),
            "HelmRelease" => v["spec"]["chart"]["spec"]["chart"].as_str(),
            "Kustomization" if api.starts_with("kustomize.toolkit.fluxcd.io") => {
                v["spec"]["path"].as_str()
            }
            _ => None,
        };
        if let Some(p) = path {
            assert!(
                root().join("..").join(p).is_dir(),
                "{}: {kind} names {p}, which is not a directory here",
                f.display()
            );
        }
        if kind == "Kustomization" && api.starts_with("kustomize.config.k8s.io") {
            let dir = f.parent().unwrap();
            for r in v["resources"].as_sequence().unwrap() {
                assert!(dir.join(r.as_str().unwrap()).is_file(), "{}", f.display());
            }
        }
        if kind == "SqeCluster" {
            let c: SqeCluster = serde_json::from_value(serde_json::to_value(v).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(c.spec.engine.replicas.is_some() != c.spec.engine.autoscaling.is_some());
        }
    }
}

#[test]
fn the_argocd_cm_snippet_carries_health_lua_byte_for_byte() {
    let lua = std::fs::read_to_string(root().join("../deploy/argocd/health.lua")).unwrap();
    let docs = deploy_docs();
    let cm = docs
        .iter()
        .find(|(_, v)| kind_of(v).1 == "ConfigMap" && v["metadata"]["name"] == "argocd-cm")
        .expect("deploy/argocd/argocd-cm.yaml");
    let embedded = cm.1["data"]["resource.customizations.health.sqe.io_SqeCluster"]
        .as_str()
        .unwrap();
    assert!(
        embedded == lua,
        "deploy/argocd/argocd-cm.yaml is stale: re-indent deploy/argocd/health.lua into it"
    );
}
