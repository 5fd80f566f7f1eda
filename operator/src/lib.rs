//! The SQE operator: reconciles `SqeCluster` resources into engine Deployments.

pub mod crd_install;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod resources;
pub mod run;
pub mod status;
pub mod sweep;
