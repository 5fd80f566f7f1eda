//! Builder tests: golden YAML for every example, plus properties every object must have.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Container;
use kube::ResourceExt;
use serde::Deserialize;
use sqe_crds::SqeCluster;
use sqe_engine_config::{CLIENT_SECRET_ENV, EngineConfig};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::{CONFIG_KEY, FLIGHT_PORT, HTTP_PORT};
use super::*;

/// Validates and builds, as a reconcile does.
fn build(cluster: &SqeCluster, secrets: &SecretDigests) -> Result<Desired> {
    Ok(super::build(&super::validate(cluster, secrets)?))
}
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn repo() -> PathBuf {
    // Read at run time: the cargo target dir is shared between checkouts at different
    // paths, so a compile-time path can point at another (or a vanished) checkout.
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run through cargo test"))
        .join("..")
}

fn examples() -> Vec<(String, SqeCluster)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo().join("crds/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            if v.get("kind").and_then(|k| k.as_str()) == Some("SqeCluster") {
                let mut c: SqeCluster = serde_yaml::from_value(v).unwrap();
                c.metadata.namespace = Some("team-a".into());
                c.metadata.uid = Some("0000-uid".into());
                let stem = f.file_stem().unwrap().to_string_lossy().to_string();
                out.push((stem, c));
            }
        }
    }
    assert!(out.len() >= 3);
    out
}

