//! Rotation decisions, pure: what is stored and the time in, what to do out. No I/O, no clock.
//!
//! The order that keeps admission working through a rotation (the API server must trust whatever
//! certificate any webhook replica serves at any moment):
//! 1. A new CA is added to the trust bundle next to the old one, and the bundle is published in
//!    the webhook configuration, while the replicas still serve the old CA's certificate.
//! 2. Only once the configuration carries the new CA is a serving certificate signed by it; the
//!    kubelet then updates the replicas' files over the next minute or so. Both CAs are trusted.
//! 3. The old CA leaves the bundle when it has expired, or `overlap` after the new serving
//!    certificate was issued, whichever comes first.

use std::collections::BTreeSet;
use std::net::IpAddr;

use time::{Duration, OffsetDateTime};

use super::authority::BACKDATE;

/// At most this many CAs are trusted at once, however often rotation is forced.
pub const MAX_TRUSTED: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// When we issued it (we backdate `not_before`).
    pub fn issued_at(&self) -> OffsetDateTime {
        self.not_before + BACKDATE
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// Lifetime of a serving certificate (capped at the signing CA's expiry).
    pub valid_for: Duration,
    pub ca_valid_for: Duration,
    /// Renew a certificate (CA or serving) when less than this is left.
    pub renew_before: Duration,
    /// How long a replaced CA stays trusted after the serving certificate moved to the new one.
    pub overlap: Duration,
    /// Names the serving certificate must carry, exactly.
    pub names: Names,
}

/// What the Secret holds, as facts.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// The trusted CAs, the signing CA first.
    pub bundle: Vec<Validity>,
    /// The first CA of the bundle comes with its key.
    pub signing_key: bool,
    pub serving: Option<Serving>,
}

#[derive(Debug, Clone)]
pub struct Serving {
    pub validity: Validity,
    pub names: Names,
    /// Index in the bundle of the CA whose signature it carries, if any.
    pub issuer: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Generate a new signing CA, and why.
    pub new_ca: Option<String>,
    /// Indices of the stored CAs that stay in the bundle, in order (after a new CA if any).
    pub keep: Vec<usize>,
    /// Issue a new serving certificate from the signing CA, and why.
    pub reissue: Option<String>,
}

impl Plan {
    pub fn changes_bundle(&self, stored: &Stored) -> bool {
        self.new_ca.is_some() || self.keep != (0..stored.bundle.len()).collect::<Vec<_>>()
    }

    pub fn is_noop(&self, stored: &Stored) -> bool {
        self.reissue.is_none() && !self.changes_bundle(stored)
    }
}

pub fn plan(stored: &Stored, now: OffsetDateTime, policy: &Policy) -> Plan {
    let new_ca = match stored.bundle.first() {
        None => Some("no CA yet".to_owned()),
        Some(_) if !stored.signing_key => Some("the CA key is missing or does not match".to_owned()),
        Some(ca) if now + policy.renew_before >= ca.not_after => {
            Some(format!("the CA expires at {}, renewing {} before", show(ca.not_after), policy.renew_before))
        }
        Some(_) => None,
    };

    let serving = stored.serving.as_ref();
    // Replicas may still serve any certificate of the last `overlap`: until then every unexpired
    // CA stays trusted. Without a serving certificate nothing is served from the Secret yet.
    let settled = serving.is_some_and(|s| now >= s.validity.issued_at() + policy.overlap);
    let mut keep: Vec<usize> = (0..stored.bundle.len())
        .filter(|&i| now < stored.bundle[i].not_after)
        .filter(|&i| {
            let signing = i == 0 && new_ca.is_none();
            let serves = serving.is_some_and(|s| s.issuer == Some(i));
            signing || serves || !settled
        })
        .collect();
    let room = MAX_TRUSTED - usize::from(new_ca.is_some());
    if keep.len() > room {
        // The signing CA and the serving certificate's issuer first, then the newest others.
        keep.sort_by_key(|&i| {
            let needed = (i == 0 && new_ca.is_none()) || serving.is_some_and(|s| s.issuer == Some(i));
            (!needed, std::cmp::Reverse(stored.bundle[i].not_before))
        });
        keep.truncate(room);
        keep.sort_unstable();
    }

    let reissue = match serving {
        None => Some("no serving certificate yet".to_owned()),
        Some(_) if new_ca.is_some() => Some("the CA is being renewed".to_owned()),
        Some(s) if s.issuer != Some(0) => Some("it is not signed by the current CA".to_owned()),
        Some(s) if s.names != policy.names => Some("its names differ from the Service's".to_owned()),
        Some(s) if now + policy.renew_before >= s.validity.not_after => Some(format!(
            "it expires at {}, renewing {} before",
            show(s.validity.not_after),
            policy.renew_before
        )),
        Some(s) if now < s.validity.not_before => Some("it is not valid yet (clock skew?)".to_owned()),
        Some(_) => None,
    };
    Plan { new_ca, keep, reissue }
}

