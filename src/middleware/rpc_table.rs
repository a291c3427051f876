//! The one table of methods: every method dialogd serves, gRPC and HTTP
//! alike, is declared here once — its name (the metric labels and the audit
//! action), what a caller needs to call it, whether it changes state (every
//! call of those is audited) and the HTTP routes that reach it. The auth,
//! audit, metrics and rate-limit layers and the HTTP front's routing all read
//! it; a call that names no method here is refused UNIMPLEMENTED (gRPC) or
//! NOT_FOUND (HTTP), counted under one `unknown` label and needs an
//! authenticated caller. Which method a call names is `call::Resolved`'s.

use crate::auth::Scope;

/// What a caller needs to call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials: health, reflection, and token issuance (which checks
    /// the client's credentials itself).
    Public,
    /// An authenticated caller holding this scope.
    Scope(Scope),
    /// An authenticated caller, whatever its scopes.
    Authenticated,
}

/// An HTTP route: a method and a path pattern, in which `{id}` stands for
/// one path segment (percent-decoded), optionally followed by a literal
/// suffix (`{id}:converse`, AIP-136 custom methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub pattern: &'static str,
}

/// How a method is called and what it needs.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// `/package.Service/Method`: the gRPC path, or for HTTP-only methods
    /// a name of the same form (`/http.OpenAi/ChatCompletions`).
    pub path: &'static str,
    pub access: Access,
    /// Changes state: every call is audited.
    pub mutating: bool,
    /// The HTTP routes that call it.
    pub routes: &'static [Route],
}

macro_rules! methods {
    ($($rpc:ident),* $(,)?) => {
        /// Every method served.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Rpc {
            $($rpc),*
        }

        impl Rpc {
            pub const ALL: &'static [Rpc] = &[$(Rpc::$rpc),*];
        }
    };
}

methods!(
    CreateDialogue,
    GetDialogue,
    ListDialogues,
    UpdateDialogue,
    DeleteDialogue,
    ListTurns,
    Converse,
    ConverseStream,
    BatchConverse,
    ResumeStream,
    SubmitTurn,
    GetOperation,
    WatchOperation,
    ListModels,
    IssueToken,
    ListAuditEvents,
    ExportStore,
    ListRules,
    ChatCompletions,
    OpenAiEmbeddings,
    OpenAiListModels,
    OpenAiGetModel,
    AnthropicMessages,
    AnthropicCountTokens,
    ResponsesCreate,
    ResponsesGet,
    ResponsesInputItems,
    ResponsesDelete,
    DialogueConnect,
    ConversationsCreate,
    ConversationsGet,
    ConversationsUpdate,
    ConversationsDelete,
    ConversationsListItems,
    ConversationsCreateItems,
    ConversationsGetItem,
    ConversationsDeleteItem,
    HealthCheck,
    HealthWatch,
    Reflection,
    ReflectionV1Alpha,
    OpenApi,
);

/// One HTTP route of a method.
macro_rules! route {
    ($method:literal, $pattern:literal) => {
        &[Route {
            method: $method,
            pattern: $pattern,
        }]
    };
}

const READ: Access = Access::Scope(Scope::DialogueRead);
const WRITE: Access = Access::Scope(Scope::DialogueWrite);
const MODELS: Access = Access::Scope(Scope::ModelsRead);
const MUTATES: bool = true;
const READS: bool = false;

const fn spec(
    path: &'static str,
    access: Access,
    mutating: bool,
    routes: &'static [Route],
) -> Spec {
    Spec {
        path,
        access,
        mutating,
        routes,
    }
}