fn engine(d: &Desired) -> &Container {
    &d.deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

fn all_metas(d: &Desired) -> Vec<(&'static str, &ObjectMeta)> {
    let mut v = vec![
        ("ServiceAccount", &d.service_account.metadata),
        ("ConfigMap", &d.config_map.metadata),
        ("Service", &d.service.metadata),
        ("PodDisruptionBudget", &d.pdb.metadata),
        ("Deployment", &d.deployment.metadata),
    ];
    if let Some(h) = &d.hpa {
        v.push(("HorizontalPodAutoscaler", &h.metadata));
    }
    if let Some(store) = &d.store {
        v.push(("Deployment", &store.deployment.metadata));
        v.push(("Service", &store.service.metadata));
        v.push(("NetworkPolicy", &store.network_policy.metadata));
    }
    v
}

#[test]
fn render_matches_golden_yaml_for_every_example() {
    let mut files: Vec<_> = std::fs::read_dir(repo().join("crds/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let got = crate::render::render(&std::fs::read_to_string(&f).unwrap(), "default").unwrap();
        let golden = repo()
            .join("operator/tests/golden")
            .join(f.file_name().unwrap());
        if std::env::var_os("SQE_BLESS").is_some() {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        assert!(
            got == want,
            "{} differs from {}; review and re-bless with SQE_BLESS=1 cargo test -p sqe-operator",
            f.display(),
            golden.display()
        );
    }
}

#[test]
fn every_object_is_owned_labelled_and_namespaced() {
    for (name, c) in examples() {
        let d = build(&c, &SecretDigests::default()).unwrap();
        for (kind, m) in all_metas(&d) {
            let owners = m.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1, "{name} {kind}");
            let o = &owners[0];
            assert_eq!(
                (o.kind.as_str(), o.uid.as_str()),
                ("SqeCluster", "0000-uid")
            );
            assert_eq!(o.controller, Some(true), "{name} {kind}");
            assert_eq!(m.namespace.as_deref(), Some("team-a"));
            assert_eq!(m.labels.as_ref().unwrap(), &labels(&c), "{name} {kind}");
        }
        let sel = selector_labels(&c);
        let dep = d.deployment.spec.as_ref().unwrap();
        assert_eq!(dep.selector.match_labels.as_ref().unwrap(), &sel);
        let pod_labels = dep
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert!(
            sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{name}"
        );
        assert_eq!(
            d.service.spec.as_ref().unwrap().selector.as_ref().unwrap(),
            &sel
        );
        let pdb_sel = d.pdb.spec.as_ref().unwrap().selector.as_ref().unwrap();
        assert_eq!(pdb_sel.match_labels.as_ref().unwrap(), &sel);
    }
}

#[test]
fn the_sweep_finds_every_object_by_its_selector_and_keeps_every_desired_name() {
    for (name, c) in examples() {
        let d = build(&c, &SecretDigests::default()).unwrap();
        let selector = owned_selector(&c);
        let names = d.names();
        for (kind, m) in all_metas(&d) {
            let labels = m.labels.as_ref().unwrap();
            for kv in selector.split(',') {
                let (k, v) = kv.split_once('=').unwrap();
                assert_eq!(labels.get(k).map(String::as_str), Some(v), "{name} {kind}");
            }
            assert!(
                names[kind].contains(m.name.as_ref().unwrap()),
                "{name} {kind}"
            );
        }
        let count: usize = names.values().map(BTreeSet::len).sum();
        assert_eq!(count, all_metas(&d).len(), "{name}: nothing else desired");
    }
}

#[test]
fn probes_and_ports_match_the_rendered_engine_config() {
    for (name, c) in examples() {
        let d = build(&c, &SecretDigests::default()).unwrap();
        let yaml = &d.config_map.data.as_ref().unwrap()[CONFIG_KEY];
        // The engine's own parser and validation accept what the operator wrote.
        let cfg = EngineConfig::from_yaml(yaml).unwrap();
        assert_eq!(cfg.listen.http.port(), HTTP_PORT);
        assert_eq!(cfg.listen.flight.port(), FLIGHT_PORT);
        let e = engine(&d);
        let port_of = |n: &str| {
            e.ports
                .as_ref()
                .unwrap()
                .iter()
                .find(|p| p.name.as_deref() == Some(n))
                .unwrap()
                .container_port
        };
        assert_eq!(port_of("http"), i32::from(cfg.listen.http.port()), "{name}");
        assert_eq!(
            port_of("flight"),
            i32::from(cfg.listen.flight.port()),
            "{name}"
        );
        for (which, p) in [
            ("readiness", e.readiness_probe.as_ref()),
            ("liveness", e.liveness_probe.as_ref()),
            ("startup", e.startup_probe.as_ref()),
        ] {
            let g = p.unwrap().http_get.as_ref().unwrap();
            assert_eq!(g.port, IntOrString::String("http".into()), "{name} {which}");
        }
        assert_eq!(
            e.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
        let svc_port = &d.service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            svc_port.target_port,
            Some(IntOrString::String("flight".into()))
        );
        assert_eq!(svc_port.port, c.spec.service.port);
        assert_eq!(
            d.service.spec.as_ref().unwrap().session_affinity.as_deref(),
            Some("ClientIP")
        );
    }
}

#[test]
fn no_secret_value_reaches_a_config_map_and_the_secret_comes_from_env() {
    let secret = "hunter2-client-secret";
    for (name, c) in examples() {
        let mut digests = SecretDigests::default();
        digests.add("s/client-secret", secret.as_bytes());
        let d = build(&c, &digests).unwrap();
        let all = serde_json::to_string(&(&d.config_map, &d.deployment, &d.service)).unwrap();
        assert!(!all.contains(secret), "{name}: secret value rendered");
        let e = engine(&d);
        for var in e.env.as_ref().unwrap() {
            if var.name == CLIENT_SECRET_ENV {
                assert!(var.value.is_none(), "{name}: secret as a literal env value");
                let r = var
                    .value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap();
                let want = c.spec.oidc.client_secret_ref.as_ref().unwrap();
                assert_eq!((&r.name, &r.key), (&want.name, &want.key));
            }
        }
        let cm = &d.config_map.data.as_ref().unwrap()[CONFIG_KEY];
        for word in ["secret:", "client_secret", "token:"] {
            assert!(
                !cm.contains(word),
                "{name}: `{word}` in the ConfigMap:\n{cm}"
            );
        }
    }
}

#[test]
fn pods_are_hardened() {
    for (name, c) in examples() {
        let d = build(&c, &SecretDigests::default()).unwrap();
        let pod = d
            .deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some(c.name_any().as_str())
        );
        let sc = engine(&d).security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
            &vec!["ALL".to_string()]
        );
        let res = engine(&d).resources.as_ref().unwrap();
        assert!(
            res.requests
                .as_ref()
                .is_some_and(|r| r.contains_key("memory")),
            "{name}"
        );
        assert!(
            res.limits
                .as_ref()
                .is_some_and(|r| r.contains_key("memory")),
            "{name}"
        );
        // A stopping pod first waits to leave the Service's endpoints (kubelet sleep, no shell
        // needed), then drains; the grace period covers both and the exit.
        let sleep = engine(&d)
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .map(|s| s.seconds)
            .expect("a preStop sleep");
        assert_eq!(sleep, super::deployment::PRE_STOP_SLEEP_SECONDS);
        let grace = c.spec.engine.query.shutdown_grace_seconds.unwrap_or(30) as i64;
        assert!(pod.termination_grace_period_seconds.unwrap() > sleep + grace);
    }
}

