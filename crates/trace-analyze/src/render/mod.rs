//! Every rendering of a report and a diff except HTML (`crate::html`) and JSON (serde): plain
//! text, markdown and CSV. Computation lives in `crate::report` and `crate::diff`; this module
//! only formats their values. CSV goes through the `csv` crate (quoting is its job).

mod diff;
mod report;

use trace_stats::Ci;

/// Formats an optional number with `prec` decimals, `-` when absent.
pub fn num(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.prec$}"),
        _ => "-".into(),
    }
}

/// A relative delta as a signed percentage, `-` when absent.
pub(crate) fn rel_str(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{:+.1}%", 100.0 * r))
}

/// A confidence interval as `[low, high]` with signs, `-` when absent.
pub(crate) fn ci_str(ci: Option<Ci>, prec: usize) -> String {
    ci.map_or("-".into(), |c| {
        format!("[{:+.prec$}, {:+.prec$}]", c.low, c.high)
    })
}

/// A number for a CSV cell: its shortest exact text, empty when absent.
pub(crate) fn cell(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x}"))
}

/// Writes `rows` (header first) as CSV text.
pub(crate) fn csv_text(rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    for r in rows {
        // Writing to memory fails only on a broken record shape, which the callers rule out.
        let _ = w.write_record(&r);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_quotes_what_needs_quoting() {
        let t = super::csv_text([
            vec!["a".to_string(), "b".to_string()],
            vec!["x,y".to_string(), "say \"hi\"".to_string()],
        ]);
        assert_eq!(t, "a,b\n\"x,y\",\"say \"\"hi\"\"\"\n");
    }
}
