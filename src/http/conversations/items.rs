//! A conversation's items: its turns read as Responses items, listed in
//! either order and paged with `after`, read one by one, and added
//! without a model call (`POST …/items`, or `items` at creation), and
//! message items deleted (their turn stays, emptied of them). Item IDs
//! are stable: `msg_{turn}` names a turn's message, `fc_{call_id}` and
//! `fco_{call_id}` a tool call and its result (found by a scan).

use super::{answer, body_of, conversation_id};
use crate::auth::Principal;
use crate::dialogue::model::{ContentPart, DialogueId, Turn, TurnView};
use crate::failure::{ErrorKind, Failure};
use crate::http::request_json::{Obj, invalid};
use crate::http::responses::request::items as parse_items;
use crate::http::responses::turn_items as render_items;
use crate::http::{Front, caller_of};
use axum::extract::Request;
use axum::response::Response;
use serde_json::{Map, Value, json};
use tonic::Status;

/// Turns read per step while scanning for an item.
const SCAN_PAGE: usize = 100;

/// `limit` turns from index `from` on (fewer at the end of the dialogue).
async fn turns_from(
    front: &Front,
    caller: &Principal,
    dialogue: &DialogueId,
    from: u64,
    limit: usize,
) -> Result<Vec<Turn>, Status> {
    front
        .engine
        .turns_from(caller, dialogue, from, limit, TurnView::Basic)
        .await
        .map_err(Status::from)
}

fn item_not_found(conversation: &str, item: &str) -> Status {
    Failure::new(
        ErrorKind::NotFound,
        "ITEM_NOT_FOUND",
        format!("no item {item:?} in conversation {conversation:?}"),
    )
    .into()
}

/// The turn holding item `item` and the item's place among its items.
async fn locate(
    front: &Front,
    caller: &Principal,
    dialogue: &DialogueId,
    item: &str,
) -> Result<(Turn, usize), Status> {
    let not_found = || item_not_found(dialogue.public(), item);
    let place = |turn: Turn| {
        render_items(&turn)
            .iter()
            .position(|i| i["id"] == item)
            .map(|at| (turn, at))
    };
    if let Some(index) = item.strip_prefix("msg_") {
        let index: u64 = index.parse().map_err(|_| not_found())?;
        let turns = turns_from(front, caller, dialogue, index, 1).await?;
        return turns
            .into_iter()
            .find(|t| t.index == index)
            .and_then(place)
            .ok_or_else(not_found);
    }
    if !item.starts_with("fc_") && !item.starts_with("fco_") {
        return Err(not_found());
    }
    let mut from = 0;
    loop {
        let turns = turns_from(front, caller, dialogue, from, SCAN_PAGE).await?;
        let Some(last) = turns.last().map(|t| t.index) else {
            return Err(not_found());
        };
        if let Some(found) = turns.into_iter().find_map(place) {
            return Ok(found);
        }
        from = last + 1;
    }
}