#[test]
fn autoscaling_owns_replicas_and_creates_an_hpa() {
    for (name, c) in examples() {
        let d = build(&c, &SecretDigests::default()).unwrap();
        let replicas = d.deployment.spec.as_ref().unwrap().replicas;
        match &c.spec.engine.autoscaling {
            Some(a) => {
                assert_eq!(replicas, None, "{name}: HPA must own replicas");
                let h = &d.hpa.as_ref().unwrap().spec;
                assert_eq!(
                    (h.min_replicas, h.max_replicas),
                    (Some(a.min_replicas), a.max_replicas)
                );
                assert_eq!(h.scale_target_ref.name, c.name_any());
            }
            None => {
                assert!(d.hpa.is_none(), "{name}");
                assert_eq!(replicas, Some(c.spec.engine.replicas.unwrap_or(2)));
            }
        }
    }
}

#[test]
fn config_hash_follows_config_and_secrets_only() {
    let (_, c) = examples()
        .into_iter()
        .find(|(n, _)| n == "minimal")
        .unwrap();
    let hash = |c: &SqeCluster, d: &SecretDigests| build(c, d).unwrap().config_hash;
    let none = SecretDigests::default();
    let base = hash(&c, &none);
    let mut rotated = SecretDigests::default();
    rotated.add("sqe-oidc/client-secret", b"v2");
    assert_ne!(
        hash(&c, &rotated),
        base,
        "rotated secret must roll the pods"
    );
    let mut c2 = c.clone();
    c2.spec.engine.query.timeout_seconds = Some(42);
    assert_ne!(hash(&c2, &none), base, "config change must roll the pods");
    let mut c3 = c.clone();
    c3.spec.engine.replicas = Some(7);
    assert_eq!(hash(&c3, &none), base, "scaling must not roll the pods");
    let d = build(&c, &rotated).unwrap();
    let ann = d
        .deployment
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap();
    assert_eq!(ann[CONFIG_HASH_ANNOTATION], d.config_hash);
}

#[test]
fn engine_rules_make_an_invalid_spec() {
    let (_, mut c) = examples()
        .into_iter()
        .find(|(n, _)| n == "minimal")
        .unwrap();
    c.spec.engine.query.memory_limit = Some("1Mi".into());
    let e = build(&c, &SecretDigests::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("query.memory_limit_bytes"), "{e}");
}

#[test]
fn the_memory_pool_follows_the_pods_memory_limit_and_bounds_each_session() {
    let (_, minimal) = examples()
        .into_iter()
        .find(|(n, _)| n == "minimal")
        .unwrap();
    let query = |c: &SqeCluster| super::configmap::engine_config(c).unwrap().query;
    // Default container limit 2Gi: a 1.5Gi pool, sessions at the engine's 1Gi default.
    let q = query(&minimal);
    assert_eq!(
        (q.memory_pool_bytes, q.memory_limit_bytes),
        (3 << 29, 1 << 30)
    );
    // A 1Gi pod: a 768Mi pool, and no session may have more than the pool.
    let mut small = minimal.clone();
    let mut resources = small.spec.engine.resources.clone().unwrap_or_default();
    resources.limits = Some(
        [(
            "memory".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
        )]
        .into(),
    );
    small.spec.engine.resources = Some(resources);
    let q = query(&small);
    assert_eq!(
        (q.memory_pool_bytes, q.memory_limit_bytes),
        (768 << 20, 768 << 20)
    );
    // Set explicitly, a session may not have more than the pool.
    let mut explicit = minimal.clone();
    explicit.spec.engine.query.memory_pool = Some("512Mi".into());
    explicit.spec.engine.query.memory_limit = Some("1Gi".into());
    let e = build(&explicit, &SecretDigests::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("query.memory_pool_bytes"), "{e}");
}