/// The serving certificate's expiry: `valid_for` from now, but never past its CA's.
pub fn serving_not_after(now: OffsetDateTime, policy: &Policy, ca: &Validity) -> OffsetDateTime {
    (now + policy.valid_for).min(ca.not_after)
}

/// RFC 3339, for messages.
pub fn show(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2030-01-01 00:00 UTC);

    fn names() -> Names {
        Names { dns: ["svc".to_owned(), "svc.ns".to_owned()].into(), ips: BTreeSet::new() }
    }

    fn policy() -> Policy {
        Policy {
            valid_for: Duration::days(365),
            ca_valid_for: Duration::days(5 * 365),
            renew_before: Duration::days(30),
            overlap: Duration::hours(1),
            names: names(),
        }
    }

    /// Issued at `at` (with our backdating), valid for `days`.
    fn validity(at: OffsetDateTime, days: i64) -> Validity {
        Validity { not_before: at - BACKDATE, not_after: at + Duration::days(days) }
    }

    fn serving(at: OffsetDateTime, days: i64, issuer: usize) -> Serving {
        Serving { validity: validity(at, days), names: names(), issuer: Some(issuer) }
    }

    fn healthy() -> Stored {
        Stored { bundle: vec![validity(T0, 5 * 365)], signing_key: true, serving: Some(serving(T0, 365, 0)) }
    }

    #[test]
    fn nothing_stored_means_a_new_ca_and_certificate() {
        let p = plan(&Stored::default(), T0, &policy());
        assert!(p.new_ca.is_some());
        assert!(p.keep.is_empty());
        assert!(p.reissue.is_some());
    }

    #[test]
    fn a_fresh_secret_is_left_alone() {
        let stored = healthy();
        for at in [T0, T0 + Duration::days(100), T0 + Duration::days(334)] {
            let p = plan(&stored, at, &policy());
            assert!(p.is_noop(&stored), "{at}: {p:?}");
        }
    }

    #[test]
    fn the_serving_certificate_is_renewed_before_it_expires() {
        let stored = healthy();
        let p = plan(&stored, T0 + Duration::days(335), &policy());
        assert_eq!(p.new_ca, None);
        assert_eq!(p.keep, vec![0]);
        assert!(p.reissue.unwrap().contains("expires"));
    }

    #[test]
    fn the_ca_is_renewed_before_it_expires_and_the_old_one_stays_trusted() {
        let mut stored = healthy();
        let at = T0 + Duration::days(5 * 365 - 30);
        // The serving certificate was capped at the CA's expiry, so it is due as well.
        stored.serving = Some(serving(T0 + Duration::days(4 * 365), 365, 0));
        let p = plan(&stored, at, &policy());
        assert!(p.new_ca.unwrap().contains("CA expires"));
        assert_eq!(p.keep, vec![0], "the old CA signs what the replicas serve: still trusted");
        assert_eq!(p.reissue.as_deref(), Some("the CA is being renewed"));
    }

    #[test]
    fn a_renew_window_longer_than_the_validity_forces_rotation_every_time() {
        let stored = healthy();
        let forced = Policy { renew_before: Duration::days(10 * 365), ..policy() };
        let p = plan(&stored, T0 + Duration::minutes(1), &forced);
        assert!(p.new_ca.is_some());
        assert_eq!(p.keep, vec![0]);
        assert!(p.reissue.is_some());
    }

    #[test]
    fn after_the_switch_the_old_ca_stays_for_the_overlap_then_goes() {
        // Bundle: new CA (signing) then the old one; the serving certificate moved to the new CA at t.
        let t = T0 + Duration::days(1000);
        let stored = Stored {
            bundle: vec![validity(t, 5 * 365), validity(T0, 5 * 365)],
            signing_key: true,
            serving: Some(serving(t, 365, 0)),
        };
        let during = plan(&stored, t + Duration::minutes(59), &policy());
        assert!(during.is_noop(&stored), "{during:?}");
        let after = plan(&stored, t + Duration::hours(1), &policy());
        assert_eq!(after.keep, vec![0]);
        assert_eq!(after.new_ca, None);
        assert_eq!(after.reissue, None);
    }

    #[test]
    fn an_expired_ca_leaves_the_bundle_even_during_the_overlap() {
        let t = T0 + Duration::days(5 * 365 + 1);
        let stored = Stored {
            bundle: vec![validity(t - Duration::days(10), 5 * 365), validity(T0, 5 * 365)],
            signing_key: true,
            serving: Some(serving(t, 365, 0)),
        };
        let p = plan(&stored, t + Duration::minutes(1), &policy());
        assert_eq!(p.keep, vec![0]);
    }

    #[test]
    fn while_the_serving_certificate_is_from_the_old_ca_it_is_moved_to_the_new_one() {
        // Interrupted rotation: new CA published, serving certificate not yet reissued.
        let stored = Stored {
            bundle: vec![validity(T0 + Duration::days(2), 5 * 365), validity(T0, 5 * 365)],
            signing_key: true,
            serving: Some(serving(T0, 365, 1)),
        };
        let p = plan(&stored, T0 + Duration::days(2) + Duration::minutes(1), &policy());
        assert_eq!(p.new_ca, None);
        assert_eq!(p.keep, vec![0, 1]);
        assert_eq!(p.reissue.as_deref(), Some("it is not signed by the current CA"));
    }

    #[test]
    fn changed_names_or_a_missing_key_are_repaired() {
        let mut stored = healthy();
        let mut p = policy();
        p.names.dns.insert("svc.ns.svc".to_owned());
        assert!(plan(&stored, T0, &p).reissue.unwrap().contains("names"));
        stored.signing_key = false;
        let p = plan(&stored, T0, &policy());
        assert!(p.new_ca.unwrap().contains("key"));
        assert!(p.reissue.is_some());
    }

    #[test]
    fn forced_rotations_never_grow_the_bundle_past_the_cap() {
        let forced = Policy { renew_before: Duration::days(10 * 365), ..policy() };
        let mut stored = healthy();
        let mut now = T0;
        for _ in 0..10 {
            now += Duration::minutes(1);
            let p = plan(&stored, now, &forced);
            assert!(p.new_ca.is_some());
            assert!(p.keep.len() < MAX_TRUSTED);
            // Apply the plan: new CA first, then the kept ones; the serving certificate moves to it.
            let mut bundle = vec![validity(now, 5 * 365)];
            bundle.extend(p.keep.iter().map(|&i| stored.bundle[i]));
            stored = Stored { bundle, signing_key: true, serving: Some(serving(now, 365, 0)) };
            assert!(stored.bundle.len() <= MAX_TRUSTED);
        }
        assert_eq!(stored.bundle.len(), MAX_TRUSTED);
    }

    #[test]
    fn the_serving_certificate_never_outlives_its_ca() {
        let ca = validity(T0, 100);
        assert_eq!(serving_not_after(T0, &policy(), &ca), ca.not_after);
        let ca = validity(T0, 5 * 365);
        assert_eq!(serving_not_after(T0, &policy(), &ca), T0 + Duration::days(365));
    }
}
