//! Reconcile decisions against a fake API server (kube-rs `tower-test` style): the client
//! talks HTTP to an in-memory object store, and each test checks which writes were sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::metrics::Metrics;
use crate::resources::MANAGER;
use kube::Client;

type Objects = Arc<Mutex<BTreeMap<String, Value>>>;

struct Fake {
    objects: Objects,
    /// `METHOD path` of every request.
    calls: Arc<Mutex<Vec<String>>>,
    /// `METHOD path?query` of every request (a DELETE's body after it).
    raw: Arc<Mutex<Vec<String>>>,
    /// `METHOD path` answered 403 Forbidden.
    refused: Arc<Mutex<Vec<String>>>,
    /// After a list of the path: store the object under the key (a concurrent writer).
    after_list: Arc<Mutex<Option<(String, String, Value)>>>,
    ctx: Arc<Context>,
}

const CLUSTER_PATH: &str = "/apis/sqe.io/v1alpha1/namespaces/ns/sqeclusters/demo";
const SECRET_PATH: &str = "/api/v1/namespaces/ns/secrets/oidc";

fn status_json(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
           "message": reason, "code": code})
}

/// Equality-based selector (`k=v,k2=v2`), as the operator sends.
fn matches_selector(obj: &Value, selector: &str) -> bool {
    selector.split(',').all(|kv| {
        let (k, v) = kv.split_once('=').unwrap();
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl Fake {
    fn new() -> Self {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let objects: Objects = Arc::default();
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let raw: Arc<Mutex<Vec<String>>> = Arc::default();
        let refused: Arc<Mutex<Vec<String>>> = Arc::default();
        let after_list: Arc<Mutex<Option<(String, String, Value)>>> = Arc::default();
        let (o, c, r, no, al) = (
            objects.clone(),
            calls.clone(),
            raw.clone(),
            refused.clone(),
            after_list.clone(),
        );
        tokio::spawn(async move {
            let mut rv = 100;
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().clone();
                let path = req.uri().path().to_string();
                let query = req.uri().query().unwrap_or_default().to_string();
                let body = req.into_body().collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let call = format!("{method} {path}");
                c.lock().unwrap().push(call.clone());
                let shown = match method {
                    Method::DELETE => format!("{method} {path}?{query} {body}"),
                    _ => format!("{method} {path}?{query}"),
                };
                r.lock().unwrap().push(shown);
                let (key, sub_status) = match path.strip_suffix("/status") {
                    Some(k) => (k.to_string(), true),
                    None => (path.clone(), false),
                };
                let mut objs = o.lock().unwrap();
                rv += 1;
                let selector = query_param(&query, "labelSelector");
                let (code, out) = match method {
                    _ if no.lock().unwrap().contains(&call) => (403, status_json(403, "Forbidden")),
                    // A list: the objects directly under the collection path with the labels.
                    Method::GET if selector.is_some() => {
                        let prefix = format!("{path}/");
                        let items: Vec<Value> = objs
                            .iter()
                            .filter(|(k, v)| {
                                k.strip_prefix(&prefix).is_some_and(|n| !n.contains('/'))
                                    && matches_selector(v, selector.as_deref().unwrap())
                            })
                            .map(|(_, v)| v.clone())
                            .collect();
                        let mut hook = al.lock().unwrap();
                        if hook.as_ref().is_some_and(|(p, _, _)| *p == path) {
                            let (_, key, v) = hook.take().unwrap();
                            objs.insert(key, v);
                        }
                        (
                            200,
                            json!({"kind": "List", "apiVersion": "v1",
                                   "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
                        )
                    }
                    Method::GET => match objs.get(&key) {
                        Some(v) => (200, v.clone()),
                        None => (404, status_json(404, "NotFound")),
                    },
                    Method::PATCH if sub_status => match objs.get_mut(&key) {
                        Some(v) => {
                            v["status"] = body["status"].clone();
                            (200, v.clone())
                        }
                        None => (404, status_json(404, "NotFound")),
                    },
                    // Apply: the stored object becomes the applied body (the fake has one field
                    // manager); uid stays, resourceVersion moves only when something changed.
                    Method::PATCH => {
                        let mut v = body;
                        let old = objs.get(&key);
                        v["metadata"]["uid"] = old
                            .map(|o| o["metadata"]["uid"].clone())
                            .filter(|x| !x.is_null())
                            .unwrap_or(json!(format!("uid-{rv}")));
                        v["metadata"]["resourceVersion"] = old
                            .map(|o| o["metadata"]["resourceVersion"].clone())
                            .filter(|_| {
                                let mut o = old.unwrap().clone();
                                o["metadata"]["resourceVersion"] = Value::Null;
                                let mut n = v.clone();
                                n["metadata"]["resourceVersion"] = Value::Null;
                                o == n
                            })
                            .unwrap_or(json!(rv.to_string()));
                        objs.insert(key, v.clone());
                        (200, v)
                    }
                    Method::DELETE => {
                        let want_uid = body["preconditions"]["uid"].as_str();
                        match objs.get(&key) {
                            None => (404, status_json(404, "NotFound")),
                            Some(v)
                                if want_uid.is_some()
                                    && v["metadata"]["uid"].as_str() != want_uid =>
                            {
                                (409, status_json(409, "Conflict"))
                            }
                            Some(_) => {
                                objs.remove(&key);
                                (
                                    200,
                                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                                )
                            }
                        }
                    }
                    _ => (405, status_json(405, "MethodNotAllowed")),
                };
                let resp = Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&out).unwrap()))
                    .unwrap();
                send.send_response(resp);
            }
        });
        let client = Client::new(svc, "ns");
        let ctx = Arc::new(Context::new(client, None, Arc::new(Metrics::default())));
        Self {
            objects,
            calls,
            raw,
            refused,
            after_list,
            ctx,
        }
    }

    /// The body of the last reconcile's DELETE of `path`.
    fn delete_body(&self, path: &str) -> Value {
        let call = self
            .raw_calls()
            .into_iter()
            .find(|c| c.starts_with(&format!("DELETE {path}?")))
            .unwrap();
        serde_json::from_str(call.splitn(3, ' ').nth(2).unwrap()).unwrap()
    }

    fn after_list(&self, list_path: &str, key: &str, v: Value) {
        *self.after_list.lock().unwrap() = Some((list_path.into(), key.into(), v));
    }

    fn refuse(&self, call: &str) {
        self.refused.lock().unwrap().push(call.into());
    }

    /// `METHOD path?query` of every request the last reconcile sent.
    fn raw_calls(&self) -> Vec<String> {
        self.raw.lock().unwrap().clone()
    }

    fn put(&self, path: &str, v: Value) {
        self.objects.lock().unwrap().insert(path.into(), v);
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    fn put_secret(&self, value: &str) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        self.put(
            SECRET_PATH,
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "oidc", "namespace": "ns"}, "data": {"client-secret": b64}}),
        );
    }

    fn put_cluster(&self, spec_engine: Value) {
        self.put(CLUSTER_PATH, json!({
            "apiVersion": "sqe.io/v1alpha1", "kind": "SqeCluster",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "cluster-uid", "generation": 1},
            "spec": {
                "oidc": {"keycloak": {"url": "http://kc:8080", "realm": "sqe"}, "clientId": "sqe",
                         "clientSecretRef": {"name": "oidc", "key": "client-secret"}},
                "polaris": {"uri": "http://polaris:8181/api/catalog", "warehouse": "lake"},
                "engine": spec_engine
            }
        }));
    }

    fn cluster(&self) -> Arc<SqeCluster> {
        Arc::new(serde_json::from_value(self.get(CLUSTER_PATH).unwrap()).unwrap())
    }

    /// Reconcile the stored cluster; return the writes (non-GET calls) it sent.
    async fn reconcile(&self) -> Vec<String> {
        self.try_reconcile().await.unwrap();
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.starts_with("GET "))
            .cloned()
            .collect()
    }

    /// Reconcile the stored cluster; the calls are recorded afresh.
    async fn try_reconcile(&self) -> Result<Action> {
        self.calls.lock().unwrap().clear();
        self.raw.lock().unwrap().clear();
        reconcile(self.cluster(), self.ctx.clone()).await
    }

    fn condition(&self, t: &str) -> (String, String, String) {
        let c = self.cluster();
        let c = c.condition(t).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn pod_hash(&self) -> String {
        let d = self
            .get("/apis/apps/v1/namespaces/ns/deployments/demo")
            .unwrap();
        d["spec"]["template"]["metadata"]["annotations"][resources::CONFIG_HASH_ANNOTATION]
            .as_str()
            .unwrap()
            .to_string()
    }
}

