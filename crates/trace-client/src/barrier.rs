//! The client side of a start barrier across hosts (`trace replay --shard k/n --coordinator
//! URL`): this host's clock offset to the coordinator, measured NTP-style (the round trip with
//! the least delay bounds the error best), and the common start time the coordinator releases
//! once every shard has registered. A shard that never registers fails the barrier for
//! everybody, after the coordinator's timeout, with a message naming it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::{Error, Transport};

/// Round trips measured for the offset.
const ROUNDS: usize = 16;

/// Between attempts to reach a coordinator that is not up yet.
const RETRY: Duration = Duration::from_millis(500);

/// What the barrier gave this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// The common start, UNIX ns on the coordinator's clock.
    pub start_unix_ns: i64,
    /// The coordinator's clock minus this host's, ns.
    pub offset_ns: i64,
    /// Bound of the offset's error: half the least round trip, ns.
    pub error_ns: i64,
}

impl Barrier {
    /// The common start on this host's clock, UNIX ns.
    pub fn local_start_unix_ns(&self) -> i64 {
        self.start_unix_ns - self.offset_ns
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Measures the offset to the coordinator at `base`, registers shard `index` of `count`, and
/// waits (up to `wait`) for the common start.
pub async fn join(
    base: &str,
    index: u32,
    count: u32,
    host: &str,
    transport: &Transport,
    wait: Duration,
) -> Result<Barrier, Error> {
    let http = transport
        .builder()?
        .build()
        .map_err(|e| Error::Build(e.to_string()))?;
    let base = base.trim_end_matches('/');
    let err = |url: &str, msg: String| Error::Http {
        url: url.to_string(),
        msg,
    };
    let time_url = format!("{base}/time");
    // The coordinator may not be up yet (under Kubernetes, shard 0's pod and its DNS name come
    // when they come): keep knocking until the barrier's own timeout.
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match http
            .get(&time_url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(err(
                    &time_url,
                    format!(
                        "the coordinator did not answer within {wait:?}: {}",
                        crate::error_chain(&e)
                    ),
                ));
            }
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
    let mut best: Option<(i64, i64)> = None; // (round trip, offset)
    for _ in 0..ROUNDS {
        let t0 = now_ns();
        let resp = http
            .get(&time_url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| err(&time_url, crate::error_chain(&e)))?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| err(&time_url, crate::error_chain(&e)))?;
        let t1 = now_ns();
        let Some(tc) = v.get("t_ns").and_then(Value::as_i64) else {
            return Err(err(
                &time_url,
                "the coordinator's answer has no t_ns".into(),
            ));
        };
        let (rtt, off) = (t1 - t0, tc - (t0 + (t1 - t0) / 2));
        if best.is_none_or(|(r, _)| rtt < r) {
            best = Some((rtt, off));
        }
    }
    let (rtt, offset_ns) = best.unwrap_or((0, 0));
    let reg_url = format!("{base}/register");
    let resp = http
        .post(&reg_url)
        .json(&json!({ "index": index, "count": count, "host": host }))
        .timeout(wait)
        .send()
        .await
        .map_err(|e| err(&reg_url, crate::error_chain(&e)))?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let why = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(err(&reg_url, format!("the start barrier failed: {why}")));
    }
    let start_unix_ns = v
        .get("start_unix_ns")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            err(
                &reg_url,
                "the coordinator's answer has no start_unix_ns".into(),
            )
        })?;
    Ok(Barrier {
        start_unix_ns,
        offset_ns,
        error_ns: rtt / 2,
    })
}
