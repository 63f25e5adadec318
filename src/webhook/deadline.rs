//! One deadline per review: the API server gives up on a webhook after its `timeoutSeconds` (sent
//! as `?timeout=` on every call), and whatever we answer after that is lost: the pod is refused by
//! failurePolicy with "context deadline exceeded" instead of our reason. The route sets the
//! deadline (the API server's timeout minus a margin) for the whole review, and every API read
//! made while reviewing takes what is left of it, so a reasoned denial arrives in time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// What the API server waits when the call has no `?timeout=` (its default for a webhook).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The API server's upper bound on `timeoutSeconds`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// The time kept back from the API server's timeout for the answer to travel and be read: a
/// quarter of it, at most one second.
pub fn margin(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(1))
}

/// The API server's timeout from a request's query string (`timeout=5s`, Go duration syntax as
/// the API server writes it: `5s`, `1m0s`, `500ms`), clamped to 30 s; the default without one.
pub fn timeout_from_query(query: Option<&str>) -> Duration {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(parse_go_duration)
        .filter(|t| !t.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(MAX_TIMEOUT)
}

fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(seconds).ok()?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// Runs `review` with `deadline` as the deadline of every read made under it.
pub async fn scope<F: Future>(deadline: Instant, review: F) -> F::Output {
    DEADLINE.scope(deadline, review).await
}

/// The time a read may take now: what is left of the review's deadline, at most `cap` (the
/// per-read bound); `cap` outside a review.
pub fn remaining(cap: Duration) -> Duration {
    DEADLINE.try_with(|d| d.saturating_duration_since(Instant::now())).map_or(cap, |left| left.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_api_servers_timeout() {
        assert_eq!(timeout_from_query(Some("timeout=5s")), Duration::from_secs(5));
        assert_eq!(timeout_from_query(Some("x=1&timeout=1m0s")), Duration::from_secs(30));
        assert_eq!(timeout_from_query(Some("timeout=1.5s")), Duration::from_millis(1500));
        assert_eq!(timeout_from_query(Some("timeout=250ms")), Duration::from_millis(250));
        assert_eq!(timeout_from_query(None), DEFAULT_TIMEOUT);
        for bad in ["timeout=", "timeout=5", "timeout=5x", "timeout=0s", "timeout=-1s"] {
            assert_eq!(timeout_from_query(Some(bad)), DEFAULT_TIMEOUT, "{bad}");
        }
    }

    #[test]
    fn the_margin_is_a_quarter_up_to_a_second() {
        assert_eq!(margin(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(margin(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(margin(Duration::from_secs(30)), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn remaining_is_capped_by_the_deadline() {
        let cap = Duration::from_secs(2);
        assert_eq!(remaining(cap), cap);
        scope(Instant::now() + Duration::from_millis(300), async {
            let left = remaining(cap);
            assert!(left <= Duration::from_millis(300) && left > Duration::from_millis(200), "{left:?}");
            tokio::time::sleep(Duration::from_millis(350)).await;
            assert_eq!(remaining(cap), Duration::ZERO);
        })
        .await;
        scope(Instant::now() + Duration::from_secs(60), async { assert_eq!(remaining(cap), cap) }).await;
    }
}