const DEPLOY: &str = "PATCH /apis/apps/v1/namespaces/ns/deployments/demo";
const STATUS: &str = "PATCH /apis/sqe.io/v1alpha1/namespaces/ns/sqeclusters/demo/status";
const HPA_PATH: &str = "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/demo";
const CM_PATH: &str = "/api/v1/namespaces/ns/configmaps/demo-config";
/// The applies of every reconcile without autoscaling, in order.
const APPLIES: [&str; 5] = [
    "PATCH /api/v1/namespaces/ns/serviceaccounts/demo",
    "PATCH /api/v1/namespaces/ns/configmaps/demo-config",
    "PATCH /api/v1/namespaces/ns/services/demo",
    "PATCH /apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo",
    DEPLOY,
];
/// The sweep's lists, one per managed kind, in order.
const LISTS: [&str; 7] = [
    "GET /api/v1/namespaces/ns/serviceaccounts",
    "GET /api/v1/namespaces/ns/configmaps",
    "GET /api/v1/namespaces/ns/services",
    "GET /apis/policy/v1/namespaces/ns/poddisruptionbudgets",
    "GET /apis/apps/v1/namespaces/ns/deployments",
    "GET /apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers",
    "GET /apis/networking.k8s.io/v1/namespaces/ns/networkpolicies",
];
const SELECTOR: &str = "app.kubernetes.io/managed-by=sqe-operator,app.kubernetes.io/instance=demo";

