//! Shared clap value parsers and value enums: rates, durations, counts, ratios, percentiles, SLOs,
//! `--store`. Every parser's message names the rejected value.

use std::time::Duration;

use clap::ValueEnum;

/// What `--store` may keep besides timings (replay and record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreArg {
    /// Prompt texts (so a replay re-sends the same prompts).
    Prompts,
    /// Output texts.
    Outputs,
}

/// Parses a request rate in req/s: a positive finite number, or `inf` (send all at once).
pub fn rate(s: &str) -> Result<f64, String> {
    if s.eq_ignore_ascii_case("inf") {
        return Ok(f64::INFINITY);
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("invalid rate '{s}': must be a number > 0 or 'inf'")),
    }
}

/// Parses a humantime duration (`500ms`, `10m`).
pub fn duration(s: &str) -> Result<Duration, String> {
    match duration_or_zero(s)? {
        d if d.is_zero() => Err(format!("invalid duration '{s}': must be more than zero")),
        d => Ok(d),
    }
}

/// The longest duration any flag takes: a year (a run planned for decades is a typo).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses a duration where zero means "none" (`--drain-timeout 0s`: do not wait).
pub fn duration_or_zero(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration '{s}': {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("invalid duration '{s}': longer than a year"));
    }
    Ok(d)
}

/// Parses a positive integer count (`-n 100`).
pub fn positive_u64(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("invalid count '{s}': must be an integer >= 1")),
    }
}

/// Parses a positive integer size (`--max-concurrency 64`).
pub fn positive_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("invalid value '{s}': must be an integer >= 1")),
    }
}

/// Parses a positive finite number (`--burstiness 0.5`, `--time-scale 2`).
pub fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("invalid value '{s}': must be a finite number > 0")),
    }
}

/// Parses a ratio in (0, 1] (`--range-ratio 0.5`).
pub fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("invalid ratio '{s}': must be a number in (0, 1]")),
    }
}

/// Parses a relative size: `5%` or `0.05`, in `[0, 1]`.
pub fn relative(s: &str) -> Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.parse::<f64>(),
    };
    match v {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "invalid relative size '{s}': give a percentage (5%) or a fraction (0.05) in [0, 1]"
        )),
    }
}

/// Parses a fraction in `[0, 1]` (`0` allowed: "no failure at all").
pub fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "invalid fraction '{s}': must be a number in [0, 1]"
        )),
    }
}

/// Parses a percentile list such as `50,90,99,99.9`: each a number in 0..=100.
pub fn percentiles(s: &str) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.trim_start_matches('p').parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => out.push(p),
            _ => {
                return Err(format!(
                    "invalid percentile '{part}': must be a number from 0 to 100"
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "invalid percentile list '{s}': give at least one, e.g. 50,90,99"
        ));
    }
    Ok(out)
}

/// Parses goodput objectives `ttft=200ms,tpot=50ms,e2e=2s` (any subset) into
/// (ttft, tpot, e2e) limits in ms.
#[cfg(feature = "analyze")]
pub fn slo(s: &str) -> Result<trace_analyze::report::Slo, String> {
    let mut slo = trace_analyze::report::Slo::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!(
                "invalid objective '{part}': expected NAME=DURATION, e.g. ttft=200ms"
            ));
        };
        let ms = humantime::parse_duration(v.trim())
            .map_err(|e| format!("invalid objective '{part}': {e}"))?
            .as_secs_f64()
            * 1e3;
        match k.trim() {
            "ttft" => slo.ttft_ms = Some(ms),
            "tpot" => slo.tpot_ms = Some(ms),
            "e2e" | "e2el" => slo.e2e_ms = Some(ms),
            other => {
                return Err(format!(
                    "invalid objective '{part}': unknown metric '{other}' (ttft, tpot, e2e)"
                ));
            }
        }
    }
    if slo.is_empty() {
        return Err(format!(
            "invalid objectives '{s}': give at least one, e.g. ttft=200ms"
        ));
    }
    Ok(slo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(rate("5"), Ok(5.0));
        assert_eq!(rate("inf"), Ok(f64::INFINITY));
        assert_eq!(
            rate("0"),
            Err("invalid rate '0': must be a number > 0 or 'inf'".into())
        );
        assert!(rate("-1").is_err());
        assert!(rate("NaN").is_err());
        assert!(rate("abc").is_err());
    }

    #[test]
    #[cfg(feature = "analyze")]
    fn percentile_lists_and_slos() {
        assert_eq!(
            percentiles("50,90,p99,99.9"),
            Ok(vec![50.0, 90.0, 99.0, 99.9])
        );
        assert!(percentiles("101").unwrap_err().contains("'101'"));
        assert!(percentiles("").is_err());
        let s = slo("ttft=200ms,tpot=50ms").unwrap();
        assert_eq!(
            (s.ttft_ms, s.tpot_ms, s.e2e_ms),
            (Some(200.0), Some(50.0), None)
        );
        assert!(slo("itl=5ms").unwrap_err().contains("unknown metric 'itl'"));
        assert!(slo("ttft").unwrap_err().contains("'ttft'"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(duration("5 parsecs").unwrap_err().contains("'5 parsecs'"));
    }

    #[test]
    fn counts_and_ratios() {
        assert_eq!(positive_u64("3"), Ok(3));
        assert!(positive_u64("0").unwrap_err().contains("'0'"));
        assert!(positive_usize("-1").unwrap_err().contains("'-1'"));
        assert_eq!(positive_f64("0.5"), Ok(0.5));
        assert!(positive_f64("inf").is_err());
        assert_eq!(ratio("1"), Ok(1.0));
        assert!(ratio("1.5").unwrap_err().contains("'1.5'"));
    }
}