impl Rpc {
    /// The method's entry in the table.
    pub const fn spec(self) -> Spec {
        use Rpc::*;
        match self {
            CreateDialogue => spec(
                "/dialogue.v1.DialogueService/CreateDialogue",
                WRITE,
                MUTATES,
                route!("POST", "/v1/dialogues"),
            ),
            GetDialogue => spec(
                "/dialogue.v1.DialogueService/GetDialogue",
                READ,
                READS,
                route!("GET", "/v1/dialogues/{id}"),
            ),
            ListDialogues => spec(
                "/dialogue.v1.DialogueService/ListDialogues",
                READ,
                READS,
                route!("GET", "/v1/dialogues"),
            ),
            UpdateDialogue => spec(
                "/dialogue.v1.DialogueService/UpdateDialogue",
                WRITE,
                MUTATES,
                route!("PATCH", "/v1/dialogues/{id}"),
            ),
            DeleteDialogue => spec(
                "/dialogue.v1.DialogueService/DeleteDialogue",
                WRITE,
                MUTATES,
                route!("DELETE", "/v1/dialogues/{id}"),
            ),
            ListTurns => spec(
                "/dialogue.v1.DialogueService/ListTurns",
                READ,
                READS,
                route!("GET", "/v1/dialogues/{id}/turns"),
            ),
            Converse => spec(
                "/dialogue.v1.DialogueService/Converse",
                WRITE,
                MUTATES,
                route!("POST", "/v1/dialogues/{id}:converse"),
            ),
            ConverseStream => spec(
                "/dialogue.v1.DialogueService/ConverseStream",
                WRITE,
                MUTATES,
                route!("POST", "/v1/dialogues/{id}:converseStream"),
            ),
            BatchConverse => spec(
                "/dialogue.v1.DialogueService/BatchConverse",
                WRITE,
                MUTATES,
                route!("POST", "/v1/dialogues:batchConverse"),
            ),
            ResumeStream => spec(
                "/dialogue.v1.DialogueService/ResumeStream",
                READ,
                READS,
                &[],
            ),
            SubmitTurn => spec(
                "/dialogue.v1.DialogueService/SubmitTurn",
                WRITE,
                MUTATES,
                &[],
            ),
            GetOperation => spec(
                "/dialogue.v1.DialogueService/GetOperation",
                READ,
                READS,
                &[],
            ),
            WatchOperation => spec(
                "/dialogue.v1.DialogueService/WatchOperation",
                READ,
                READS,
                &[],
            ),
            ListModels => spec("/dialogue.v1.ModelService/ListModels", MODELS, READS, &[]),
            IssueToken => spec(
                "/dialogue.v1.AuthService/IssueToken",
                Access::Public,
                MUTATES,
                &[],
            ),
            ListAuditEvents => spec(
                "/dialogue.v1.AdminService/ListAuditEvents",
                Access::Scope(Scope::AuditRead),
                READS,
                &[],
            ),
            ExportStore => spec(
                "/dialogue.v1.AdminService/ExportStore",
                Access::Scope(Scope::Admin),
                READS,
                &[],
            ),
            ListRules => spec(
                "/dialogue.v1.AdminService/ListRules",
                Access::Scope(Scope::Admin),
                READS,
                &[],
            ),
            ChatCompletions => spec(
                "/http.OpenAi/ChatCompletions",
                WRITE,
                MUTATES,
                route!("POST", "/v1/chat/completions"),
            ),
            OpenAiEmbeddings => spec(
                "/http.OpenAi/Embeddings",
                WRITE,
                READS,
                route!("POST", "/v1/embeddings"),
            ),
            OpenAiListModels => spec(
                "/http.OpenAi/ListModels",
                MODELS,
                READS,
                route!("GET", "/v1/models"),
            ),
            OpenAiGetModel => spec(
                "/http.OpenAi/GetModel",
                MODELS,
                READS,
                route!("GET", "/v1/models/{id}"),
            ),
            AnthropicMessages => spec(
                "/http.Anthropic/Messages",
                WRITE,
                MUTATES,
                route!("POST", "/v1/messages"),
            ),
            ResponsesCreate => spec(
                "/http.OpenAiResponses/Create",
                WRITE,
                MUTATES,
                route!("POST", "/v1/responses"),
            ),
            ResponsesGet => spec(
                "/http.OpenAiResponses/Get",
                READ,
                READS,
                route!("GET", "/v1/responses/{id}"),
            ),
            ResponsesInputItems => spec(
                "/http.OpenAiResponses/InputItems",
                READ,
                READS,
                route!("GET", "/v1/responses/{id}/input_items"),
            ),
            ResponsesDelete => spec(
                "/http.OpenAiResponses/Delete",
                WRITE,
                MUTATES,
                route!("DELETE", "/v1/responses/{id}"),
            ),
            DialogueConnect => spec(
                "/http.DialogueWebSocket/Connect",
                WRITE,
                MUTATES,
                route!("GET", "/v1/dialogues/{id}:connect"),
            ),
            ConversationsCreate => spec(
                "/http.OpenAiConversations/Create",
                WRITE,
                MUTATES,
                route!("POST", "/v1/conversations"),
            ),
            ConversationsGet => spec(
                "/http.OpenAiConversations/Get",
                READ,
                READS,
                route!("GET", "/v1/conversations/{id}"),
            ),
            ConversationsUpdate => spec(
                "/http.OpenAiConversations/Update",
                WRITE,
                MUTATES,
                route!("POST", "/v1/conversations/{id}"),
            ),
            ConversationsDelete => spec(
                "/http.OpenAiConversations/Delete",
                WRITE,
                MUTATES,
                route!("DELETE", "/v1/conversations/{id}"),
            ),
            ConversationsListItems => spec(
                "/http.OpenAiConversations/ListItems",
                READ,
                READS,
                route!("GET", "/v1/conversations/{id}/items"),
            ),
            ConversationsCreateItems => spec(
                "/http.OpenAiConversations/CreateItems",
                WRITE,
                MUTATES,
                route!("POST", "/v1/conversations/{id}/items"),
            ),
            ConversationsGetItem => spec(
                "/http.OpenAiConversations/GetItem",
                READ,
                READS,
                route!("GET", "/v1/conversations/{id}/items/{id}"),
            ),
            ConversationsDeleteItem => spec(
                "/http.OpenAiConversations/DeleteItem",
                WRITE,
                MUTATES,
                route!("DELETE", "/v1/conversations/{id}/items/{id}"),
            ),
            AnthropicCountTokens => spec(
                "/http.Anthropic/CountTokens",
                MODELS,
                READS,
                route!("POST", "/v1/messages/count_tokens"),
            ),
            OpenApi => spec(
                "/http.Docs/OpenApi",
                Access::Public,
                READS,
                route!("GET", "/openapi.json"),
            ),
            HealthCheck => spec("/grpc.health.v1.Health/Check", Access::Public, READS, &[]),
            HealthWatch => spec("/grpc.health.v1.Health/Watch", Access::Public, READS, &[]),
            Reflection => spec(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                Access::Public,
                READS,
                &[],
            ),
            ReflectionV1Alpha => spec(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                Access::Public,
                READS,
                &[],
            ),
        }
    }