fn with_status(mut writes: Vec<&str>) -> Vec<&str> {
    writes.push(STATUS);
    writes
}

/// Labels and a controller reference to the test cluster, as the operator stamps them.
fn ours(kind: &str, api_version: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid"),
            "labels": {"app.kubernetes.io/managed-by": "sqe-operator",
                       "app.kubernetes.io/instance": "demo"},
            "ownerReferences": [{"apiVersion": "sqe.io/v1alpha1", "kind": "SqeCluster",
                "name": "demo", "uid": "cluster-uid", "controller": true}]}})
}

#[tokio::test]
async fn creates_every_object_then_an_unchanged_cluster_is_only_reapplied() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    assert_eq!(f.reconcile().await, with_status(APPLIES.to_vec()));
    let dep = f
        .get("/apis/apps/v1/namespaces/ns/deployments/demo")
        .unwrap();
    assert_eq!(dep["metadata"]["ownerReferences"][0]["uid"], "cluster-uid");
    let cluster = f.cluster();
    let st = cluster.status.as_ref().unwrap();
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.endpoint.as_deref(), Some("grpc://demo.ns.svc:50051"));
    assert_eq!(f.condition("Degraded").0, "False");

    // Second pass over the same state: the same applies (no-ops for the API server), no
    // delete, no status patch.
    assert_eq!(f.reconcile().await, APPLIES);
}

#[tokio::test]
async fn applies_are_forced_under_our_field_manager_and_nothing_owned_is_read_first() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    f.reconcile().await;
    f.reconcile().await;
    let calls = f.raw_calls();
    let gets: Vec<_> = calls.iter().filter(|c| c.starts_with("GET ")).collect();
    // The referenced Secret, then the sweep's lists by label: no GET of an owned object.
    assert_eq!(gets.len(), 1 + LISTS.len(), "{gets:?}");
    assert!(
        gets[0].starts_with(&format!("GET {SECRET_PATH}?")),
        "{gets:?}"
    );
    for (got, want) in gets[1..].iter().zip(LISTS) {
        let (path, query) = got.split_once('?').unwrap();
        assert_eq!(path, want);
        assert_eq!(
            query_param(query, "labelSelector").as_deref(),
            Some(SELECTOR)
        );
    }
    let patches: Vec<_> = calls.iter().filter(|c| c.starts_with("PATCH ")).collect();
    assert_eq!(patches.len(), APPLIES.len());
    for p in patches {
        let query = p.split_once('?').unwrap().1;
        assert_eq!(
            query_param(query, "fieldManager").as_deref(),
            Some(MANAGER),
            "{p}"
        );
        assert_eq!(query_param(query, "force").as_deref(), Some("true"), "{p}");
    }
}

