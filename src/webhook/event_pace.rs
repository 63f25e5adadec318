//! Events at the pace Kubernetes' own controllers keep: a rollout of a thousand pods should
//! not write a thousand `Injected` Events (each one an API write and an etcd record, next to the
//! pod creations they describe), when the StatefulSet controller's `SuccessfulCreate` for the same
//! pods stops at a few dozen.
//!
//! client-go's event recorder lets one object have 25 Events of a type at once and earn one more
//! every 5 minutes (`EventSourceObjectSpamFilter`, keyed by the object and the Event's type); our
//! Events get the same per StatefulSet (its uid) and type. A rollout's first 25 pods get their
//! `Injected` Event, and a problem's first 25 its Warning; every injection, skip and denial is still
//! counted (`hab_bootstrap_{injections,skips,denials}_total`) and logged, and every injected pod
//! carries its record (the status annotation).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tracing::debug;

use crate::webhook::admission::{EventSink, PodEvent};

/// Events of a type a StatefulSet may get at once (client-go: 25).
pub const EVENT_BURST: u32 = 25;
/// And how often it earns one more (client-go: every 5 minutes).
pub const EVENT_PERIOD: Duration = Duration::from_secs(300);
/// Above this many StatefulSets remembered, those whose allowance is whole again are forgotten.
const REMEMBERED: usize = 1024;

/// An [`EventSink`] that passes Events on at client-go's pace per StatefulSet and type.
pub struct Paced<E> {
    inner: E,
    allowance: DefaultKeyedRateLimiter<String>,
}

impl<E> Paced<E> {
    pub fn new(inner: E) -> Self {
        let quota = Quota::with_period(EVENT_PERIOD)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(EVENT_BURST).expect("a non-zero burst"));
        Self { inner, allowance: RateLimiter::keyed(quota) }
    }
}

impl<E: EventSink> EventSink for Paced<E> {
    fn publish(&self, event: PodEvent<'_>) {
        let PodEvent { pod, event_type, reason, .. } = event;
        let meta = &event.statefulset.metadata;
        let (ns, name) =
            (meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default());
        let key = format!("{ns}/{name}/{}/{event_type:?}", meta.uid.as_deref().unwrap_or_default());
        if self.allowance.len() > REMEMBERED {
            self.allowance.retain_recent();
        }
        if self.allowance.check_key(&key).is_err() {
            debug!(namespace = ns, statefulset = name, pod, reason, "Event held back (client-go's pace)");
            return;
        }
        self.inner.publish(event);
    }
}