#[test]
fn quantities() {
    assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
    assert_eq!(parse_quantity("512Mi"), Some(512 << 20));
    assert_eq!(parse_quantity("1G"), Some(1_000_000_000));
    assert_eq!(parse_quantity("1.5Gi"), Some(3 << 29));
    assert_eq!(parse_quantity("123"), Some(123));
    assert_eq!(parse_quantity("lots"), None);
    assert_eq!(parse_quantity("1Xi"), None);
}

#[test]
fn render_never_prints_the_secret_in_the_input() {
    // local-stack.yaml carries a Secret (the local stack's dev client secret) next to the
    // SqeCluster; render must reference it, never copy it.
    let text = std::fs::read_to_string(repo().join("crds/examples/local-stack.yaml")).unwrap();
    assert!(text.contains("sqe-dev-secret"));
    let out = crate::render::render(&text, "default").unwrap();
    assert!(!out.contains("sqe-dev-secret"));
    assert!(out.contains("name: sqe-local-oidc"));
}

#[test]
fn render_without_uid_has_no_owner_references() {
    let text = std::fs::read_to_string(repo().join("crds/examples/minimal.yaml")).unwrap();
    let out = crate::render::render(&text, "default").unwrap();
    assert!(!out.contains("ownerReferences"));
    assert_eq!(
        out.matches("\nkind: ").count() + usize::from(out.starts_with("kind")),
        5
    );
}

/// A minimal cluster with `overrides` as `spec.engine.podOverrides` and `spec_extra` merged
/// into `spec`, as the API server would hand it over (namespace and uid set).
fn cluster_with(overrides: serde_json::Value, spec_extra: serde_json::Value) -> SqeCluster {
    let mut spec = serde_json::json!({
        "oidc": {"issuer": "https://idp.example", "clientId": "sqe",
                 "clientSecretRef": {"name": "oidc", "key": "client-secret"}},
        "polaris": {"uri": "http://p:8181/api/catalog", "warehouse": "lake"},
        "engine": {"image": "sqe:1", "podOverrides": overrides}
    });
    for (k, v) in spec_extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let mut c: SqeCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "sqe.io/v1alpha1", "kind": "SqeCluster",
        "metadata": {"name": "lake", "namespace": "team-a", "uid": "u"},
        "spec": spec
    }))
    .unwrap();
    c.metadata.generation = Some(1);
    c
}

fn pod_spec(d: &Desired) -> &k8s_openapi::api::core::v1::PodSpec {
    d.deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn pod_annotations(d: &Desired) -> std::collections::BTreeMap<String, String> {
    d.deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap()
}

#[test]
fn pod_overrides_add_env_volumes_pull_secrets_and_spread_after_the_operators_own() {
    let c = cluster_with(
        serde_json::json!({
            "env": [{"name": "TZ", "value": "UTC"}],
            "volumes": [{"name": "spill", "emptyDir": {}}],
            "volumeMounts": [{"name": "spill", "mountPath": "/var/spill"}],
            "imagePullSecrets": [{"name": "registry"}],
            "topologySpreadConstraints": [
                {"topologyKey": "topology.kubernetes.io/zone", "maxSkew": 1,
                 "whenUnsatisfiable": "ScheduleAnyway"},
                {"topologyKey": "kubernetes.io/hostname", "maxSkew": 2,
                 "whenUnsatisfiable": "DoNotSchedule",
                 "labelSelector": {"matchLabels": {"team": "a"}}}
            ]
        }),
        serde_json::json!({}),
    );
    let d = build(&c, &SecretDigests::default()).unwrap();
    let env: Vec<_> = engine(&d)
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(env, ["SQE_CONFIG", CLIENT_SECRET_ENV, "TZ"]);
    let pod = pod_spec(&d);
    let volumes: Vec<_> = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["config", "tmp", "spill"]);
    let mounts: Vec<_> = engine(&d)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/etc/sqe/config", "/tmp", "/var/spill"]);
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "registry");
    let spread = pod.topology_spread_constraints.as_ref().unwrap();
    assert_eq!(
        spread[0].label_selector.as_ref().unwrap().match_labels,
        Some(selector_labels(&c)),
        "a constraint without a selector spreads the engine pods"
    );
    assert_eq!(
        spread[1]
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["team"],
        "a",
        "a given selector is kept"
    );
}