#[tokio::test]
async fn missing_secret_is_degraded_and_recovers_when_it_appears() {
    let f = Fake::new();
    f.put_cluster(json!({"image": "sqe:1"}));
    assert_eq!(
        f.reconcile().await,
        [STATUS],
        "nothing but status while the Secret is missing"
    );
    assert!(
        !f.raw_calls().iter().any(|c| c.contains("labelSelector")),
        "no sweep while the spec cannot be realised: the running pods keep serving"
    );
    let (status, reason, message) = f.condition("Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "SecretMissing")
    );
    assert!(
        message.contains("ns/oidc") && message.contains("spec.oidc.clientSecretRef"),
        "{message}"
    );

    f.put_secret("s1");
    let writes = f.reconcile().await;
    assert!(writes.contains(&DEPLOY.to_string()), "{writes:?}");
    assert_eq!(f.condition("Degraded").0, "False");
}

#[tokio::test]
async fn secret_without_the_key_is_degraded() {
    let f = Fake::new();
    f.put(
        SECRET_PATH,
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "oidc", "namespace": "ns"}, "data": {"other": "eA=="}}),
    );
    f.put_cluster(json!({"image": "sqe:1"}));
    f.reconcile().await;
    let (s, reason, msg) = f.condition("Degraded");
    assert_eq!((s.as_str(), reason.as_str()), ("True", "SecretKeyMissing"));
    assert!(msg.contains("client-secret"), "{msg}");
}

#[tokio::test]
async fn rotated_secret_changes_only_the_pod_template_hash() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    f.reconcile().await;
    let before = f.objects.lock().unwrap().clone();
    let hash = f.pod_hash();
    f.put_secret("s2");
    assert_eq!(f.reconcile().await, with_status(APPLIES.to_vec()));
    assert_ne!(f.pod_hash(), hash, "the pods roll");
    let after = f.objects.lock().unwrap().clone();
    let changed: Vec<_> = after
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert_eq!(
        changed,
        [
            SECRET_PATH,
            "/apis/apps/v1/namespaces/ns/deployments/demo",
            CLUSTER_PATH,
        ],
        "the Deployment (and the Secret and status we changed); the ConfigMap never holds it"
    );
}

#[tokio::test]
async fn spec_change_rolls_and_scaling_does_not() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1", "replicas": 2}));
    f.reconcile().await;
    let h1 = f.pod_hash();
    f.put_cluster(json!({"image": "sqe:1", "replicas": 3}));
    f.reconcile().await;
    assert_eq!(f.pod_hash(), h1, "scaling keeps the hash");
    let cm = f.get(CM_PATH).unwrap();
    f.put_cluster(json!({"image": "sqe:1", "replicas": 3, "logLevel": "debug"}));
    f.reconcile().await;
    assert_ne!(f.get(CM_PATH).unwrap()["data"], cm["data"]);
    assert_ne!(f.pod_hash(), h1, "config change rolls");
}

#[tokio::test]
async fn autoscaling_creates_the_hpa_and_switching_off_sweeps_it() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(
        json!({"image": "sqe:1", "autoscaling": {"minReplicas": 2, "maxReplicas": 5,
        "targetCPUUtilizationPercentage": 60}}),
    );
    let writes = f.reconcile().await;
    assert!(writes.contains(&format!("PATCH {HPA_PATH}")), "{writes:?}");
    let dep = f
        .get("/apis/apps/v1/namespaces/ns/deployments/demo")
        .unwrap();
    assert!(
        dep["spec"].get("replicas").is_none(),
        "the HPA owns replicas"
    );
    let hpa = f.get(HPA_PATH).unwrap();
    assert_eq!(hpa["metadata"]["ownerReferences"][0]["uid"], "cluster-uid");
    let hpa_uid = hpa["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(
        matches_selector(&hpa, SELECTOR),
        "the sweep finds what we make"
    );

    f.put_cluster(json!({"image": "sqe:1", "replicas": 2}));
    let writes = f.reconcile().await;
    assert_eq!(
        writes,
        with_status([&APPLIES[..], &[&format!("DELETE {HPA_PATH}")[..]]].concat()),
        "applied first, then swept"
    );
    assert!(f.get(HPA_PATH).is_none());
    let body = f.delete_body(HPA_PATH);
    assert_eq!(
        body["preconditions"]["uid"], hpa_uid,
        "deletes exactly the object it judged"
    );
    assert_eq!(body["propagationPolicy"], "Background");
    let text = f.ctx.metrics.encode().unwrap();
    let line = r#"sqe_operator_writes_total{kind="HorizontalPodAutoscaler",verb="delete"} 1"#;
    assert!(text.lines().any(|l| l == line), "{text}");
}

