//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP front,
//! generated (with utoipa's model) from the code that serves it — the
//! routes and access rules from the one table of methods, the REST
//! routes' request shapes from `rest::shape`, their message schemas from
//! the compiled proto descriptors, the OpenAI- and Anthropic-compatible
//! routes' parameters from the lists their parsers accept, and the error
//! bodies from the shapes `http::error` writes. Built once, on first ask.

mod schemas;

use super::Response;
use super::error::ErrorShape;
use crate::middleware::rpc_table::{Access, Rpc};
use axum::response::IntoResponse;
use schemas::{Descriptors, any};
use std::sync::OnceLock;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type as JsonType};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr,
    Required, ResponseBuilder,
};

static DOCUMENT: OnceLock<Result<String, String>> = OnceLock::new();

/// The document as JSON.
pub fn serve() -> Response {
    match DOCUMENT.get_or_init(|| document().and_then(|d| d.to_json().map_err(|e| e.to_string()))) {
        Ok(json) => (
            [(http::header::CONTENT_TYPE, "application/json")],
            json.clone(),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the OpenAPI document");
            let status = crate::failure::Failure::new(
                crate::failure::ErrorKind::Internal,
                "OPENAPI_UNAVAILABLE",
                "the API description cannot be built",
            );
            super::error::response(ErrorShape::Google, &status.into()).into_response()
        }
    }
}

/// The OpenAPI document of every HTTP route.
pub fn document() -> Result<OpenApi, String> {
    let descriptors = Descriptors::load()?;
    let mut paths = Paths::new();
    for rpc in Rpc::ALL {
        for route in rpc.spec().routes {
            let (path, ids) = openapi_path(route.pattern);
            let method = http_method(route.method)?;
            paths.add_path_operation(
                path,
                vec![method],
                operation(&descriptors, *rpc, route.method, route.pattern, &ids),
            );
        }
    }
    let mut components = ComponentsBuilder::new()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (dk_...) or a JWT"))
                    .build(),
            ),
        )
        .security_scheme(
            "x-api-key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    for (name, schema) in descriptors.components() {
        components = components.schema(name, schema);
    }
    for (name, schema) in error_schemas() {
        components = components.schema(name, schema);
    }
    Ok(OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("dialogd HTTP API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "REST/JSON routes of the dialogue.v1 service (protobuf JSON mapping), and the OpenAI- and Anthropic-compatible routes, on the gRPC port.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build())
}

/// `/v1/conversations/{id}/items/{id}` → `/v1/conversations/{id}/items/{item_id}`
/// (parameter names must differ) and the names of its parameters.
fn openapi_path(pattern: &str) -> (String, Vec<String>) {
    let mut ids = Vec::new();
    let mut out = String::new();
    for (i, piece) in pattern.split("{id}").enumerate() {
        if i > 0 {
            let name = if i == 1 { "id" } else { "item_id" };
            out.push_str(&format!("{{{name}}}"));
            ids.push(name.to_owned());
        }
        out.push_str(piece);
    }
    (out, ids)
}

fn http_method(method: &str) -> Result<HttpMethod, String> {
    Ok(match method {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        "PUT" => HttpMethod::Put,
        other => return Err(format!("a route with method {other}")),
    })
}

