//! The engine pods' own identity. The engine never calls the Kubernetes API, so no token is
//! mounted and no Role is bound.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt;
use sqe_crds::SqeCluster;

use super::common::meta;

pub fn build(cluster: &SqeCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(cluster, cluster.name_any()),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}