#[tokio::test]
async fn an_object_replaced_since_the_list_is_not_deleted() {
    // The list saw our stale HPA; before the delete, someone replaced it (same name, a new
    // UID). The UID precondition makes the API server refuse (409), and that is no error.
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    f.put(
        HPA_PATH,
        ours("HorizontalPodAutoscaler", "autoscaling/v2", "demo"),
    );
    let mut theirs = ours("HorizontalPodAutoscaler", "autoscaling/v2", "demo");
    theirs["metadata"]["uid"] = json!("someone-elses-uid");
    f.after_list(
        "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers",
        HPA_PATH,
        theirs.clone(),
    );
    let writes = f.reconcile().await;
    assert!(writes.contains(&format!("DELETE {HPA_PATH}")), "{writes:?}");
    assert_eq!(f.get(HPA_PATH), Some(theirs), "the replacement stays");
}

#[tokio::test]
async fn an_owned_object_of_any_kind_no_longer_desired_is_swept() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    // Left by an older version under another name.
    let old = "/api/v1/namespaces/ns/configmaps/demo-engine";
    f.put(old, ours("ConfigMap", "v1", "demo-engine"));
    let writes = f.reconcile().await;
    assert!(writes.contains(&format!("DELETE {old}")), "{writes:?}");
    assert!(f.get(old).is_none());
    assert!(f.get(CM_PATH).is_some(), "the desired one stays");
}

#[tokio::test]
async fn objects_with_our_labels_that_we_do_not_control_are_left_alone() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    // Same labels, no owner reference: someone copied our labels.
    let mut copied = ours("HorizontalPodAutoscaler", "autoscaling/v2", "demo");
    copied["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    f.put(HPA_PATH, copied);
    // Same labels, controlled by another object (an earlier SqeCluster of this name).
    let other = "/api/v1/namespaces/ns/services/demo-old";
    let mut svc = ours("Service", "v1", "demo-old");
    svc["metadata"]["ownerReferences"][0]["uid"] = json!("previous-uid");
    f.put(other, svc);
    let writes = f.reconcile().await;
    assert!(
        !writes.iter().any(|w| w.starts_with("DELETE")),
        "{writes:?}"
    );
    assert!(f.get(HPA_PATH).is_some() && f.get(other).is_some());
}

#[tokio::test]
async fn engine_rules_are_reported_as_invalid_spec() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1", "query": {"memoryLimit": "1Mi"}}));
    assert_eq!(f.reconcile().await, [STATUS]);
    let (s, reason, msg) = f.condition("Degraded");
    assert_eq!((s.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(msg.contains("memory"), "{msg}");
}

#[tokio::test]
async fn a_drifted_field_is_restored_by_the_next_apply() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    f.reconcile().await;
    let path = "/api/v1/namespaces/ns/services/demo";
    let mut svc = f.get(path).unwrap();
    svc["spec"]["sessionAffinity"] = json!("None");
    f.put(path, svc);
    assert_eq!(f.reconcile().await, APPLIES);
    assert_eq!(f.get(path).unwrap()["spec"]["sessionAffinity"], "ClientIP");
}

#[tokio::test]
async fn a_failed_reconcile_is_counted_under_its_error_category() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    // An RBAC rule missing: the API server refuses the list.
    f.refuse("GET /apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers");
    let err = f.try_reconcile().await.unwrap_err();
    assert_eq!(err.category(), "kube_api", "{err}");
    let mut no_ns = (*f.cluster()).clone();
    no_ns.metadata.namespace = None;
    reconcile(Arc::new(no_ns), f.ctx.clone()).await.unwrap_err();
    let text = f.ctx.metrics.encode().unwrap();
    for line in [
        r#"sqe_operator_reconcile_errors_total{error="kube_api"} 1"#,
        r#"sqe_operator_reconcile_errors_total{error="no_namespace"} 1"#,
        r#"sqe_operator_reconciles_total{result="error"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
}

