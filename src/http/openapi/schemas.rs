//! JSON Schemas of the `dialogue.v1` messages, generated from the compiled
//! proto descriptors (the ones reflection serves) per the protobuf JSON
//! mapping the REST routes speak: lowerCamelCase names, 64-bit integers
//! as strings, enums by name, well-known types in their JSON forms.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use std::collections::{BTreeMap, HashMap};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat,
    SchemaType, Type as JsonType,
};
use utoipa::openapi::{Ref, RefOr};

const PACKAGE: &str = "dialogue.v1";

/// The messages and enums of the package, by full name (`.dialogue.v1.X`).
pub struct Descriptors {
    /// `package.Service/Method` → (input, output) message names.
    methods: HashMap<String, (String, String)>,
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, Vec<String>>,
}

impl Descriptors {
    pub fn load() -> Result<Descriptors, String> {
        let set = FileDescriptorSet::decode(crate::grpc::pb::dialogue::v1::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("the compiled descriptors do not decode: {e}"))?;
        let mut found = Descriptors {
            methods: HashMap::new(),
            messages: HashMap::new(),
            enums: HashMap::new(),
        };
        for file in &set.file {
            for service in &file.service {
                for m in &service.method {
                    let path = format!("{}.{}/{}", file.package(), service.name(), m.name());
                    let types = (m.input_type().to_owned(), m.output_type().to_owned());
                    found.methods.insert(path, types);
                }
            }
        }
        for file in set.file.iter().filter(|f| f.package() == PACKAGE) {
            let prefix = format!(".{PACKAGE}");
            for e in &file.enum_type {
                found.add_enum(&prefix, e);
            }
            for m in &file.message_type {
                found.add_message(&prefix, m);
            }
        }
        Ok(found)
    }

    fn add_enum(&mut self, prefix: &str, e: &prost_types::EnumDescriptorProto) {
        let values = e.value.iter().map(|v| v.name().to_owned()).collect();
        self.enums.insert(format!("{prefix}.{}", e.name()), values);
    }

    fn add_message(&mut self, prefix: &str, m: &DescriptorProto) {
        let full = format!("{prefix}.{}", m.name());
        for nested in &m.nested_type {
            self.add_message(&full, nested);
        }
        for e in &m.enum_type {
            self.add_enum(&full, e);
        }
        self.messages.insert(full, m.clone());
    }

    /// The input and output message names of `/package.Service/Method`.
    pub fn method_types(&self, grpc_path: &str) -> Option<&(String, String)> {
        self.methods.get(grpc_path.trim_start_matches('/'))
    }

    /// The message type of `field` (a dotted path) in message `message`.
    pub fn field_type(&self, message: &str, field: &str) -> Option<String> {
        let mut current = message.to_owned();
        for part in field.split('.') {
            let m = self.messages.get(&current)?;
            let f = m.field.iter().find(|f| f.name() == part)?;
            current = f.type_name().to_owned();
        }
        Some(current)
    }

    /// The scalar fields of `message` a query string may set (not `skip`).
    pub fn query_fields(&self, message: &str, skip: &[&str]) -> Vec<(String, RefOr<Schema>)> {
        let Some(m) = self.messages.get(message) else {
            return Vec::new();
        };
        m.field
            .iter()
            .filter(|f| !skip.contains(&f.name()))
            .filter(|f| {
                f.r#type() != Type::Message || f.type_name() == ".google.protobuf.FieldMask"
            })
            .filter(|f| f.label() != Label::Repeated)
            .map(|f| (json_name(f), self.field_schema(f)))
            .collect()
    }

    /// The schema of a message named in full: a well-known type's JSON
    /// form, or a reference to the package's component.
    pub fn schema_of(&self, type_name: &str) -> RefOr<Schema> {
        well_known(type_name)
            .unwrap_or_else(|| RefOr::Ref(Ref::from_schema_name(component_name(type_name))))
    }

    /// Every message and enum of the package as a component schema.
    pub fn components(&self) -> BTreeMap<String, RefOr<Schema>> {
        let mut out = BTreeMap::new();
        for (full, values) in &self.enums {
            let schema = ObjectBuilder::new()
                .schema_type(JsonType::String)
                .enum_values(Some(values.clone()))
                .build();
            out.insert(component_name(full), RefOr::T(Schema::Object(schema)));
        }
        for (full, m) in &self.messages {
            if is_map_entry(m) {
                continue;
            }
            let mut object = ObjectBuilder::new().schema_type(JsonType::Object);
            for f in &m.field {
                object = object.property(json_name(f), self.field_schema(f));
            }
            out.insert(
                component_name(full),
                RefOr::T(Schema::Object(object.build())),
            );
        }
        out
    }

