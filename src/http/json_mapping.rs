//! The REST JSON as proto3's JSON mapping renders it in the official
//! implementations, where pbjson differs: timestamps in UTC with `Z` and
//! 0, 3, 6 or 9 fractional digits (pbjson writes `+00:00` and always 9),
//! and whole numbers without a fraction (`7`, not `7.0`, as in a
//! `google.protobuf.Struct`).

use serde::Serialize;
use serde_json::Value;

/// Fields of the API that hold a `google.protobuf.Timestamp`.
const TIMESTAMP_FIELDS: [&str; 6] = [
    "createTime",
    "updateTime",
    "expireTime",
    "startTime",
    "endTime",
    "time",
];

/// Fields that hold a `google.protobuf.Struct` of the caller's own data:
/// their strings are never rewritten.
const STRUCT_FIELDS: [&str; 3] = ["state", "parameters", "schema"];

/// `message` in the canonical JSON mapping.
pub fn to_json<T: Serialize>(message: &T) -> serde_json::Result<Value> {
    let mut value = serde_json::to_value(message)?;
    canonical(&mut value, false);
    Ok(value)
}

fn canonical(value: &mut Value, callers_data: bool) {
    match value {
        Value::Number(n) => {
            if let Some(whole) = n.as_f64().filter(|f| n.is_f64() && is_whole(*f)) {
                *n = serde_json::Number::from(whole as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| canonical(v, callers_data)),
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                if !callers_data
                    && TIMESTAMP_FIELDS.contains(&key.as_str())
                    && let Value::String(text) = field
                    && let Some(utc) = zulu(text)
                {
                    *text = utc;
                    continue;
                }
                canonical(field, callers_data || STRUCT_FIELDS.contains(&key.as_str()));
            }
        }
        _ => {}
    }
}

/// Within the range where a double holds every integer exactly.
fn is_whole(f: f64) -> bool {
    f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0
}

/// `2026-11-30T23:32:11.378256538+00:00` as `2026-11-30T23:32:11.378256538Z`,
/// its fraction cut to the fewest of 0, 3, 6 or 9 digits that keep it.
fn zulu(text: &str) -> Option<String> {
    let base = text.strip_suffix("+00:00")?;
    let (seconds, fraction) = match base.split_once('.') {
        Some((seconds, fraction)) => (seconds, fraction.trim_end_matches('0')),
        None => (base, ""),
    };
    if fraction.is_empty() {
        return Some(format!("{seconds}Z"));
    }
    let digits = fraction.len().div_ceil(3) * 3;
    Some(format!("{seconds}.{fraction:0<digits$}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_end_in_z_with_three_six_or_nine_digits() {
        assert_eq!(
            zulu("2026-11-30T23:32:11.378256538+00:00").unwrap(),
            "2026-11-30T23:32:11.378256538Z"
        );
        assert_eq!(
            zulu("2026-11-30T23:32:11.378000000+00:00").unwrap(),
            "2026-11-30T23:32:11.378Z"
        );
        assert_eq!(
            zulu("2026-11-30T23:32:11.378250+00:00").unwrap(),
            "2026-11-30T23:32:11.378250Z"
        );
        assert_eq!(
            zulu("2026-11-30T23:32:11+00:00").unwrap(),
            "2026-11-30T23:32:11Z"
        );
        assert_eq!(
            zulu("2026-11-30T23:32:11.000000000+00:00").unwrap(),
            "2026-11-30T23:32:11Z"
        );
    }

    #[test]
    fn whole_numbers_lose_their_fraction_and_the_callers_strings_are_kept() {
        let mut value = json!({
            "createTime": "2026-11-30T23:32:11.500000000+00:00",
            "state": {"count": 7.0, "ratio": 0.5, "createTime": "2026-11-30T23:32:11+00:00"},
            "temperature": 1.0,
        });
        canonical(&mut value, false);
        assert_eq!(
            value,
            json!({
                "createTime": "2026-11-30T23:32:11.500Z",
                "state": {"count": 7, "ratio": 0.5, "createTime": "2026-11-30T23:32:11+00:00"},
                "temperature": 1,
            })
        );
        assert!(!value.to_string().contains("7.0"));
    }
}