#[tokio::test]
async fn failures_back_off_per_object() {
    let f = Fake::new();
    f.put_cluster(json!({"image": "sqe:1"}));
    let c = f.cluster();
    let err = || Error::NoNamespace;
    let a1 = error_policy(c.clone(), &err(), f.ctx.clone());
    let a2 = error_policy(c.clone(), &err(), f.ctx.clone());
    let a3 = error_policy(c.clone(), &err(), f.ctx.clone());
    assert_eq!(a1, Action::requeue(Duration::from_secs(2)));
    assert_eq!(a2, Action::requeue(Duration::from_secs(4)));
    assert_eq!(a3, Action::requeue(Duration::from_secs(8)));
    for _ in 0..20 {
        error_policy(c.clone(), &err(), f.ctx.clone());
    }
    assert_eq!(
        error_policy(c.clone(), &err(), f.ctx.clone()),
        Action::requeue(BACKOFF_MAX)
    );
    // A success resets the count.
    f.put_secret("s1");
    f.reconcile().await;
    assert_eq!(
        error_policy(c, &err(), f.ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );
}

impl Fake {
    /// Change the stored cluster's spec as a user would: a new generation, status kept.
    fn edit_spec(&self, edit: impl FnOnce(&mut Value)) {
        let mut c = self.get(CLUSTER_PATH).unwrap();
        edit(&mut c["spec"]);
        let g = c["metadata"]["generation"].as_i64().unwrap();
        c["metadata"]["generation"] = json!(g + 1);
        self.put(CLUSTER_PATH, c);
    }

    fn all_calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

const DEPLOY_PATH: &str = "/apis/apps/v1/namespaces/ns/deployments/demo";

#[tokio::test]
async fn a_paused_cluster_gets_only_its_status_written_and_resumes_on_unpause() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    f.reconcile().await;
    let running = f.get(DEPLOY_PATH).unwrap();

    f.edit_spec(|s| {
        s["clusterOperation"] = json!({"reconciliationPaused": true});
        s["engine"]["image"] = json!("sqe:2");
    });
    f.reconcile().await;
    assert_eq!(
        f.all_calls(),
        [format!("GET {DEPLOY_PATH}"), STATUS.to_string()],
        "paused: read the Deployment for status, write only the status"
    );
    assert_eq!(f.get(DEPLOY_PATH).unwrap(), running, "the new image waits");
    assert_eq!(f.condition("ReconciliationPaused").0, "True");
    assert_eq!(f.condition("Progressing").1, "ReconciliationPaused");
    assert_eq!(
        f.cluster().status.as_ref().unwrap().observed_generation,
        Some(2)
    );

    // Still paused, nothing changed: not even a status write.
    assert!(f.reconcile().await.is_empty());

    f.edit_spec(|s| s["clusterOperation"]["reconciliationPaused"] = json!(false));
    assert_eq!(f.reconcile().await, with_status(APPLIES.to_vec()));
    let image = &f.get(DEPLOY_PATH).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "sqe:2");
    assert_eq!(f.condition("ReconciliationPaused").0, "False");
}

#[tokio::test]
async fn a_cluster_paused_from_the_start_creates_nothing() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    f.edit_spec(|s| s["clusterOperation"] = json!({"reconciliationPaused": true}));
    assert_eq!(f.reconcile().await, [STATUS]);
    assert!(f.get(DEPLOY_PATH).is_none());
    let (status, reason, _) = f.condition("Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ReconciliationPaused")
    );
}

#[tokio::test]
async fn a_new_restart_nonce_rolls_the_pods_and_leaves_the_config_alone() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    f.reconcile().await;
    let (hash, cm) = (f.pod_hash(), f.get(CM_PATH).unwrap());
    f.edit_spec(|s| s["clusterOperation"] = json!({"restartNonce": "1"}));
    f.reconcile().await;
    let annotations = &f.get(DEPLOY_PATH).unwrap()["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations[resources::RESTART_NONCE_ANNOTATION], "1");
    assert_eq!(f.pod_hash(), hash);
    assert_eq!(f.get(CM_PATH).unwrap(), cm);
}

#[tokio::test]
async fn status_carries_the_engine_pods_selector_for_the_scale_subresource() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1", "replicas": 3}));
    f.reconcile().await;
    let st = f.cluster().status.clone().unwrap();
    assert_eq!(
        st.selector.as_deref(),
        Some("app.kubernetes.io/instance=demo,app.kubernetes.io/name=sqe-engine")
    );
}
