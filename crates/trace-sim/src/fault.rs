//! Faults on demand: which misbehaviour a request gets, from a seeded fraction spec
//! (`--fault reset=0.01,http500=0.05`) or per request from the `X-Sim-Fault` header.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The header that forces a fault on one request, e.g. `X-Sim-Fault: multi-token:3`.
pub const FAULT_HEADER: &str = "x-sim-fault";

/// One kind of misbehaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// HTTP 500 with an OpenAI-style JSON error body, before any streaming.
    Http500,
    /// HTTP 429 with an OpenAI-style JSON error body.
    Http429,
    /// HTTP 200, then halfway through `data: {"error": {...}}` and `data: [DONE]`.
    ErrorEvent,
    /// The connection is closed abruptly halfway through the stream (the chunked body is never
    /// terminated).
    Reset,
    /// Halfway through, the stream stops sending and stays open until the server shuts down.
    Stall,
    /// One event halfway through carries truncated JSON; the stream then continues.
    Malformed,
    /// The stream ends cleanly after the last token (and usage) without `data: [DONE]`.
    NoDone,
    /// Each event carries this many tokens (the last may carry fewer).
    MultiToken(u32),
    /// A `: keep-alive` comment line before every data event.
    KeepAlive,
}

impl Fault {
    /// Its name as written in specs and headers.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Http500 => "http500",
            Self::Http429 => "http429",
            Self::ErrorEvent => "error-event",
            Self::Reset => "reset",
            Self::Stall => "stall",
            Self::Malformed => "malformed",
            Self::NoDone => "no-done",
            Self::MultiToken(_) => "multi-token",
            Self::KeepAlive => "keep-alive",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MultiToken(k) => write!(f, "multi-token:{k}"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Fault {
    type Err = Error;

    /// `http500`, `http429`, `error-event`, `reset`, `stall`, `malformed`, `no-done`,
    /// `multi-token[:K]` (K >= 1, default 4), `keep-alive`; `_` and `-` are interchangeable.
    fn from_str(s: &str) -> Result<Self, Error> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        let (kind, arg) = match norm.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (norm.as_str(), None),
        };
        let bad = |reason: &str| Error::InvalidFault {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let fault = match kind {
            "http500" => Self::Http500,
            "http429" => Self::Http429,
            "error-event" => Self::ErrorEvent,
            "reset" => Self::Reset,
            "stall" => Self::Stall,
            "malformed" => Self::Malformed,
            "no-done" => Self::NoDone,
            "keep-alive" | "keepalive" => Self::KeepAlive,
            "multi-token" | "multi" => {
                let k = match arg {
                    Some(a) => a
                        .parse::<u32>()
                        .ok()
                        .filter(|k| *k >= 1)
                        .ok_or_else(|| bad("tokens per event must be an integer >= 1"))?,
                    None => 4,
                };
                return Ok(Self::MultiToken(k));
            }
            _ => {
                return Err(bad(
                    "unknown fault (http500, http429, error-event, reset, stall, malformed, no-done, multi-token[:K], keep-alive)",
                ));
            }
        };
        if arg.is_some() {
            return Err(bad("only multi-token takes an argument"));
        }
        Ok(fault)
    }
}

/// Faults with the fraction of requests each applies to (at most one per request).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    /// `(fault, fraction)`; fractions sum to at most 1.
    pub entries: Vec<(Fault, f64)>,
}

impl FromStr for FaultSpec {
    type Err = Error;

    /// `kind=fraction[,kind=fraction...]`, e.g. `reset=0.01,http500=0.05,multi-token:3=0.2`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::InvalidFault {
            spec: s.to_string(),
            reason,
        };
        let mut entries = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, frac) = part
                .rsplit_once('=')
                .ok_or_else(|| bad(format!("'{part}' needs =FRACTION")))?;
            let fault: Fault = kind.parse()?;
            let frac: f64 = frac
                .parse()
                .ok()
                .filter(|f: &f64| (0.0..=1.0).contains(f))
                .ok_or_else(|| bad(format!("fraction '{frac}' must be a number in [0, 1]")))?;
            entries.push((fault, frac));
        }
        let total: f64 = entries.iter().map(|e| e.1).sum();
        if total > 1.0 + 1e-9 {
            return Err(bad(format!("fractions sum to {total}, more than 1")));
        }
        Ok(Self { entries })
    }
}

/// SplitMix64: a fast, well-mixed hash of `(seed, n)` so that request `n`'s draws depend only
/// on the seed and the request's arrival order.
pub(crate) fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed
        .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1) from `mix(seed, n)`.
pub(crate) fn unit(seed: u64, n: u64) -> f64 {
    (mix(seed, n) >> 11) as f64 / (1u64 << 53) as f64
}

impl FaultSpec {
    /// True when no fault is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|e| e.1 == 0.0)
    }

    /// The fault of the `n`-th request under `seed`, if any. Deterministic.
    pub fn pick(&self, seed: u64, n: u64) -> Option<Fault> {
        if self.is_empty() {
            return None;
        }
        let u = unit(seed ^ 0xFA17, n);
        let mut acc = 0.0;
        for &(fault, frac) in &self.entries {
            acc += frac;
            if u < acc {
                return Some(fault);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s: FaultSpec = "reset=0.01,http500=0.05,multi-token:3=0.2".parse().unwrap();
        assert_eq!(
            s.entries,
            vec![
                (Fault::Reset, 0.01),
                (Fault::Http500, 0.05),
                (Fault::MultiToken(3), 0.2)
            ]
        );
        assert!("reset".parse::<FaultSpec>().is_err());
        assert!("reset=2".parse::<FaultSpec>().is_err());
        assert!("reset=0.6,stall=0.6".parse::<FaultSpec>().is_err());
        assert!(
            "boom=0.1"
                .parse::<FaultSpec>()
                .unwrap_err()
                .to_string()
                .contains("'boom'")
        );
        assert_eq!(
            "multi_token".parse::<Fault>().unwrap(),
            Fault::MultiToken(4)
        );
        assert!("multi-token:0".parse::<Fault>().is_err());
        assert!("reset:3".parse::<Fault>().is_err());
        for f in [
            "http500",
            "http429",
            "error-event",
            "reset",
            "stall",
            "malformed",
            "no-done",
            "multi-token:2",
            "keep-alive",
        ] {
            assert_eq!(f.parse::<Fault>().unwrap().to_string(), f);
        }
    }

    #[test]
    fn picks_fractions_deterministically() {
        let s: FaultSpec = "reset=0.25,http500=0.25".parse().unwrap();
        let picks: Vec<_> = (0..4000).map(|n| s.pick(7, n)).collect();
        assert_eq!(picks, (0..4000).map(|n| s.pick(7, n)).collect::<Vec<_>>());
        let resets = picks.iter().filter(|p| **p == Some(Fault::Reset)).count();
        let none = picks.iter().filter(|p| p.is_none()).count();
        assert!((800..1200).contains(&resets), "{resets}");
        assert!((1800..2200).contains(&none), "{none}");
    }
}
