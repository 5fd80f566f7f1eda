//! `sqe-operator run`: leader election, then the controller; metrics and health throughout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use sqe_crds::SqeCluster;
use tokio::sync::watch;

use crate::leader::LeaderElector;
use crate::metrics::{self, Metrics};
use crate::reconcile::{Context, error_policy, reconcile};
use crate::resources::MANAGED_SELECTOR;

pub struct RunOptions {
    pub metrics_addr: SocketAddr,
    /// Watch only these namespaces (then Roles in them suffice); all namespaces when empty.
    pub namespaces: Vec<String>,
    /// Bring the SqeCluster CRD up to date once leading (`crd_install`).
    pub apply_crd: bool,
    pub leader_election: bool,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
}

/// How long a freshly applied CRD may take to be served.
const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let m = Arc::new(Metrics::default());
    let server = tokio::spawn(metrics::serve(opts.metrics_addr, m.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let elector = opts.leader_election.then(|| {
        LeaderElector::new(
            client.clone(),
            &opts.lease_namespace,
            &opts.lease_name,
            &opts.identity,
            opts.lease_duration,
        )
    });
    let renew_every = opts.lease_duration / 3;

    // A standby is healthy and ready: it is doing its job (waiting).
    m.ready.store(true, Ordering::Relaxed);
    if let Some(e) = &elector {
        tracing::info!(identity = e.identity(), lease = %opts.lease_name, "waiting for leadership");
        loop {
            if *stop_rx.borrow() {
                return Ok(());
            }
            match e.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "leader election"),
            }
            let mut rx = stop_rx.clone();
            tokio::select! {
                _ = tokio::time::sleep(renew_every) => {}
                _ = rx.changed() => {}
            }
        }
        tracing::info!(identity = e.identity(), "acquired leadership");
    }
    m.set_leader(true);

    // Lost leadership (could not renew in time) stops the controller; the process exits
    // non-zero so the pod restarts as a standby rather than risking two writers.
    let (lost_tx, lost_rx) = watch::channel(false);
    if let Some(e) = elector.as_ref().map(|e| {
        LeaderElector::new(
            client.clone(),
            &opts.lease_namespace,
            &opts.lease_name,
            e.identity(),
            opts.lease_duration,
        )
    }) {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut last_ok = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(renew_every) => {}
                    _ = stop.changed() => return,
                }
                match e.try_acquire_or_renew().await {
                    Ok(true) => last_ok = tokio::time::Instant::now(),
                    Ok(false) => {
                        tracing::error!("leadership taken by another replica");
                        let _ = lost_tx.send(true);
                        return;
                    }
                    Err(err) => tracing::warn!(error = %err, "lease renewal failed"),
                }
                if last_ok.elapsed() > e.lease_duration {
                    tracing::error!("could not renew the lease in time");
                    let _ = lost_tx.send(true);
                    return;
                }
            }
        });
    }

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "sqe-operator".into(),
            instance: Some(opts.identity.clone()),
        },
    );
    let ctx = Arc::new(Context::new(client.clone(), Some(recorder), m.clone()));

    if opts.apply_crd {
        // Before the controller: its watch on SqeClusters needs the CRD served, and fields
        // this version added must not be pruned from what users apply meanwhile.
        if let Err(e) = crate::crd_install::apply_own_crd(&client, CRD_ESTABLISHED_TIMEOUT).await {
            m.set_leader(false);
            if let Some(el) = &elector {
                el.release().await;
            }
            server.abort();
            return Err(e);
        }
    }

    // One controller per watched namespace (a namespaced watch needs only a Role there), or
    // one over all namespaces. They share the context: metrics, events and backoff.
    let scopes: Vec<Option<String>> = if opts.namespaces.is_empty() {
        vec![None]
    } else {
        opts.namespaces.iter().cloned().map(Some).collect()
    };
    futures::future::join_all(scopes.into_iter().map(|ns| {
        let mut stop = stop_rx.clone();
        let mut lost = lost_rx.clone();
        let shutdown = async move {
            tokio::select! {
                _ = stop.changed() => {}
                _ = lost.changed() => {}
            }
        };
        controller(client.clone(), ns, ctx.clone(), shutdown)
    }))
    .await;

    m.set_leader(false);
    if let Some(e) = &elector {
        if *lost_rx.borrow() {
            server.abort();
            anyhow::bail!("lost leadership");
        }
        e.release().await;
        tracing::info!("released leadership");
    }
    server.abort();
    Ok(())
}

/// The SqeCluster controller over one namespace (`Some`) or all of them (`None`), until
/// `shutdown` resolves.
async fn controller(
    client: Client,
    ns: Option<String>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = ns.as_deref();
    let clusters: Api<SqeCluster> = scoped(&client, ns);
    let owned = watcher::Config::default().labels(MANAGED_SELECTOR);
    let controller = Controller::new(clusters, watcher::Config::default().any_semantic());
    let store = controller.store();
    // Secrets: metadata only (their values never enter the operator's watch stream); a change
    // to a referenced Secret triggers its SqeClusters, whose reconcile re-hashes the value.
    let secrets = watcher(
        scoped::<PartialObjectMeta<Secret>>(&client, ns),
        watcher::Config::default(),
    )
    .touched_objects();
    controller
        .owns(scoped::<Deployment>(&client, ns), owned.clone())
        .owns(scoped::<ConfigMap>(&client, ns), owned.clone())
        .owns(scoped::<Service>(&client, ns), owned.clone())
        .owns(scoped::<ServiceAccount>(&client, ns), owned.clone())
        .owns(scoped::<PodDisruptionBudget>(&client, ns), owned.clone())
        .owns(
            scoped::<HorizontalPodAutoscaler>(&client, ns),
            owned.clone(),
        )
        .owns(scoped::<NetworkPolicy>(&client, ns), owned)
        .watches_stream(secrets, move |secret| {
            let ns = secret.namespace();
            let name = secret.name_any();
            store
                .state()
                .into_iter()
                .filter(|c| c.namespace() == ns && references_secret(c, &name))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}

fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

pub fn references_secret(c: &SqeCluster, name: &str) -> bool {
    let s = &c.spec;
    s.oidc
        .client_secret_ref
        .as_ref()
        .is_some_and(|r| r.name == name)
        || s.polaris
            .ca_secret_ref
            .as_ref()
            .is_some_and(|r| r.name == name)
        || s.tls.as_ref().is_some_and(|t| t.secret_name == name)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