fn json_content(schema: RefOr<Schema>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn operation(
    descriptors: &Descriptors,
    rpc: Rpc,
    method: &str,
    pattern: &str,
    ids: &[String],
) -> utoipa::openapi::path::Operation {
    let spec = rpc.spec();
    let (service, name) = rpc.labels();
    let mut op = OperationBuilder::new()
        .operation_id(Some(format!("{rpc:?}")))
        .summary(Some(format!("{service}/{name}")))
        .tag(service);
    for id in ids {
        op = op.parameter(
            ParameterBuilder::new()
                .name(id)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(schemas::string())),
        );
    }
    let shape = super::rest::shape(rpc);
    let types = descriptors.method_types(spec.path);
    // The REST routes: the proto's request and answer messages.
    let (request, answer) = match (shape, types) {
        (Some(shape), Some((input, output))) => {
            let skip: Vec<&str> = shape.id.into_iter().chain(shape.body).collect();
            if method == "GET" || method == "DELETE" || method == "PATCH" {
                for (field, schema) in descriptors.query_fields(input, &skip) {
                    op = op.parameter(
                        ParameterBuilder::new()
                            .name(field)
                            .parameter_in(ParameterIn::Query)
                            .required(Required::False)
                            .schema(Some(schema)),
                    );
                }
            }
            let body = match shape.body {
                Some(field) => descriptors.field_type(input, field),
                None => Some(input.clone()),
            };
            let request = (method != "GET" && method != "DELETE")
                .then(|| body.map(|b| descriptors.schema_of(&b)))
                .flatten();
            (request, Some(descriptors.schema_of(output)))
        }
        _ => (front_body(rpc, method), None),
    };
    if let Some(schema) = request {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", json_content(schema))
                .required(Some(Required::True))
                .build(),
        ));
    }
    let streams = rpc == Rpc::ConverseStream;
    let ok = match (answer, streams) {
        (Some(schema), true) => ResponseBuilder::new()
            .description("Server-Sent Events, each one ConverseStreamResponse as JSON")
            .content("text/event-stream", json_content(schema)),
        (Some(schema), false) => ResponseBuilder::new()
            .description("The answer")
            .content("application/json", json_content(schema)),
        (None, _) if rpc == Rpc::DialogueConnect => {
            ResponseBuilder::new().description("Switching to the WebSocket protocol")
        }
        (None, _) => ResponseBuilder::new()
            .description("The answer in the shape of the API this route is compatible with")
            .content("application/json", json_content(any())),
    };
    let error = match ErrorShape::for_path(pattern) {
        ErrorShape::Google => "GoogleError",
        ErrorShape::OpenAi => "OpenAiError",
        ErrorShape::Anthropic => "AnthropicError",
    };
    op = op
        .response(
            if rpc == Rpc::DialogueConnect {
                "101"
            } else {
                "200"
            },
            ok.build(),
        )
        .response(
            "default",
            ResponseBuilder::new()
                .description("An error")
                .content("application/json", json_content(reference(error)))
                .build(),
        );
    let security = match spec.access {
        Access::Public => vec![SecurityRequirement::default()],
        _ => vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("x-api-key", Vec::<String>::new()),
        ],
    };
    op.securities(Some(security)).build()
}

/// The body of a route compatible with another API: the parameters its
/// parser accepts (any other is refused naming it).
fn front_body(rpc: Rpc, method: &str) -> Option<RefOr<Schema>> {
    if method != "POST" {
        return None;
    }
    let (fields, about): (&[&str], &str) = match rpc {
        Rpc::ChatCompletions => (
            super::openai::request::HANDLED,
            "OpenAI Chat Completions request; parameters outside these are refused (a few of OpenAI's are accepted and ignored)",
        ),
        Rpc::AnthropicMessages | Rpc::AnthropicCountTokens => (
            super::anthropic::request::HANDLED,
            "Anthropic Messages request",
        ),
        Rpc::ResponsesCreate => (
            super::responses::request::HANDLED,
            "OpenAI Responses request",
        ),
        _ => (
            &[],
            "A request in the shape of the API this route is compatible with",
        ),
    };
    let mut object = ObjectBuilder::new()
        .schema_type(JsonType::Object)
        .description(Some(about));
    for field in fields {
        object = object.property(*field, any());
    }
    Some(RefOr::T(Schema::Object(object.build())))
}

/// The error bodies `http::error` writes, per shape.
fn error_schemas() -> Vec<(&'static str, RefOr<Schema>)> {
    let object = |fields: &[(&str, RefOr<Schema>)]| {
        let mut o = ObjectBuilder::new().schema_type(JsonType::Object);
        for (name, schema) in fields {
            o = o.property(*name, schema.clone()).required(*name);
        }
        RefOr::T(Schema::Object(o.build()))
    };
    let s = schemas::string;
    let google = object(&[(
        "error",
        object(&[
            ("code", schemas::integer()),
            ("message", s()),
            ("status", s()),
            ("details", schemas::array_of(any())),
        ]),
    )]);
    let openai = object(&[(
        "error",
        object(&[
            ("message", s()),
            ("type", s()),
            ("param", any()),
            ("code", any()),
        ]),
    )]);
    let anthropic = object(&[
        ("type", s()),
        ("error", object(&[("type", s()), ("message", s())])),
    ]);
    vec![
        ("GoogleError", google),
        ("OpenAiError", openai),
        ("AnthropicError", anthropic),
    ]
}