fn query_of(request: &Request) -> Map<String, Value> {
    request
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /v1/conversations/{id}/items?limit=&order=&after=`.
pub async fn list(front: &Front, id: &str, request: Request) -> Response {
    let query = query_of(&request);
    let caller = caller_of(&request);
    drop(request);
    answer(
        async {
            let caller = caller?;
            let limit = match query.get("limit").and_then(Value::as_str) {
                None => 20,
                Some(n) => n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| invalid("limit", "must be 1 to 100"))?,
            };
            let descending = match query.get("order").and_then(Value::as_str) {
                None | Some("desc") => true,
                Some("asc") => false,
                Some(_) => return Err(invalid("order", "must be asc or desc")),
            };
            if query.contains_key("include") {
                return Err(invalid("include", "no extra item data is served"));
            }
            let dialogue = conversation_id(id)?;
            let (found, _) = front
                .engine
                .get_dialogue(&caller, &dialogue, None, 0, TurnView::Basic)
                .await
                .map_err(Status::from)?;
            // Where the page starts: after an item, or at an end.
            let after = match query.get("after").and_then(Value::as_str) {
                Some(item) => Some(locate(front, &caller, &dialogue, item).await?),
                None => None,
            };
            // A turn holds one item or more: `limit` turns hold enough.
            let (mut data, more) = match (descending, after) {
                (true, after) => {
                    let (end, mut head) = match after {
                        Some((turn, at)) => {
                            let mut items = render_items(&turn);
                            items.truncate(at);
                            (turn.index, items)
                        }
                        None => (found.turn_count, Vec::new()),
                    };
                    let from = end.saturating_sub(limit as u64);
                    let turns = match end - from {
                        0 => Vec::new(),
                        n => turns_from(front, &caller, &dialogue, from, n as usize).await?,
                    };
                    let mut items: Vec<Value> = turns.iter().flat_map(render_items).collect();
                    items.append(&mut head);
                    items.reverse();
                    let more = from > 0 || items.len() > limit;
                    (items, more)
                }
                (false, after) => {
                    let (from, mut items) = match after {
                        Some((turn, at)) => (turn.index + 1, render_items(&turn).split_off(at + 1)),
                        None => (0, Vec::new()),
                    };
                    let turns = turns_from(front, &caller, &dialogue, from, limit).await?;
                    let listed = turns.last().map_or(from, |t| t.index + 1);
                    items.extend(turns.iter().flat_map(render_items));
                    let more = listed < found.turn_count || items.len() > limit;
                    (items, more)
                }
            };
            data.truncate(limit);
            let first = data.first().map(|i| i["id"].clone()).unwrap_or(Value::Null);
            let last = data.last().map(|i| i["id"].clone()).unwrap_or(Value::Null);
            Ok(json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}))
        }
        .await,
    )
}

/// `GET /v1/conversations/{id}/items/{item_id}`.
pub async fn get(front: &Front, id: &str, item: &str, request: Request) -> Response {
    let caller = caller_of(&request);
    drop(request);
    answer(
        async {
            let (turn, at) = locate(front, &caller?, &conversation_id(id)?, item).await?;
            render_items(&turn)
                .into_iter()
                .nth(at)
                .ok_or_else(|| item_not_found(id, item))
        }
        .await,
    )
}

/// Adds `items` (Responses items) to `dialogue` as turns and renders the
/// items they became.
pub async fn add(
    front: &Front,
    caller: &Principal,
    dialogue: &DialogueId,
    items: &[Value],
) -> Result<Vec<Value>, Status> {
    let messages = parse_items(items, "items")?;
    let turns = front
        .engine
        .add_turns(caller, dialogue, messages)
        .await
        .map_err(Status::from)?;
    Ok(turns.iter().flat_map(render_items).collect())
}

/// `POST /v1/conversations/{id}/items`: adds items without a model call.
pub async fn create(front: &Front, id: &str, request: Request) -> Response {
    let query = query_of(&request);
    answer(
        async {
            if query.contains_key("include") {
                return Err(invalid("include", "no extra item data is served"));
            }
            let (caller, body) = body_of(front, request).await?;
            let body = Obj::new(&body, "")?;
            body.only(&["items"])?;
            let items = body
                .array("items")?
                .ok_or_else(|| invalid("items", "is required"))?;
            let data = add(front, &caller, &conversation_id(id)?, items).await?;
            let first = data.first().map(|i| i["id"].clone()).unwrap_or(Value::Null);
            let last = data.last().map(|i| i["id"].clone()).unwrap_or(Value::Null);
            Ok(json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": false}))
        }
        .await,
    )
}

/// `DELETE /v1/conversations/{id}/items/{item_id}`: a message item's text
/// and images leave their turn (its index, and so other items' IDs, stay).
/// Tool calls and results are refused: the other would be left dangling.
pub async fn delete(front: &Front, id: &str, item: &str, request: Request) -> Response {
    let caller = caller_of(&request);
    drop(request);
    answer(
        async {
            let caller = caller?;
            let dialogue = conversation_id(id)?;
            let (turn, at) = locate(front, &caller, &dialogue, item).await?;
            let kind = render_items(&turn)
                .get(at)
                .and_then(|i| i["type"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if kind != "message" {
                return Err(Failure::new(
                    ErrorKind::FailedPrecondition,
                    "TOOL_ITEMS_KEPT",
                    format!("item_id: {item:?} is a {kind}; a tool call and its output go together with their response (DELETE /v1/responses/{{id}} for the latest)"),
                )
                .into());
            }
            front
                .engine
                .remove_parts(&caller, &dialogue, turn.index, |part| {
                    matches!(part, ContentPart::Text(_) | ContentPart::Image(_))
                })
                .await
                .map_err(Status::from)?;
            let (found, _) = front
                .engine
                .get_dialogue(&caller, &dialogue, None, 0, TurnView::Basic)
                .await
                .map_err(Status::from)?;
            Ok(super::conversation(&found))
        }
        .await,
    )
}
