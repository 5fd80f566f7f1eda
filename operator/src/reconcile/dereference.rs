//! Step 1: the objects the spec refers to, read. Only the digests of the Secret values used are
//! kept (they roll the pods when a Secret rotates), never the values.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use sqe_crds::SqeCluster;

use crate::error::Result;
use crate::resources::{SecretDigests, session_store};
use crate::status::Problem;

/// Read the Secrets the spec references; return digests of the used values, or the first
/// problem (missing Secret or key) with a message naming the spec field.
pub async fn read_secrets(
    client: &Client,
    ns: &str,
    cluster: &SqeCluster,
) -> Result<(SecretDigests, Option<Problem>)> {
    let spec = &cluster.spec;
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut wanted: Vec<(String, String, &'static str)> = Vec::new();
    if let Some(r) = &spec.oidc.client_secret_ref {
        wanted.push((r.name.clone(), r.key.clone(), "spec.oidc.clientSecretRef"));
    }
    if let Some(r) = &spec.polaris.ca_secret_ref {
        wanted.push((r.name.clone(), r.key.clone(), "spec.polaris.caSecretRef"));
    }
    if let Some(t) = &spec.tls {
        for key in ["tls.crt", "tls.key"] {
            wanted.push((t.secret_name.clone(), key.into(), "spec.tls.secretName"));
        }
    }
    if let Some(r) = session_store::keys_ref(cluster) {
        wanted.push((r.name, r.key, "spec.sessionStore.keysSecretRef"));
    }
    if let Some(r) = session_store::password_ref(cluster) {
        wanted.push((r.name, r.key, "spec.sessionStore (the store's password)"));
    }
    if spec
        .session_store
        .as_ref()
        .is_some_and(|s| s.managed.is_some())
    {
        let name = session_store::store_name(cluster);
        let key = session_store::STORE_CONFIG_KEY.to_string();
        wanted.push((
            name,
            key,
            "spec.sessionStore.managed (the store's configuration)",
        ));
    }
    if let Some(r) = session_store::ca_ref(cluster) {
        let (name, key) = (r.name.clone(), r.key.clone());
        wanted.push((name, key, "spec.sessionStore.external.caSecretRef"));
    }
    let mut digests = SecretDigests::default();
    let mut fetched: HashMap<String, Option<Secret>> = HashMap::new();
    for (name, key, field) in wanted {
        if !fetched.contains_key(&name) {
            fetched.insert(name.clone(), api.get_opt(&name).await?);
        }
        let Some(secret) = fetched.get(&name).and_then(Option::as_ref) else {
            let msg = format!("Secret {ns}/{name} referenced by {field} not found");
            return Ok((digests, Some(Problem::new("SecretMissing", msg))));
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&key))
            .map(|b| b.0.clone())
            .or_else(|| {
                let s = secret.string_data.as_ref()?.get(&key)?;
                Some(s.clone().into_bytes())
            });
        match value {
            Some(v) => digests.add(&format!("{name}/{key}"), &v),
            None => {
                let msg = format!("Secret {ns}/{name} referenced by {field} has no key `{key}`");
                return Ok((digests, Some(Problem::new("SecretKeyMissing", msg))));
            }
        }
    }
    Ok((digests, None))
}
