//! Per-StatefulSet settings of the role sidecar, by annotation on the StatefulSet: its requests and
//! limits (requests equal to limits make a Guaranteed pod possible), image, census poll interval
//! and unknown grace. Each one left out keeps the webhook's setting.

use std::borrow::Cow;

use crate::injection::duration::{parse_duration, parse_positive_duration};
use crate::injection::quantity;
use crate::injection::settings::InjectionSettings;

pub const SIDECAR_IMAGE: &str = "habitat/sidecar-image";
pub const SIDECAR_CPU_REQUEST: &str = "habitat/sidecar-cpu-request";
pub const SIDECAR_CPU_LIMIT: &str = "habitat/sidecar-cpu-limit";
pub const SIDECAR_MEMORY_REQUEST: &str = "habitat/sidecar-memory-request";
pub const SIDECAR_MEMORY_LIMIT: &str = "habitat/sidecar-memory-limit";
/// The sidecar's `--interval`: time between two census polls.
pub const SIDECAR_POLL_INTERVAL: &str = "habitat/sidecar-poll-interval";
/// The sidecar's `--unknown-grace`: how long the role may stay unknown before the label goes.
pub const SIDECAR_UNKNOWN_GRACE: &str = "habitat/sidecar-unknown-grace";

/// What the annotations set, each as written (trimmed) and already checked on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SidecarOverrides {
    pub image: Option<String>,
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
    pub poll_interval: Option<String>,
    pub unknown_grace: Option<String>,
}

