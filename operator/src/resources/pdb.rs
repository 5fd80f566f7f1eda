//! PodDisruptionBudget: voluntary evictions (node drains) take at most `maxUnavailable` pods
//! at once, so running sessions and queries are not all dropped together.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sqe_crds::SqeCluster;

use super::common::{meta, selector_labels};

pub fn build(cluster: &SqeCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(cluster, cluster.name_any()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(
                cluster
                    .spec
                    .disruption
                    .max_unavailable
                    .clone()
                    .unwrap_or(IntOrString::Int(1)),
            ),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