#[test]
fn no_overrides_leave_the_pod_spec_without_those_fields() {
    let d = build(
        &cluster_with(serde_json::json!({}), serde_json::json!({})),
        &SecretDigests::default(),
    )
    .unwrap();
    let pod = pod_spec(&d);
    assert_eq!(pod.image_pull_secrets, None);
    assert_eq!(pod.topology_spread_constraints, None);
    assert!(!pod_annotations(&d).contains_key(RESTART_NONCE_ANNOTATION));
}

#[test]
fn overrides_that_would_replace_the_operators_settings_are_an_invalid_spec() {
    for (overrides, names) in [
        (
            serde_json::json!({"env": [{"name": "SQE_CONFIG", "value": "/x"}]}),
            "SQE_CONFIG",
        ),
        (
            serde_json::json!({"volumes": [{"name": "tmp", "emptyDir": {}}]}),
            "volumes[tmp]",
        ),
        (
            serde_json::json!({"volumes": [{"name": "x", "emptyDir": {}}],
                               "volumeMounts": [{"name": "x", "mountPath": "/etc/sqe/tls"}]}),
            "/etc/sqe/tls",
        ),
        (
            serde_json::json!({"volumes": [{"name": "x", "emptyDir": {}}],
                               "volumeMounts": [{"name": "x", "mountPath": "/tmp"}]}),
            "[/tmp]",
        ),
        (
            serde_json::json!({"volumeMounts": [{"name": "nowhere", "mountPath": "/data"}]}),
            "no volume nowhere",
        ),
    ] {
        match build(
            &cluster_with(overrides.clone(), serde_json::json!({})),
            &SecretDigests::default(),
        ) {
            Err(crate::error::Error::InvalidSpec(msg)) => {
                assert!(msg.contains(names), "{overrides}: {msg}")
            }
            other => panic!("{overrides}: {other:?}"),
        }
    }
    // Near misses are fine: a path that only starts like a reserved one.
    let ok = serde_json::json!({"volumes": [{"name": "x", "emptyDir": {}}],
                                "volumeMounts": [{"name": "x", "mountPath": "/etc/sqe-extra"}]});
    assert!(
        build(
            &cluster_with(ok, serde_json::json!({})),
            &SecretDigests::default()
        )
        .is_ok()
    );
}

#[test]
fn the_reserved_names_cover_everything_the_operator_puts_in_the_pod() {
    // With TLS and a catalog CA the operator uses all its volumes.
    let c = cluster_with(
        serde_json::json!({}),
        serde_json::json!({"tls": {"secretName": "t"}}),
    );
    let mut c = c;
    c.spec.polaris.ca_secret_ref = Some(sqe_crds::SecretKeyRef {
        name: "ca".into(),
        key: "ca.crt".into(),
    });
    let d = build(&c, &SecretDigests::default()).unwrap();
    for v in pod_spec(&d).volumes.as_ref().unwrap() {
        assert!(
            sqe_crds::RESERVED_VOLUME_NAMES.contains(&v.name.as_str()),
            "{}",
            v.name
        );
    }
    for m in engine(&d).volume_mounts.as_ref().unwrap() {
        assert!(
            sqe_crds::RESERVED_MOUNT_DIRS
                .iter()
                .any(|dir| m.mount_path == *dir || m.mount_path.starts_with(&format!("{dir}/"))),
            "{}",
            m.mount_path
        );
    }
    for e in engine(&d).env.as_ref().unwrap() {
        assert!(
            e.name.starts_with(sqe_crds::RESERVED_ENV_PREFIX),
            "{}",
            e.name
        );
    }
}

