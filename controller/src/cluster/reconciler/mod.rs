//! The reconcile loop. Each reconcile of a Canary:
//!
//! 1. reads the rollout state recorded in its status (a new Canary starts from the default);
//! 2. reads the target, the primary and the routes, and gathers what [`wants`] asks for:
//!    metric readings, webhook answers, an operator's command;
//! 3. calls the pure [`advance`] and carries out its actions in order;
//! 4. writes the new state into the status (only when it changed) and requeues: after the
//!    analysis interval, or sooner while it waits on workloads or gates.
//!
//! Nothing a decision depends on is remembered between reconciles (only the retry backoff is): a
//! controller restarted at any point rebuilds everything from the cluster and makes the same
//! writes it would have made.
//!
//! Every API call but a watch has a deadline ([`super::deadline`]): a call never answered ends
//! the reconcile with an error naming it, retried with the backoff like any failed call.
//!
//! Bad input (an invalid spec, a missing target, a Deployment without selector, a status that is
//! not a rollout state) is reported with a Warning Event and a status message, once, and the
//! Canary is looked at again later. Routes edited by hand are put back, with an Event.
//!
//! The rooms: [`context`] (what every reconcile needs), [`wiring`] (the watches), `tick` (one
//! reconcile), `finalizer` (held only while there is something to clean up), `observing` (the observation plan's executor), `actions` (carrying out the core's
//! actions), `repairs` (what is put back every tick), `problems` (conditions and Events) and
//! `take_over` (a Flagger Canary's first reconcile under `--flagger-canaries`) with `adoption`
//! (the objects Flagger created made Fledge's).

mod actions;
mod adoption;
mod context;
mod finalizer;
mod observing;
mod problems;
mod repairs;
mod sources;
mod take_over;
mod tick;
mod wiring;

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use tracing::{Instrument, info_span, warn};

use super::{Error, Result, flagger};
use crate::spec::Canary;
use context::key;
use tick::Tick;

pub use context::{Backoff, Clock, Config, Context};
pub use wiring::run;
// The standalone controller (`crate::local`) paces and reports its ticks as a reconcile does.
pub(crate) use actions::notify;
pub(crate) use context::reporter;
pub(crate) use observing::{Asked, call_hooks};
pub(crate) use problems::{event_reason, note_of};
pub(crate) use tick::requeue_after;

/// Reconciles one Canary: a tick of the rollout or, once it is deleted, its cleanup and then
/// the finalizer's removal.
pub async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Requeue> {
    // Only a Canary read from Flagger's API passes for one of Flagger's.
    let canary = flagger::unmarked(&canary).map_or(canary, Arc::new);
    reconcile_canary(canary, ctx).await
}

/// Reconciles one of Flagger's Canaries (`--flagger-canaries`): taken over in place, then
/// reconciled as any Canary ([`super::flagger`]).
pub async fn reconcile_flagger(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Requeue> {
    match flagger::to_canary(&object) {
        Ok(canary) => reconcile_canary(Arc::new(canary), ctx).await,
        Err(e) => {
            // Flagger's schema admitted it; Fledge cannot read it. Said once per reconcile,
            // slowly: only an edit of the Canary changes it.
            let message = format!(
                "Flagger Canary {}: {e}; Fledge leaves it alone until it is fixed",
                object.name_any()
            );
            warn!(%message, "cannot read canary");
            let event = KubeEvent {
                type_: EventType::Warning,
                reason: "InvalidSpec".into(),
                note: Some(problems::note_of(&message).to_string()),
                action: "Reconcile".into(),
                secondary: None,
            };
            let reference = kube::Resource::object_ref(&*object, &flagger::canary_resource());
            let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
            if let Err(e) = recorder.publish(&event, &reference).await {
                ctx.metrics.reconcile_failed(&Error::PublishEvent(e));
            }
            Ok(Requeue::requeue(ctx.config.poll * 6))
        }
    }
}

async fn reconcile_canary(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Requeue> {
    let namespace = canary.namespace().ok_or(Error::Unnamed("namespace"))?;
    let name = canary.name_any();
    let span = info_span!("reconcile", namespace = %namespace, canary = %name);
    let _timer = ctx.metrics.reconcile_started();
    let key = key(&canary);
    let result = async {
        let tick = Tick::new(&canary, &ctx)?;
        if canary.metadata.deletion_timestamp.is_none() {
            if let Some(refused) = tick.refuse_unsupported_sources().await? {
                return Ok(refused);
            }
            match tick.take_over().await? {
                Some(done) => Ok(done),
                None => tick.apply().await,
            }
        } else if !tick.held() {
            Ok(Requeue::await_change())
        } else {
            match tick.cleanup().await? {
                Some(wait) => Ok(wait),
                None => tick.release().await.map(|()| Requeue::await_change()),
            }
        }
    }
    .instrument(span)
    .await;
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// Counts the failure and retries after a pause that doubles with each consecutive failure.
pub fn error_policy(canary: Arc<Canary>, error: &Error, ctx: Arc<Context>) -> Requeue {
    failed(key(&canary), error, &ctx)
}

/// [`error_policy`] for Flagger's Canaries.
pub fn flagger_error_policy(
    object: Arc<DynamicObject>,
    error: &Error,
    ctx: Arc<Context>,
) -> Requeue {
    let key = (object.namespace().unwrap_or_default(), object.name_any());
    failed(key, error, &ctx)
}

fn failed(key: (String, String), error: &Error, ctx: &Context) -> Requeue {
    warn!(namespace = %key.0, canary = %key.1, %error, "reconcile failed");
    ctx.metrics.reconcile_failed(error);
    Requeue::requeue(ctx.backoff.failed(key, ctx.config.retry))
}
