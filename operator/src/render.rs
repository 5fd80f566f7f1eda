//! `sqe-operator render -f FILE`: every object the operator would create for the SqeClusters
//! in FILE, as YAML, for GitOps review and tests. Owner references need the live object's UID,
//! so they are left out; the config hash covers the config only (secret values are not read).
//! The Secrets the operator generates for a session store (cluster keys, a managed store's
//! password) are made with fresh random values at reconcile time and are not rendered.

use k8s_openapi::api::apps::v1::Deployment;
use serde::Deserialize;
use serde::Serialize;
use sqe_crds::SqeCluster;

use crate::resources::{self, SecretDigests};

pub fn render(text: &str, default_namespace: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut found = 0;
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("SqeCluster") {
            continue;
        }
        found += 1;
        let mut cluster: SqeCluster = serde_yaml::from_value(value)?;
        if cluster.metadata.namespace.is_none() {
            cluster.metadata.namespace = Some(default_namespace.to_string());
        }
        let d = resources::build(&resources::validate(&cluster, &SecretDigests::default())?);
        push(&mut out, &d.service_account)?;
        push(&mut out, &d.config_map)?;
        push(&mut out, &d.service)?;
        push(&mut out, &d.pdb)?;
        push::<Deployment>(&mut out, &d.deployment)?;
        if let Some(h) = &d.hpa {
            push(&mut out, h)?;
        }
        if let Some(store) = &d.store {
            push(&mut out, &store.network_policy)?;
            push(&mut out, &store.service)?;
            push::<Deployment>(&mut out, &store.deployment)?;
        }
    }
    anyhow::ensure!(found > 0, "no SqeCluster in the input");
    Ok(out)
}

fn push<T: Serialize>(out: &mut String, obj: &T) -> anyhow::Result<()> {
    out.push_str("---\n");
    out.push_str(&serde_yaml::to_string(obj)?);
    Ok(())
}
