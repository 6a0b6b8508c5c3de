//! [`json_at`]: a dotted path into a JSON value (`choices.0.text`), the one reader of the paths
//! users give on the command line: a custom route's text field, a prompt dataset's field.

use serde_json::Value;

/// The value at `path` in `v`: keys separated by dots, a number indexing an array. None when a
/// step is missing.
pub fn json_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |cur, k| match k.parse::<usize>() {
            Ok(i) if cur.is_array() => cur.get(i),
            _ => cur.get(k),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_indexes() {
        let v = serde_json::json!({"choices": [{"text": "hi"}], "a": {"0": 5}});
        assert_eq!(json_at(&v, "choices.0.text"), Some(&Value::from("hi")));
        assert_eq!(
            json_at(&v, "a.0"),
            Some(&Value::from(5)),
            "a key that looks like a number"
        );
        assert_eq!(json_at(&v, "choices.1.text"), None);
        assert_eq!(json_at(&v, "missing"), None);
    }
}