impl SidecarOverrides {
    /// Reads the annotations through `get` (trimmed values); a bad one is an error naming it, its
    /// value, what is wrong and what it takes.
    pub fn read<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, String> {
        let image = get(SIDECAR_IMAGE).map(str::to_owned);
        if image.as_deref().is_some_and(|i| i.is_empty() || i.contains(char::is_whitespace)) {
            return Err(format!(
                "annotation {SIDECAR_IMAGE}={:?}: expected an image reference such as \
                 registry.example/hab-bootstrap:1.2.3 (or leave the annotation out for the webhook's)",
                image.unwrap_or_default()
            ));
        }
        let quantity = |key: &str| -> Result<Option<String>, String> {
            get(key)
                .map(|v| {
                    quantity::parse(v).map(|_| v.to_owned()).map_err(|e| format!("annotation {key}: {e}"))
                })
                .transpose()
        };
        let duration = |key: &str, flag: &str, parse: fn(&str) -> Result<std::time::Duration, String>| {
            get(key)
                .map(|v| {
                    parse(v).map(|_| v.to_owned()).map_err(|e| {
                        format!(
                            "annotation {key}={v:?} (the sidecar's {flag}): {e}; write e.g. 500ms, 2s or 1m"
                        )
                    })
                })
                .transpose()
        };
        Ok(Self {
            image,
            cpu_request: quantity(SIDECAR_CPU_REQUEST)?,
            cpu_limit: quantity(SIDECAR_CPU_LIMIT)?,
            memory_request: quantity(SIDECAR_MEMORY_REQUEST)?,
            memory_limit: quantity(SIDECAR_MEMORY_LIMIT)?,
            poll_interval: duration(SIDECAR_POLL_INTERVAL, "--interval", parse_positive_duration)?,
            unknown_grace: duration(SIDECAR_UNKNOWN_GRACE, "--unknown-grace", parse_duration)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The webhook's settings with these applied; refused when the result cannot be a container
    /// (a limit below its request) or when the webhook does not let StatefulSets pick the image.
    pub fn apply<'s>(&self, settings: &'s InjectionSettings) -> Result<Cow<'s, InjectionSettings>, String> {
        if self.image.is_some() && !settings.allow_sidecar_image_annotation {
            return Err(format!(
                "annotation {SIDECAR_IMAGE}: this webhook runs with --allow-sidecar-image-annotation=false, \
                 so the sidecar's image is the operator's ({}); remove the annotation",
                settings.sidecar_image
            ));
        }
        if self.is_empty() {
            return Ok(Cow::Borrowed(settings));
        }
        let mut merged = settings.clone();
        let set = |target: &mut String, value: &Option<String>| {
            if let Some(v) = value {
                target.clone_from(v);
            }
        };
        set(&mut merged.sidecar_image, &self.image);
        set(&mut merged.sidecar_cpu_request, &self.cpu_request);
        set(&mut merged.sidecar_cpu_limit, &self.cpu_limit);
        set(&mut merged.sidecar_memory_request, &self.memory_request);
        set(&mut merged.sidecar_memory_limit, &self.memory_limit);
        check_request_within_limit(
            "cpu",
            (&merged.sidecar_cpu_request, SIDECAR_CPU_REQUEST, self.cpu_request.is_some()),
            (&merged.sidecar_cpu_limit, SIDECAR_CPU_LIMIT, self.cpu_limit.is_some()),
        )?;
        check_request_within_limit(
            "memory",
            (&merged.sidecar_memory_request, SIDECAR_MEMORY_REQUEST, self.memory_request.is_some()),
            (&merged.sidecar_memory_limit, SIDECAR_MEMORY_LIMIT, self.memory_limit.is_some()),
        )?;
        Ok(Cow::Owned(merged))
    }
}

/// Each side is (value, annotation, set by the annotation rather than the webhook).
fn check_request_within_limit(
    resource: &str,
    (request, request_key, request_set): (&str, &str, bool),
    (limit, limit_key, limit_set): (&str, &str, bool),
) -> Result<(), String> {
    let (Ok(r), Ok(l)) = (quantity::parse(request), quantity::parse(limit)) else {
        // A bad webhook flag: the API server names it when it refuses the pod.
        return Ok(());
    };
    if r <= l {
        return Ok(());
    }
    let origin = |key: &str, set: bool| {
        if set { format!("annotation {key}") } else { format!("the webhook's default, unless {key} is set") }
    };
    Err(format!(
        "the sidecar's {resource} limit {limit} ({}) is below its request {request} ({}): set \
             {limit_key} to at least {request}, or {request_key} to at most {limit} (equal values for a \
             Guaranteed pod)",
        origin(limit_key, limit_set),
        origin(request_key, request_set),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<SidecarOverrides, String> {
        let map: BTreeMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        SidecarOverrides::read(|key| map.get(key).map(|v| v.trim()))
    }

    #[test]
    fn none_set_keeps_the_webhooks_settings() {
        let settings = InjectionSettings::default();
        let overrides = read(&[]).unwrap();
        assert!(overrides.is_empty());
        assert!(matches!(overrides.apply(&settings).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn each_annotation_replaces_its_setting() {
        let overrides = read(&[
            (SIDECAR_IMAGE, "registry.example/hab-bootstrap:9"),
            (SIDECAR_CPU_REQUEST, "50m"),
            (SIDECAR_CPU_LIMIT, "50m"),
            (SIDECAR_MEMORY_REQUEST, "48Mi"),
            (SIDECAR_MEMORY_LIMIT, "48Mi"),
            (SIDECAR_POLL_INTERVAL, "500ms"),
            (SIDECAR_UNKNOWN_GRACE, "10s"),
        ])
        .unwrap();
        let defaults = InjectionSettings::default();
        let merged = overrides.apply(&defaults).unwrap();
        assert_eq!(merged.sidecar_image, "registry.example/hab-bootstrap:9");
        assert_eq!(
            [&merged.sidecar_cpu_request, &merged.sidecar_cpu_limit],
            ["50m", "50m"].map(String::from).each_ref()
        );
        assert_eq!(
            [&merged.sidecar_memory_request, &merged.sidecar_memory_limit],
            ["48Mi", "48Mi"].map(String::from).each_ref()
        );
        assert_eq!(overrides.poll_interval.as_deref(), Some("500ms"));
        assert_eq!(overrides.unknown_grace.as_deref(), Some("10s"));
    }

    #[test]
    fn bad_values_say_what_is_wrong_and_what_to_write() {
        for (key, value, want) in [
            (SIDECAR_CPU_REQUEST, "lots", "does not start with a number"),
            (SIDECAR_MEMORY_LIMIT, "64MB", "unknown suffix \"MB\""),
            (SIDECAR_CPU_LIMIT, "-1", "negative"),
            (SIDECAR_POLL_INTERVAL, "0s", "must be longer than 0"),
            (SIDECAR_POLL_INTERVAL, "1", "missing unit"),
            (SIDECAR_UNKNOWN_GRACE, "soon", "expected a number"),
            (SIDECAR_IMAGE, "", "expected an image reference"),
            (SIDECAR_IMAGE, "a b", "expected an image reference"),
        ] {
            let err = read(&[(key, value)]).unwrap_err();
            assert!(err.contains(key) && err.contains(want), "{key}={value:?}: {err}");
        }
    }

    #[test]
    fn a_limit_below_its_request_names_both_and_the_fix() {
        // Against the webhook's default request (5m): the default is named as such.
        let err =
            read(&[(SIDECAR_CPU_LIMIT, "2m")]).unwrap().apply(&InjectionSettings::default()).unwrap_err();
        assert!(err.contains("cpu limit 2m (annotation habitat/sidecar-cpu-limit)"), "{err}");
        assert!(
            err.contains("request 5m (the webhook's default, unless habitat/sidecar-cpu-request"),
            "{err}"
        );
        assert!(err.contains("set habitat/sidecar-cpu-limit to at least 5m"), "{err}");
        // Units differ: compared by value, not by text.
        let err = read(&[(SIDECAR_MEMORY_REQUEST, "1Gi"), (SIDECAR_MEMORY_LIMIT, "1000Mi")])
            .unwrap()
            .apply(&InjectionSettings::default())
            .unwrap_err();
        assert!(err.contains("memory limit 1000Mi") && err.contains("request 1Gi"), "{err}");
        let equal = read(&[(SIDECAR_MEMORY_REQUEST, "1Gi"), (SIDECAR_MEMORY_LIMIT, "1024Mi")]).unwrap();
        assert!(equal.apply(&InjectionSettings::default()).is_ok());
    }

    #[test]
    fn the_operator_can_keep_the_image() {
        let overrides = read(&[(SIDECAR_IMAGE, "evil.example/x:1")]).unwrap();
        let settings =
            InjectionSettings { allow_sidecar_image_annotation: false, ..InjectionSettings::default() };
        let err = overrides.apply(&settings).unwrap_err();
        assert!(err.contains("--allow-sidecar-image-annotation=false") && err.contains("remove"), "{err}");
        // Other overrides stay allowed.
        assert!(read(&[(SIDECAR_CPU_LIMIT, "1")]).unwrap().apply(&settings).is_ok());
    }
}