    /// Streams that only watch state and hold no work (health, an
    /// operation): a drain ends them instead of waiting for them.
    pub fn only_watches(self) -> bool {
        matches!(self, Rpc::HealthWatch | Rpc::WatchOperation)
    }

    /// The method a gRPC path names.
    pub fn for_grpc_path(path: &str) -> Option<Rpc> {
        Rpc::ALL.iter().copied().find(|rpc| rpc.spec().path == path)
    }

    /// The `grpc_service` and `grpc_method` metric labels.
    pub fn labels(self) -> (&'static str, &'static str) {
        let path = self.spec().path;
        path.trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_the_documented_rule() {
        let access = |path| Rpc::for_grpc_path(path).map(|r| r.spec().access);
        assert_eq!(access("/grpc.health.v1.Health/Check"), Some(Access::Public));
        assert_eq!(
            access("/dialogue.v1.AuthService/IssueToken"),
            Some(Access::Public)
        );
        assert_eq!(
            access("/dialogue.v1.DialogueService/ConverseStream"),
            Some(Access::Scope(Scope::DialogueWrite))
        );
        assert_eq!(
            access("/dialogue.v1.DialogueService/ListTurns"),
            Some(Access::Scope(Scope::DialogueRead))
        );
        assert_eq!(
            access("/dialogue.v1.ModelService/ListModels"),
            Some(Access::Scope(Scope::ModelsRead))
        );
    }

    #[test]
    fn each_method_is_declared_once() {
        let mut paths: Vec<&str> = Rpc::ALL.iter().map(|r| r.spec().path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), Rpc::ALL.len());
    }
}
