//! Which method of the table a call names: by its gRPC path, or by its
//! HTTP route (a `{id}` segment percent-decoded). The outermost layer looks
//! it up once and leaves it in the request's extensions for the others.

use super::rpc_table::{Access, Rpc};
use std::borrow::Cow;

/// A call as the layers and the HTTP front know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `None`: a call of no method in the table.
    pub rpc: Option<Rpc>,
    /// The method's path without the leading `/`, for audit and logs: the
    /// table's, or what an unknown call asked for.
    pub name: Cow<'static, str>,
    /// The `{id}` of an HTTP route.
    pub id: Option<String>,
}

impl Resolved {
    /// The method of a request: by its gRPC path, or its HTTP route.
    pub fn of<B>(request: &http::Request<B>) -> Resolved {
        if let Some(known) = request.extensions().get::<Resolved>() {
            return known.clone();
        }
        let path = request.uri().path();
        if super::protocol::is_grpc(request) {
            let rpc = Rpc::for_grpc_path(path);
            return Resolved {
                rpc,
                name: match rpc {
                    Some(rpc) => Cow::Borrowed(&rpc.spec().path[1..]),
                    None => Cow::Owned(path.trim_start_matches('/').to_owned()),
                },
                id: None,
            };
        }
        match http_method(request.method().as_str(), path) {
            Some((rpc, id)) => Resolved {
                rpc: Some(rpc),
                name: Cow::Borrowed(&rpc.spec().path[1..]),
                id,
            },
            None => Resolved {
                rpc: None,
                name: Cow::Borrowed("http.Unknown/Route"),
                id: None,
            },
        }
    }

    /// What the caller needs: unknown calls are never public.
    pub fn access(&self) -> Access {
        self.rpc
            .map_or(Access::Authenticated, |rpc| rpc.spec().access)
    }

    pub fn mutating(&self) -> bool {
        self.rpc.is_some_and(|rpc| rpc.spec().mutating)
    }

    /// Metric labels; unknown calls collapse into one, so labels stay bounded.
    pub fn labels(&self) -> (&'static str, &'static str) {
        self.rpc.map_or(("unknown", "unknown"), Rpc::labels)
    }
}

/// Joins the two `{id}`s of a route that has two; never part of an ID.
pub const ID_SEPARATOR: char = '\u{1f}';

/// The method an HTTP request names, and the `{id}` of its route.
pub fn http_method(method: &str, path: &str) -> Option<(Rpc, Option<String>)> {
    routes_of(path)
        .into_iter()
        .find(|(_, route_method, _)| *route_method == method)
        .map(|(rpc, _, id)| (rpc, id))
}

/// The HTTP methods `path` is served with (empty: no route has it).
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    routes_of(path)
        .into_iter()
        .map(|(_, method, _)| method)
        .collect()
}

/// Every route `path` matches. A last segment with a colon names a custom
/// verb (`{id}:converse`; IDs never hold colons): only verb routes match
/// it, so a GET of `…:converse` is a wrong method, not a dialogue named
/// `x:converse`, and an unknown verb is no route at all.
fn routes_of(path: &str) -> Vec<(Rpc, &'static str, Option<String>)> {
    let given: Vec<&str> = path.split('/').collect();
    let verb = given.last().is_some_and(|last| last.contains(':'));
    compiled_routes()
        .iter()
        .filter(|r| r.verb == verb && r.segments.len() == given.len())
        .filter_map(|r| match_route(&r.segments, &given).map(|id| (r.rpc, r.method, id)))
        .collect()
}

/// A route of the table with its pattern split once (every HTTP request
/// looks its route up; splitting every pattern each time cost ~6% of a
/// stateless call's instructions).
struct CompiledRoute {
    rpc: Rpc,
    method: &'static str,
    segments: Vec<&'static str>,
    verb: bool,
}

fn compiled_routes() -> &'static [CompiledRoute] {
    static ROUTES: std::sync::OnceLock<Vec<CompiledRoute>> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| {
        Rpc::ALL
            .iter()
            .flat_map(|&rpc| {
                rpc.spec().routes.iter().map(move |r| CompiledRoute {
                    rpc,
                    method: r.method,
                    segments: r.pattern.split('/').collect(),
                    verb: r.pattern.contains(':'),
                })
            })
            .collect()
    })
}

/// The `{id}` of a path (split at `/`) when it matches a pattern's
/// segments (`Some(None)` for a pattern without one); a pattern with two
/// (`…/{id}/items/{id}`) gives both joined by `ID_SEPARATOR`.
fn match_route(wanted: &[&str], given: &[&str]) -> Option<Option<String>> {
    let mut id: Option<String> = None;
    for (w, g) in wanted.iter().zip(given) {
        match w.strip_prefix("{id}") {
            Some(suffix) => {
                let raw = g.strip_suffix(suffix)?;
                if raw.is_empty() {
                    return None;
                }
                let decoded = percent_decode(raw)?;
                id = Some(match id {
                    None => decoded,
                    Some(first) => format!("{first}{ID_SEPARATOR}{decoded}"),
                });
            }
            None if w == g => {}
            None => return None,
        }
    }
    Some(id)
}

/// `raw` with `%XX` escapes decoded; `None` if that is not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| raw.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_calls_are_never_public_and_share_one_label() {
        for (method, path, grpc) in [
            ("POST", "/dialogue.v1.DialogueService/DropAll", true),
            ("POST", "garbage", true),
            ("GET", "/v1/nothing-here", false),
            ("POST", "/v1/dialogues/abc", false),
        ] {
            let mut request = http::Request::builder().method(method).uri(path);
            if grpc {
                request = request.header("content-type", "application/grpc");
            }
            let resolved = Resolved::of(&request.body(()).unwrap());
            assert_eq!(resolved.rpc, None, "{path}");
            assert_eq!(resolved.access(), Access::Authenticated);
            assert_eq!(resolved.labels(), ("unknown", "unknown"));
        }
    }

    #[test]
    fn http_routes_name_their_method_and_dialogue() {
        let cases = [
            ("POST", "/v1/dialogues", Rpc::CreateDialogue, None),
            ("GET", "/v1/dialogues/a%20b", Rpc::GetDialogue, Some("a b")),
            ("GET", "/v1/dialogues/x/turns", Rpc::ListTurns, Some("x")),
            ("POST", "/v1/dialogues/x:converse", Rpc::Converse, Some("x")),
            (
                "POST",
                "/v1/dialogues/x:converseStream",
                Rpc::ConverseStream,
                Some("x"),
            ),
            (
                "POST",
                "/v1/dialogues:batchConverse",
                Rpc::BatchConverse,
                None,
            ),
            ("POST", "/v1/chat/completions", Rpc::ChatCompletions, None),
        ];
        for (method, path, rpc, id) in cases {
            let found = http_method(method, path);
            assert_eq!(found, Some((rpc, id.map(str::to_owned))), "{method} {path}");
        }
        assert_eq!(http_method("GET", "/v1/dialogues/x/other"), None);
        assert_eq!(http_method("POST", "/v1/dialogues/:converse"), None);
    }
}