#[test]
fn a_restart_nonce_changes_only_the_pod_template_annotation() {
    let plain = cluster_with(serde_json::json!({}), serde_json::json!({}));
    let nonce = cluster_with(
        serde_json::json!({}),
        serde_json::json!({"clusterOperation": {"restartNonce": "2026-01-01"}}),
    );
    let (a, b) = (
        build(&plain, &SecretDigests::default()).unwrap(),
        build(&nonce, &SecretDigests::default()).unwrap(),
    );
    assert_eq!(pod_annotations(&b)[RESTART_NONCE_ANNOTATION], "2026-01-01");
    assert_eq!(
        a.config_hash, b.config_hash,
        "a restart is not a config change"
    );
    assert_eq!(a.config_map, b.config_map);
    let mut without = pod_annotations(&b);
    without.remove(RESTART_NONCE_ANNOTATION);
    assert_eq!(without, pod_annotations(&a));
}

#[test]
fn the_status_selector_selects_exactly_the_engine_pods() {
    let c = cluster_with(
        serde_json::json!({"labels": {"team": "a"}}),
        serde_json::json!({}),
    );
    let d = build(&c, &SecretDigests::default()).unwrap();
    let pod_labels = d
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let selector = engine_selector(&c);
    assert_eq!(
        selector,
        "app.kubernetes.io/instance=lake,app.kubernetes.io/name=sqe-engine"
    );
    for kv in selector.split(',') {
        let (k, v) = kv.split_once('=').unwrap();
        assert_eq!(pod_labels[k], v);
    }
    assert_eq!(
        d.deployment.spec.as_ref().unwrap().selector.match_labels,
        Some(selector_labels(&c)),
        "the Deployment selects with the same labels"
    );
}

#[test]
fn a_cluster_internal_keycloak_and_object_store_address_reach_the_engine_config() {
    let c = cluster_with(
        serde_json::json!({}),
        serde_json::json!({
            "oidc": {"keycloak": {"url": "http://keycloak.iam.svc:8080", "realm": "sqe",
                                  "frontendUrl": "https://sso.example.com"},
                     "clientId": "sqe", "clientSecretRef": {"name": "oidc", "key": "client-secret"}},
            "polaris": {"uri": "http://polaris.lake.svc:8181/api/catalog", "warehouse": "lake",
                        "storageEndpoint": "http://minio.storage.svc:9000"}
        }),
    );
    let d = build(&c, &SecretDigests::default()).unwrap();
    let cfg = EngineConfig::from_yaml(&d.config_map.data.as_ref().unwrap()[CONFIG_KEY]).unwrap();
    // Tokens carry the public URL; the engine fetches discovery through the Service.
    assert_eq!(cfg.issuer().as_str(), "https://sso.example.com/realms/sqe");
    assert_eq!(
        cfg.discovery_base().as_str(),
        "http://keycloak.iam.svc:8080/realms/sqe"
    );
    assert_eq!(
        cfg.catalog.storage_endpoint.as_ref().map(|u| u.as_str()),
        Some("http://minio.storage.svc:9000/")
    );

    // Neither is written when unset.
    let plain = build(
        &cluster_with(serde_json::json!({}), serde_json::json!({})),
        &SecretDigests::default(),
    )
    .unwrap();
    let yaml = &plain.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    assert!(
        !yaml.contains("frontend_url") && !yaml.contains("storage_endpoint"),
        "{yaml}"
    );
}

fn managed_store() -> SqeCluster {
    cluster_with(
        serde_json::json!({"nodeSelector": {"type": "real"}}),
        serde_json::json!({"sessionStore": {"managed": {"image": "localhost/sqe-session-store:dev"}}}),
    )
}

fn env_secret(c: &Container, name: &str) -> Option<(String, String)> {
    let var = c.env.as_ref()?.iter().find(|e| e.name == name)?;
    let r = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
    assert!(var.value.is_none(), "{name} comes from the Secret only");
    Some((r.name.clone(), r.key.clone()))
}

