//! The Flight SQL Service. Sessions live in one pod's memory, so `sessionAffinity: ClientIP`
//! keeps a client's calls on the pod that holds its session. Limitation until sessions are
//! shared: clients behind one NAT land on one pod, and a pod restart drops its sessions.
//!
//! An exposed Service (`NodePort`, `LoadBalancer`) keeps client addresses
//! (`externalTrafficPolicy: Local`): with the default, `Cluster`, every connection arrives from
//! a node's address, and the engine's per-address login throttle would count all clients
//! behind one node as one.

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sqe_crds::{ServiceType, SqeCluster};

use super::common::{meta, selector_labels};

/// Affinity must outlive a session; Kubernetes caps the timeout at one day.
const MAX_AFFINITY_SECONDS: u32 = 86_400;

pub fn build(cluster: &SqeCluster) -> Service {
    let spec = &cluster.spec;
    let mut m = meta(cluster, cluster.name_any());
    if !spec.service.annotations.is_empty() {
        m.annotations = Some(spec.service.annotations.clone());
    }
    let lifetime = spec
        .engine
        .session
        .max_lifetime_seconds
        .unwrap_or(8 * 3600)
        .min(MAX_AFFINITY_SECONDS);
    Service {
        metadata: m,
        spec: Some(ServiceSpec {
            type_: Some(spec.service.type_.as_str().into()),
            selector: Some(selector_labels(cluster)),
            ports: Some(vec![ServicePort {
                name: Some("flight".into()),
                port: spec.service.port,
                target_port: Some(IntOrString::String("flight".into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("grpc".into()),
                ..Default::default()
            }]),
            external_traffic_policy: exposed(spec.service.type_).then(|| "Local".into()),
            session_affinity: Some("ClientIP".into()),
            session_affinity_config: Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(lifetime as i32),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether the Service takes traffic from outside the cluster, where client addresses matter.
fn exposed(kind: ServiceType) -> bool {
    matches!(kind, ServiceType::NodePort | ServiceType::LoadBalancer)
}

/// The in-cluster Flight URI reported in `status.endpoint`.
pub fn endpoint(cluster: &SqeCluster) -> Option<String> {
    let ns = cluster.namespace()?;
    let scheme = if cluster.spec.tls.is_some() {
        "grpc+tls"
    } else {
        "grpc"
    };
    Some(format!(
        "{scheme}://{}.{ns}.svc:{}",
        cluster.name_any(),
        cluster.spec.service.port
    ))
}
