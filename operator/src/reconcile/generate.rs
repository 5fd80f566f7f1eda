//! Step 0: the Secrets the operator generates for a cluster (the cluster keys, the managed
//! session store's password), created once. An existing one is never read back or rewritten
//! here: it may have been rotated on purpose, and `dereference` digests it like any other.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use sqe_crds::SqeCluster;

use super::context::Context;
use crate::error::Result;
use crate::resources::session_store;

pub(super) async fn ensure_generated(ctx: &Context, cluster: &SqeCluster, ns: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for (name, kind) in session_store::generated(cluster) {
        if api.get_metadata_opt(&name).await?.is_some() {
            continue;
        }
        let data = session_store::contents(kind, rand::random());
        let secret = session_store::secret(cluster, &name, data);
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                ctx.metrics.count_write("Secret", "create");
                tracing::info!(secret = %name, "generated a Secret the cluster needs");
            }
            // Another reconcile (a second operator replica before it lost its lease) won.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
