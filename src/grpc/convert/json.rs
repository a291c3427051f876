//! `google.protobuf.Struct` (dialogue state, tool and response schemas) to
//! and from JSON objects.

use pbjson_types::value::Kind;
use serde_json::{Map, Value};

/// Deepest nesting accepted in a JSON value (objects and lists).
const MAX_STATE_DEPTH: usize = 32;

fn json_from_pb(value: pbjson_types::Value, depth: usize) -> Result<Value, &'static str> {
    if depth > MAX_STATE_DEPTH {
        return Err("nests deeper than 32 levels");
    }
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => {
            Value::Number(serde_json::Number::from_f64(n).ok_or("holds a NaN or infinite number")?)
        }
        Some(Kind::StructValue(s)) => Value::Object(object_from_pb(s, depth + 1)?),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .map(|v| json_from_pb(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
    })
}

pub fn object_from_pb(
    s: pbjson_types::Struct,
    depth: usize,
) -> Result<Map<String, Value>, &'static str> {
    s.fields
        .into_iter()
        .map(|(k, v)| Ok((k, json_from_pb(v, depth)?)))
        .collect()
}

fn json_to_pb(value: &Value) -> pbjson_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(pbjson_types::ListValue {
            values: items.iter().map(json_to_pb).collect(),
        }),
        Value::Object(map) => Kind::StructValue(object_to_pb(map)),
    };
    pbjson_types::Value { kind: Some(kind) }
}

pub fn object_to_pb(map: &Map<String, Value>) -> pbjson_types::Struct {
    pbjson_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_pb(v)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_rejects_non_finite_numbers() {
        let json =
            serde_json::json!({"step": 3.0, "tags": ["a", null, true], "nested": {"k": "v"}});
        let map = json.as_object().unwrap().clone();
        let pb_struct = object_to_pb(&map);
        assert_eq!(object_from_pb(pb_struct, 1).unwrap(), map);

        let nan = pbjson_types::Struct {
            fields: [(
                "x".to_string(),
                pbjson_types::Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]
            .into(),
        };
        assert!(object_from_pb(nan, 1).is_err());
    }
}