    fn field_schema(&self, f: &FieldDescriptorProto) -> RefOr<Schema> {
        if f.r#type() == Type::Message
            && let Some(entry) = self.messages.get(f.type_name()).filter(|m| is_map_entry(m))
        {
            let value = entry.field.iter().find(|v| v.name() == "value");
            let values = value.map_or_else(any, |v| self.single(v));
            let map = ObjectBuilder::new()
                .schema_type(JsonType::Object)
                .additional_properties(Some(AdditionalProperties::RefOr(values)))
                .build();
            return RefOr::T(Schema::Object(map));
        }
        let one = self.single(f);
        if f.label() == Label::Repeated {
            return RefOr::T(Schema::Array(ArrayBuilder::new().items(one).build()));
        }
        one
    }

    fn single(&self, f: &FieldDescriptorProto) -> RefOr<Schema> {
        match f.r#type() {
            Type::Double | Type::Float => typed(JsonType::Number, None),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
                typed(JsonType::Integer, Some(KnownFormat::Int32))
            }
            Type::Uint32 | Type::Fixed32 => typed(JsonType::Integer, Some(KnownFormat::Int32)),
            // The JSON mapping writes 64-bit integers as strings.
            Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => {
                typed(JsonType::String, Some(KnownFormat::Int64))
            }
            Type::Bool => typed(JsonType::Boolean, None),
            Type::String => typed(JsonType::String, None),
            Type::Bytes => typed(JsonType::String, Some(KnownFormat::Byte)),
            Type::Enum => RefOr::Ref(Ref::from_schema_name(component_name(f.type_name()))),
            Type::Message | Type::Group => well_known(f.type_name()).unwrap_or_else(|| {
                RefOr::Ref(Ref::from_schema_name(component_name(f.type_name())))
            }),
        }
    }
}

fn is_map_entry(m: &DescriptorProto) -> bool {
    m.options.as_ref().is_some_and(|o| o.map_entry())
}

/// The JSON name of a field (the descriptor's, else lowerCamelCase).
fn json_name(f: &FieldDescriptorProto) -> String {
    if let Some(name) = f.json_name.as_deref().filter(|n| !n.is_empty()) {
        return name.to_owned();
    }
    let mut out = String::new();
    let mut upper = false;
    for c in f.name().chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `.dialogue.v1.Turn.Usage` → `Turn.Usage`.
pub fn component_name(full: &str) -> String {
    full.trim_start_matches('.')
        .trim_start_matches(PACKAGE)
        .trim_start_matches('.')
        .to_owned()
}

fn typed(t: JsonType, format: Option<KnownFormat>) -> RefOr<Schema> {
    let mut schema = ObjectBuilder::new().schema_type(t);
    if let Some(format) = format {
        schema = schema.format(Some(SchemaFormat::KnownFormat(format)));
    }
    RefOr::T(Schema::Object(schema.build()))
}

/// A schema accepting any JSON value.
pub fn any() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .build(),
    ))
}

/// The JSON forms of the well-known types the package uses.
fn well_known(type_name: &str) -> Option<RefOr<Schema>> {
    Some(match type_name {
        ".google.protobuf.Timestamp" => typed(JsonType::String, Some(KnownFormat::DateTime)),
        // "3.5s"; a FieldMask is "systemPrompt,state".
        ".google.protobuf.Duration" | ".google.protobuf.FieldMask" => typed(JsonType::String, None),
        ".google.protobuf.Struct" | ".google.protobuf.Empty" | ".google.protobuf.Any" => {
            typed(JsonType::Object, None)
        }
        ".google.protobuf.Value" => any(),
        ".google.protobuf.StringValue" => typed(JsonType::String, None),
        ".google.protobuf.BoolValue" => typed(JsonType::Boolean, None),
        ".google.protobuf.DoubleValue" | ".google.protobuf.FloatValue" => {
            typed(JsonType::Number, None)
        }
        ".google.protobuf.Int32Value" | ".google.protobuf.UInt32Value" => {
            typed(JsonType::Integer, Some(KnownFormat::Int32))
        }
        ".google.protobuf.Int64Value" | ".google.protobuf.UInt64Value" => {
            typed(JsonType::String, Some(KnownFormat::Int64))
        }
        _ => return None,
    })
}

pub fn string() -> RefOr<Schema> {
    typed(JsonType::String, None)
}

pub fn integer() -> RefOr<Schema> {
    typed(JsonType::Integer, Some(KnownFormat::Int32))
}

pub fn array_of(items: RefOr<Schema>) -> RefOr<Schema> {
    RefOr::T(Schema::Array(ArrayBuilder::new().items(items).build()))
}