#[test]
fn a_managed_session_store_is_one_hardened_pod_the_engine_pods_reach_with_a_generated_password() {
    let c = managed_store();
    let d = build(&c, &SecretDigests::default()).unwrap();
    let cfg = EngineConfig::from_yaml(&d.config_map.data.as_ref().unwrap()[CONFIG_KEY]).unwrap();
    let store = cfg
        .session
        .store
        .expect("the engine is told where the store is");
    assert_eq!(store.url, "redis://lake-session-store:6379/");
    assert_eq!(
        store.keys_file,
        PathBuf::from("/etc/sqe/session-keys/keys"),
        "the keys file"
    );
    assert_eq!(store.ca_file, None);
    // The password and keys reach the engine from the generated Secrets, never the ConfigMap.
    assert_eq!(
        env_secret(engine(&d), sqe_engine_config::SESSION_STORE_PASSWORD_ENV),
        Some(("lake-session-store".into(), "password".into()))
    );
    let keys = pod_spec(&d)
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "session-keys")
        .and_then(|v| v.secret.as_ref())
        .unwrap();
    assert_eq!(keys.secret_name.as_deref(), Some("lake-session-keys"));
    assert_eq!(
        session_store::generated(&c),
        vec![
            (
                "lake-session-keys".to_string(),
                session_store::Generated::ClusterKeys
            ),
            (
                "lake-session-store".to_string(),
                session_store::Generated::StorePassword
            ),
        ]
    );

    let store = d.store.as_ref().expect("the operator runs the store");
    let (deployment, service) = (&store.deployment, &store.service);
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    // Two stores side by side would split the sessions: the old one goes first.
    assert_eq!(
        spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("Recreate")
    );
    let pod = spec.template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("localhost/sqe-session-store:dev")
    );
    assert_eq!(
        container.args,
        Some(vec!["/etc/redis/redis.conf".to_string()])
    );
    let sc = container.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.node_selector.as_ref().unwrap()["type"], "real");
    // The store's Service and pods and the engine's never select each other.
    let store_pods = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let engine_pods = d
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap();
    let selects = |selector: &std::collections::BTreeMap<String, String>,
                   labels: &std::collections::BTreeMap<String, String>| {
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let store_selector = service.spec.as_ref().unwrap().selector.clone().unwrap();
    assert!(selects(&store_selector, &store_pods));
    assert!(!selects(
        &store_selector,
        engine_pods.labels.as_ref().unwrap()
    ));
    assert!(!selects(&selector_labels(&c), &store_pods));
    // Both are swept by the same selector as the rest, and kept while desired.
    let names = d.names();
    assert!(names["Deployment"].contains("lake-session-store"));
    assert!(names["Service"].contains("lake-session-store"));
    assert!(names["NetworkPolicy"].contains("lake-session-store"));

    // Only the cluster's engine pods reach it, on its port only.
    let policy = store.network_policy.spec.as_ref().unwrap();
    assert_eq!(
        policy.pod_selector.as_ref().unwrap().match_labels.as_ref(),
        Some(&store_selector)
    );
    assert_eq!(policy.policy_types, Some(vec!["Ingress".to_string()]));
    let rule = &policy.ingress.as_ref().unwrap()[0];
    let from = rule.from.as_ref().unwrap()[0]
        .pod_selector
        .as_ref()
        .unwrap();
    let from = from.match_labels.as_ref().unwrap();
    assert!(selects(from, engine_pods.labels.as_ref().unwrap()));
    assert!(!selects(from, &store_pods));
    assert_eq!(
        rule.ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(6379))
    );
}

#[test]
fn a_managed_store_with_a_memory_limit_refuses_new_sessions_before_the_limit_kills_it() {
    let c = cluster_with(
        serde_json::json!({}),
        serde_json::json!({"sessionStore": {"managed": {
            "image": "valkey:8", "resources": {"limits": {"memory": "256Mi"}}}}}),
    );
    let d = build(&c, &SecretDigests::default()).unwrap();
    let store = d.store.unwrap();
    let args = store
        .deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    let bound = (256u64 * 1024 * 1024 / 4 * 3).to_string();
    assert_eq!(
        args,
        [
            "/etc/redis/redis.conf",
            "--maxmemory",
            bound.as_str(),
            "--maxmemory-policy",
            "noeviction"
        ]
    );
}

