//! `GET /events`: the event stream, as dockerd serves it: recorded events of the `since`/`until`
//! window first, then live ones, one JSON object per line, each flushed as it happens; the
//! stream ends at `until` (at once when `until` is past) or when the client goes away.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::HttpResponse;
use futures_util::stream::{self, Stream};

use super::connection::{on_hang_up, ClientSocket, Watch};
use super::filters::Filters;
use super::Call;
use crate::error::{Error, Result};
use crate::events::{Event, EventFilter, Lagged, Subscription};
use crate::gojson::go_quote;

pub async fn events(call: Call) -> Result<HttpResponse> {
    let since_text = call.query("since");
    let until_text = call.query("until");
    let since = event_time(&since_text)?;
    let until = event_time(&until_text)?;
    let now = now_nanos();
    // An absent `since` is Go's zero time, before any `until`.
    if let (Some(until), Some(since)) = (until, since) {
        if until < since {
            return Err(Error::InvalidParameter(format!(
                "`since` time ({since_text}) cannot be after `until` time ({until_text})"
            )));
        }
    }
    let only_past = until.is_some_and(|until| until < now);
    let filter = EventFilter::new(
        Filters::parse_request(&call.query("filters"), &call.compat)?.into_fields(),
    );
    let legacy = call.compat.legacy();
    let (past, subscription) = call.state.events.subscribe(since, until, move |event| {
        event.visible_to(legacy) && filter.includes(&event.message)
    });
    let live = (!only_past).then(|| Live {
        // A client that leaves while nothing happens is noticed by a watcher, which ends
        // the subscription (and with it the stream).
        _watch: on_hang_up(
            call.req.conn_data::<ClientSocket>().cloned(),
            CLIENT_CHECK,
            {
                let canceller = subscription.canceller();
                move || canceller.cancel()
            },
        ),
        subscription,
        // Ends the stream at `until`; none means never.
        deadline: until.map(|until| {
            let wait = Duration::from_nanos(until.saturating_sub(now).max(0) as u64);
            Box::pin(tokio::time::sleep(wait))
        }),
    });
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", "application/json"))
        .streaming(event_lines(past, live)))
}

struct Live {
    subscription: Subscription,
    _watch: Watch,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// How often an idle stream looks whether its client is still there.
const CLIENT_CHECK: Duration = Duration::from_secs(1);

/// The response body: the recorded events, then live ones until the deadline. A subscriber
/// the bus dropped for falling behind ends with an error, which breaks the connection: the
/// client sees its stream cut short (the CLI reports `unexpected EOF`) rather than a normal
/// end it would take for `until`.
fn event_lines(
    past: Vec<Arc<Event>>,
    live: Option<Live>,
) -> impl Stream<Item = std::result::Result<bytes::Bytes, actix_web::Error>> {
    let past = stream::iter(past.into_iter().map(|e| Ok(e.json_line().clone())));
    let live = stream::unfold(live, |live| async move {
        let mut live = live?;
        let until = async {
            match live.deadline.as_mut() {
                Some(deadline) => deadline.await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            next = live.subscription.next() => next,
            () = until => None,
        };
        match next? {
            Ok(event) => Some((Ok(event.json_line().clone()), Some(live))),
            Err(Lagged) => Some((
                Err(actix_web::error::ErrorInternalServerError(
                    "events subscriber fell behind and was dropped",
                )),
                None,
            )),
        }
    });
    futures_util::StreamExt::chain(past, live)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// moby's `timetypes.ParseTimestamps(value, -1)` as `GET /events` uses it: `seconds[.fraction]`
/// (what the CLI sends for durations and dates alike), in nanoseconds since the epoch; empty,
/// or `-1` seconds, means no time. Parse errors are strconv's, untyped (500) as in dockerd.
pub fn event_time(text: &str) -> Result<Option<i64>> {
    if text.is_empty() {
        return Ok(None);
    }
    let (seconds, fraction) = match text.split_once('.') {
        Some((s, f)) => (s, Some(f)),
        None => (text, None),
    };
    let seconds = parse_int(seconds)?;
    let nanos = match fraction {
        None => 0,
        // Scaled to nanoseconds by the number of digits given (longer fractions are cut).
        Some(f) => (parse_int(f)? as f64 * 10f64.powi(9 - f.len() as i32)) as i64,
    };
    if seconds == -1 {
        return Ok(None);
    }
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    Ok(Some(total.clamp(i64::MIN.into(), i64::MAX.into()) as i64))
}

/// Go's `strconv.ParseInt(s, 10, 64)` with its error text.
fn parse_int(text: &str) -> Result<i64> {
    text.parse::<i64>().map_err(|e| {
        let reason = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        Error::System(format!(
            "strconv.ParseInt: parsing {}: {reason}",
            go_quote(text)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_like_moby() {
        assert_eq!(event_time("").unwrap(), None);
        assert_eq!(event_time("-1").unwrap(), None);
        assert_eq!(event_time("10").unwrap(), Some(10_000_000_000));
        assert_eq!(
            event_time("1796285133.000000001").unwrap(),
            Some(1_796_285_133_000_000_001)
        );
        assert_eq!(event_time("5.5").unwrap(), Some(5_500_000_000));
        assert_eq!(event_time("0").unwrap(), Some(0));
        assert_eq!(
            event_time("10m").unwrap_err(),
            Error::System("strconv.ParseInt: parsing \"10m\": invalid syntax".into())
        );
        assert_eq!(
            event_time("1.x").unwrap_err().message(),
            "strconv.ParseInt: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            event_time("99999999999999999999").unwrap_err().message(),
            "strconv.ParseInt: parsing \"99999999999999999999\": value out of range"
        );
    }
}
