//! Reconcile decisions against a fake API server (kube-rs `tower-test` style): the client
//! talks HTTP to an in-memory object store, and each test checks which writes were sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

type Objects = Arc<Mutex<BTreeMap<String, Value>>>;

struct Fake {
    objects: Objects,
    calls: Arc<Mutex<Vec<String>>>,
    ctx: Arc<Context>,
}

const CLUSTER_PATH: &str = "/apis/sqe.io/v1alpha1/namespaces/ns/sqeclusters/demo";
const SECRET_PATH: &str = "/api/v1/namespaces/ns/secrets/oidc";

fn status_json(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
           "message": reason, "code": code})
}

impl Fake {
    fn new() -> Self {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let objects: Objects = Arc::default();
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let (o, c) = (objects.clone(), calls.clone());
        tokio::spawn(async move {
            let mut rv = 100;
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().clone();
                let path = req.uri().path().to_string();
                let body = req.into_body().collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                c.lock().unwrap().push(format!("{method} {path}"));
                let (key, sub_status) = match path.strip_suffix("/status") {
                    Some(k) => (k.to_string(), true),
                    None => (path.clone(), false),
                };
                let mut objs = o.lock().unwrap();
                rv += 1;
                let (code, out) = match method {
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
                    Method::PATCH => {
                        let mut v = body;
                        v["metadata"]["uid"] = json!(format!("uid-{rv}"));
                        v["metadata"]["resourceVersion"] = json!(rv.to_string());
                        objs.insert(key, v.clone());
                        (200, v)
                    }
                    Method::DELETE => match objs.remove(&key) {
                        Some(_) => (
                            200,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                        ),
                        None => (404, status_json(404, "NotFound")),
                    },
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
            ctx,
        }
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
        self.calls.lock().unwrap().clear();
        reconcile(self.cluster(), self.ctx.clone()).await.unwrap();
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.starts_with("GET "))
            .cloned()
            .collect()
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

#[tokio::test]
async fn creates_every_object_then_an_unchanged_cluster_writes_nothing() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    let writes = f.reconcile().await;
    assert_eq!(
        writes,
        [
            "PATCH /api/v1/namespaces/ns/serviceaccounts/demo",
            "PATCH /api/v1/namespaces/ns/configmaps/demo-config",
            "PATCH /api/v1/namespaces/ns/services/demo",
            "PATCH /apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo",
            DEPLOY,
            STATUS,
        ]
    );
    let dep = f
        .get("/apis/apps/v1/namespaces/ns/deployments/demo")
        .unwrap();
    assert_eq!(dep["metadata"]["ownerReferences"][0]["uid"], "cluster-uid");
    let cluster = f.cluster();
    let st = cluster.status.as_ref().unwrap();
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.endpoint.as_deref(), Some("grpc://demo.ns.svc:50051"));
    assert_eq!(f.condition("Degraded").0, "False");

    // Second pass over the same state: no apply, no status patch.
    assert_eq!(f.reconcile().await, Vec::<String>::new());
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
async fn rotated_secret_rolls_only_the_deployment() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    f.reconcile().await;
    let before = f.pod_hash();
    f.put_secret("s2");
    let writes = f.reconcile().await;
    assert_eq!(
        writes,
        [DEPLOY, STATUS],
        "only the pod template hash (and status) change"
    );
    assert_ne!(f.pod_hash(), before);
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
    f.put_cluster(json!({"image": "sqe:1", "replicas": 3, "logLevel": "debug"}));
    let writes = f.reconcile().await;
    assert!(writes.contains(&"PATCH /api/v1/namespaces/ns/configmaps/demo-config".to_string()));
    assert_ne!(f.pod_hash(), h1, "config change rolls");
}

#[tokio::test]
async fn autoscaling_creates_the_hpa_and_switching_off_deletes_it() {
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

    // The fake stores the applied body; give the HPA our owner reference as the API would.
    let mut hpa = f.get(HPA_PATH).unwrap();
    assert_eq!(hpa["metadata"]["ownerReferences"][0]["uid"], "cluster-uid");
    hpa["metadata"]["resourceVersion"] = json!("1");
    f.put(HPA_PATH, hpa);

    f.put_cluster(json!({"image": "sqe:1", "replicas": 2}));
    let writes = f.reconcile().await;
    assert!(writes.contains(&format!("DELETE {HPA_PATH}")), "{writes:?}");
    assert!(f.get(HPA_PATH).is_none());
}

#[tokio::test]
async fn foreign_hpa_is_left_alone() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    f.put(
        HPA_PATH,
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "demo", "namespace": "ns"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "other"}, "maxReplicas": 3}}),
    );
    let writes = f.reconcile().await;
    assert!(
        !writes.iter().any(|w| w.starts_with("DELETE")),
        "{writes:?}"
    );
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
async fn drifted_field_is_reapplied() {
    let f = Fake::new();
    f.put_secret("s1");
    f.put_cluster(json!({"image": "sqe:1"}));
    f.reconcile().await;
    let path = "/api/v1/namespaces/ns/services/demo";
    let mut svc = f.get(path).unwrap();
    svc["spec"]["sessionAffinity"] = json!("None");
    f.put(path, svc);
    assert_eq!(f.reconcile().await, [format!("PATCH {path}")]);
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