#[test]
fn generated_session_secrets_hold_a_fresh_key_and_a_password_the_store_is_configured_with() {
    use base64::Engine as _;
    let keys = session_store::contents(session_store::Generated::ClusterKeys, [7; 32]);
    let key = base64::engine::general_purpose::STANDARD
        .decode(keys["keys"].trim())
        .unwrap();
    assert_eq!(key, vec![7; 32]);
    let store = session_store::contents(session_store::Generated::StorePassword, [9; 32]);
    let password = &store["password"];
    assert_eq!(password.len(), 64);
    let conf = &store["redis.conf"];
    assert!(
        conf.contains(&format!("requirepass {password}\n")),
        "{conf}"
    );
    assert!(
        conf.contains("save \"\"") && conf.contains("appendonly no"),
        "{conf}"
    );
    let secret = session_store::secret(&managed_store(), "lake-session-store", store);
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].name,
        "lake",
        "deleted with the cluster"
    );
}

#[test]
fn an_external_session_store_is_reached_over_tls_with_its_ca_and_no_store_is_run() {
    let c = cluster_with(
        serde_json::json!({}),
        serde_json::json!({"sessionStore": {
            "external": {"url": "rediss://sessions.redis.svc:6379/",
                         "passwordSecretRef": {"name": "redis", "key": "pw"},
                         "caSecretRef": {"name": "corp-ca", "key": "ca.crt"}},
            "keysSecretRef": {"name": "keys", "key": "k"}}}),
    );
    let d = build(&c, &SecretDigests::default()).unwrap();
    assert!(d.store.is_none());
    assert!(
        session_store::generated(&c).is_empty(),
        "nothing to generate"
    );
    let cfg = EngineConfig::from_yaml(&d.config_map.data.as_ref().unwrap()[CONFIG_KEY]).unwrap();
    let store = cfg.session.store.unwrap();
    assert_eq!(store.url, "rediss://sessions.redis.svc:6379/");
    assert_eq!(
        store.ca_file,
        Some(PathBuf::from("/etc/sqe/session-store-ca/ca.pem"))
    );
    assert_eq!(
        env_secret(engine(&d), sqe_engine_config::SESSION_STORE_PASSWORD_ENV),
        Some(("redis".into(), "pw".into()))
    );
    let volumes = pod_spec(&d).volumes.clone().unwrap();
    let item = |name: &str| {
        let s = volumes
            .iter()
            .find(|v| v.name == name)
            .unwrap()
            .secret
            .clone()
            .unwrap();
        (s.secret_name.unwrap(), s.items.unwrap()[0].key.clone())
    };
    assert_eq!(item("session-keys"), ("keys".into(), "k".into()));
    assert_eq!(
        item("session-store-ca"),
        ("corp-ca".into(), "ca.crt".into())
    );
    // Without a store nothing of it is rendered.
    let plain = build(
        &cluster_with(serde_json::json!({}), serde_json::json!({})),
        &SecretDigests::default(),
    )
    .unwrap();
    assert!(plain.store.is_none());
    assert!(!plain.config_map.data.as_ref().unwrap()[CONFIG_KEY].contains("store"));
    assert!(
        env_secret(
            engine(&plain),
            sqe_engine_config::SESSION_STORE_PASSWORD_ENV
        )
        .is_none()
    );
}

#[test]
fn a_changed_store_secret_rolls_the_store_and_the_engine_pods_together() {
    let c = managed_store();
    let store_annotation = |d: &Desired| {
        let deployment = &d.store.as_ref().unwrap().deployment;
        let template = &deployment.spec.as_ref().unwrap().template;
        template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["sqe.io/config-hash"]
            .clone()
    };
    let mut before = SecretDigests::default();
    before.add("lake-session-store/password", b"one");
    before.add("lake-session-keys/keys", b"k");
    let mut after = before.clone();
    after.add("lake-session-store/password", b"two");
    let mut keys_rotated = before.clone();
    keys_rotated.add("lake-session-keys/keys", b"k2");
    let (b, a, k) = (
        build(&c, &before).unwrap(),
        build(&c, &after).unwrap(),
        build(&c, &keys_rotated).unwrap(),
    );
    assert_ne!(store_annotation(&b), store_annotation(&a));
    assert_ne!(
        b.config_hash, a.config_hash,
        "the engine pods roll with the store"
    );
    // A rotated cluster key rolls the engines only: the store keeps its sessions.
    assert_eq!(store_annotation(&b), store_annotation(&k));
    assert_ne!(b.config_hash, k.config_hash);
}
