//! Reading a request's JSON by hand (OpenAI's, Anthropic's), field by field, so every error names the
//! parameter at fault (`messages[2].content[0].image_url.url`) the way
//! OpenAI's own errors do, and no field goes unread: an object's keys are
//! checked against the ones dialogd handles first.

use crate::failure::Failure;
use serde_json::{Map, Value};
use tonic::Status;

pub fn invalid(param: &str, description: impl Into<String>) -> Status {
    Failure::invalid(param, description).into()
}

/// A JSON object at `path` of the request.
pub struct Obj<'a> {
    pub map: &'a Map<String, Value>,
    pub path: String,
}

impl<'a> Obj<'a> {
    pub fn new(value: &'a Value, path: impl Into<String>) -> Result<Obj<'a>, Status> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Obj { map, path }),
            _ => Err(invalid(&path, "must be an object")),
        }
    }

    /// The parameter's name, e.g. `messages[0].content`.
    pub fn param(&self, key: &str) -> String {
        match self.path.as_str() {
            "" => key.to_owned(),
            path => format!("{path}.{key}"),
        }
    }

    /// Refuses a key that is not one of `known`.
    pub fn only(&self, known: &[&str]) -> Result<(), Status> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(key) => Err(invalid(
                &self.param(key),
                "is not a parameter dialogd knows (the README lists each front's parameters)",
            )),
        }
    }

    /// A key's value; `null` is absent, as OpenAI treats it.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, Status> {
        self.get(key)
            .map(|v| Obj::new(v, self.param(key)))
            .transpose()
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, Status> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(&self.param(key), "must be a string")),
        }
    }

    pub fn required_str(&self, key: &str) -> Result<&'a str, Status> {
        self.str(key)?
            .ok_or_else(|| invalid(&self.param(key), "is required"))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, Status> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(invalid(&self.param(key), "must be true or false")),
        }
    }

    pub fn f32(&self, key: &str) -> Result<Option<f32>, Status> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64().map(|x| x as f32)),
            Some(_) => Err(invalid(&self.param(key), "must be a number")),
        }
    }

    pub fn i64(&self, key: &str) -> Result<Option<i64>, Status> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| invalid(&self.param(key), "must be an integer")),
        }
    }

    pub fn u32(&self, key: &str) -> Result<Option<u32>, Status> {
        match self.i64(key)? {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| invalid(&self.param(key), "must be a non-negative integer")),
        }
    }

    pub fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, Status> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(invalid(&self.param(key), "must be an array")),
        }
    }
}
