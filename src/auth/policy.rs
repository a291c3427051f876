//! What each gRPC method requires: the one table of access rules. Methods
//! not listed need an authenticated caller (and tonic answers UNIMPLEMENTED).

use super::Scope;

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

pub fn required(path: &str) -> Access {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    match (service, method) {
        ("grpc.health.v1.Health", _)
        | ("grpc.reflection.v1.ServerReflection", _)
        | ("grpc.reflection.v1alpha.ServerReflection", _)
        | ("dialogue.v1.AuthService", "IssueToken") => Access::Public,
        (
            "dialogue.v1.DialogueService",
            "GetDialogue" | "ListDialogues" | "ListTurns" | "ResumeStream" | "GetOperation"
            | "WatchOperation",
        ) => Access::Scope(Scope::DialogueRead),
        (
            "dialogue.v1.DialogueService",
            "CreateDialogue" | "UpdateDialogue" | "DeleteDialogue" | "Converse" | "ConverseStream"
            | "BatchConverse" | "SubmitTurn",
        ) => Access::Scope(Scope::DialogueWrite),
        ("dialogue.v1.ModelService", "ListModels") => Access::Scope(Scope::ModelsRead),
        ("dialogue.v1.AdminService", "ListAuditEvents") => Access::Scope(Scope::AuditRead),
        ("http.OpenAi", "ChatCompletions") => Access::Scope(Scope::DialogueWrite),
        ("http.OpenAi", "ListModels") => Access::Scope(Scope::ModelsRead),
        _ => Access::Authenticated,
    }
}

/// Methods that change state: every call of these is audited.
pub fn is_mutating(path: &str) -> bool {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    matches!(
        (service, method),
        (
            "dialogue.v1.DialogueService",
            "CreateDialogue"
                | "UpdateDialogue"
                | "DeleteDialogue"
                | "Converse"
                | "ConverseStream"
                | "BatchConverse"
                | "SubmitTurn"
        ) | ("dialogue.v1.AuthService", "IssueToken")
            | ("http.OpenAi", "ChatCompletions")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_the_documented_rule() {
        assert_eq!(required("/grpc.health.v1.Health/Check"), Access::Public);
        assert_eq!(
            required("/dialogue.v1.AuthService/IssueToken"),
            Access::Public
        );
        assert_eq!(
            required("/dialogue.v1.DialogueService/ConverseStream"),
            Access::Scope(Scope::DialogueWrite)
        );
        assert_eq!(
            required("/dialogue.v1.DialogueService/ListTurns"),
            Access::Scope(Scope::DialogueRead)
        );
        assert_eq!(
            required("/dialogue.v1.ModelService/ListModels"),
            Access::Scope(Scope::ModelsRead)
        );
        // Unknown methods are never public.
        assert_eq!(
            required("/dialogue.v1.DialogueService/DropAll"),
            Access::Authenticated
        );
        assert_eq!(required("garbage"), Access::Authenticated);
    }
}
