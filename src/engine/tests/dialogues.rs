//! Dialogues as resources: CRUD and owners, paging, the expiry sweep.

use super::*;

#[tokio::test]
async fn dialogues_are_created_read_updated_and_deleted_by_their_owner_only() {
    let f = engine();
    let alice = caller("alice");
    let created = f
        .engine
        .create_dialogue(&alice, Some(id("chat")), spec())
        .await
        .unwrap();
    assert_eq!((created.model.as_str(), created.turn_count), ("echo", 0));
    let err = f
        .engine
        .create_dialogue(&alice, Some(id("chat")), spec())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::AlreadyExists(_)), "{err:?}");

    let mut changed = spec();
    changed.system_prompt = "be kind".into();
    let mask = UpdateMask {
        system_prompt: true,
        ..UpdateMask::default()
    };
    let updated = f
        .engine
        .update_dialogue(&alice, &id("chat"), changed, mask)
        .await
        .unwrap();
    assert_eq!(updated.system_prompt, "be kind");

    // Bob has a namespace of his own: alice's dialogue is not his.
    let bob = caller("bob");
    for result in [
        f.engine
            .get_dialogue(&bob, &id("chat"), None, 0, TurnView::Basic)
            .await
            .map(|_| ()),
        f.engine.delete_dialogue(&bob, &id("chat")).await,
    ] {
        assert!(
            matches!(result, Err(EngineError::NotFound(_))),
            "{result:?}"
        );
    }
    let (read, _) = f
        .engine
        .get_dialogue(&alice, &id("chat"), None, 0, TurnView::Basic)
        .await
        .unwrap();
    assert_eq!(read.system_prompt, "be kind");
    f.engine.delete_dialogue(&alice, &id("chat")).await.unwrap();
    let gone = f
        .engine
        .get_dialogue(&alice, &id("chat"), None, 0, TurnView::Basic)
        .await;
    assert!(matches!(gone, Err(EngineError::NotFound(_))));
}

#[tokio::test]
async fn lists_go_page_by_page_and_refuse_a_foreign_token() {
    let f = engine();
    let alice = caller("alice");
    for n in 0..5 {
        f.engine
            .create_dialogue(&alice, Some(id(&format!("d{n}"))), spec())
            .await
            .unwrap();
    }
    let mut seen = 0;
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = f.engine.list_dialogues(&alice, 2, &token).await.unwrap();
        seen += page.items.len();
        pages += 1;
        match page.next_page_token {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!((seen, pages), (5, 3));
    let turns_token = {
        f.engine.converse(turn("alice", "d0", "one")).await.unwrap();
        f.engine.converse(turn("alice", "d0", "two")).await.unwrap();
        let page = f
            .engine
            .list_turns(&alice, &id("d0"), 1, "", TurnView::Basic)
            .await
            .unwrap();
        page.next_page_token.unwrap()
    };
    let err = f
        .engine
        .list_dialogues(&alice, 2, &turns_token)
        .await
        .unwrap_err();
    assert_eq!(bad_field(err), "page_token");
}

#[tokio::test]
async fn the_sweep_erases_expired_dialogues_only() {
    let f = engine();
    let alice = caller("alice");
    for name in ["old", "new"] {
        f.engine
            .create_dialogue(&alice, Some(id(name)), spec())
            .await
            .unwrap();
    }
    // "old" expired a moment ago.
    let owner = crate::dialogue::model::Owner::of(&alice);
    let mut old = f
        .store
        .get_dialogue(&id("old").scoped_to(&owner))
        .await
        .unwrap()
        .unwrap();
    old.expire_time = Some(crate::dialogue::model::Time(1));
    f.store.update_dialogue(&old).await.unwrap();
    assert_eq!(f.engine.sweep_expired().await.unwrap(), 1);
    let page = f.engine.list_dialogues(&alice, 10, "").await.unwrap();
    let ids: Vec<&str> = page.items.iter().map(|d| d.id.public()).collect();
    assert_eq!(ids, ["new"]);
}

#[tokio::test]
async fn a_branch_borrows_history_and_adopts_it_before_its_parent_expires() {
    let f = engine();
    let alice = caller("alice");
    for text in ["a", "b"] {
        f.engine
            .converse(turn("alice", "trunk", text))
            .await
            .unwrap();
    }
    let branch = f
        .engine
        .branch_dialogue(&alice, &id("trunk"), 2, id("twig"))
        .await
        .unwrap();
    assert_eq!(branch.turn_count, 2);
    // Shared by reference: the branch stores nothing of its own yet.
    assert!(stored_texts(&f, "alice", "twig").await.is_empty());
    let fresh = f
        .engine
        .converse(turn("alice", "fresh", "c"))
        .await
        .unwrap();
    let grown = f.engine.converse(turn("alice", "twig", "c")).await.unwrap();
    assert!(grown.usage.prompt_tokens > fresh.usage.prompt_tokens);
    let page = f
        .engine
        .list_turns(&alice, &id("twig"), 10, "", TurnView::Basic)
        .await
        .unwrap();
    let texts: Vec<String> = page.items.iter().map(|t| t.text()).collect();
    assert_eq!(texts, ["a", "echo: a", "c", "echo: c"]);
    // Another caller cannot branch it; a point beyond its turns is no turn.
    let bob = caller("bob");
    for (who, at) in [(&bob, 2), (&alice, 9)] {
        let refused = f
            .engine
            .branch_dialogue(who, &id("trunk"), at, id("other"))
            .await;
        assert!(
            matches!(refused, Err(EngineError::NotFound(_))),
            "{refused:?}"
        );
    }
    // A branch starts after a reply, not after the caller's turn.
    let refused = f
        .engine
        .branch_dialogue(&alice, &id("trunk"), 3, id("other"))
        .await;
    assert!(
        matches!(
            refused,
            Err(EngineError::FailedPrecondition {
                reason: "NOT_AN_EXCHANGE_BOUNDARY",
                ..
            })
        ),
        "{refused:?}"
    );

    // The trunk expires: the sweep gives the branch its own copy first.
    let trunk = id("trunk").scoped_to(&crate::dialogue::model::Owner::of(&alice));
    let mut stored = f.store.get_dialogue(&trunk).await.unwrap().unwrap();
    stored.expire_time = Some(crate::dialogue::model::Time(1));
    f.store.update_dialogue(&stored).await.unwrap();
    assert_eq!(f.engine.sweep_expired().await.unwrap(), 1);
    assert!(f.store.get_dialogue(&trunk).await.unwrap().is_none());
    assert_eq!(
        stored_texts(&f, "alice", "twig").await,
        ["a", "echo: a", "c", "echo: c"]
    );
    let next = f.engine.converse(turn("alice", "twig", "d")).await.unwrap();
    assert_eq!(next.assistant_turn.index, 5);
}

#[tokio::test]
async fn an_older_exchange_is_emptied_in_place_unless_it_is_part_of_a_tool_loop() {
    let f = engine();
    let alice = caller("alice");
    let mut asking = turn("alice", "loop", "call clock");
    asking.params.tools = vec![crate::dialogue::model::ToolSpec {
        name: "clock".into(),
        description: String::new(),
        parameters: None,
        strict: false,
    }];
    let called = f.engine.converse(asking.clone()).await.unwrap();
    let call_id = match &called.assistant_turn.content[..] {
        [ContentPart::ToolCall(call)] => call.id.clone(),
        other => panic!("no tool call: {other:?}"),
    };
    let mut answer = asking;
    answer.content = vec![ContentPart::ToolResult(
        crate::dialogue::model::ToolResult {
            call_id,
            content: vec![ContentPart::Text("noon".into())],
            is_error: false,
        },
    )];
    f.engine.converse(answer).await.unwrap();
    for text in ["plain", "last"] {
        f.engine
            .converse(turn("alice", "loop", text))
            .await
            .unwrap();
    }
    // Turns: 0 user, 1 call, 2 results, 3 reply, 4 "plain", 5, 6 "last", 7.
    for tool_reply in [1, 3] {
        let refused = f
            .engine
            .delete_exchange(&alice, &id("loop"), tool_reply)
            .await;
        assert!(
            matches!(
                refused,
                Err(EngineError::FailedPrecondition {
                    reason: "TOOL_EXCHANGE_KEPT",
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    f.engine
        .delete_exchange(&alice, &id("loop"), 5)
        .await
        .unwrap();
    let texts = stored_texts(&f, "alice", "loop").await;
    assert_eq!(texts.len(), 8);
    assert_eq!(
        (texts[4].as_str(), texts[5].as_str(), texts[6].as_str()),
        ("", "", "last")
    );
    // Gone: a second delete finds nothing.
    let again = f.engine.delete_exchange(&alice, &id("loop"), 5).await;
    assert!(matches!(again, Err(EngineError::NotFound(_))), "{again:?}");
}

#[tokio::test]
async fn a_dialogue_lends_to_a_bounded_number_of_branches_then_copies() {
    use crate::engine::branches::MAX_BRANCHES;
    let f = engine();
    let alice = caller("alice");
    f.engine.converse(turn("alice", "root", "a")).await.unwrap();
    for n in 0..MAX_BRANCHES {
        let b = f
            .engine
            .branch_dialogue(&alice, &id("root"), 2, id(&format!("b{n}")))
            .await
            .unwrap();
        assert!(b.fork.is_some());
    }
    // Full: the next one is a copy of the history, not a loan.
    let copy = f
        .engine
        .branch_dialogue(&alice, &id("root"), 2, id("copy"))
        .await
        .unwrap();
    assert!(copy.fork.is_none());
    assert_eq!(stored_texts(&f, "alice", "copy").await, ["a", "echo: a"]);
    // A branch erased frees its place once the list is pruned.
    f.engine.delete_dialogue(&alice, &id("b0")).await.unwrap();
    let lent = f
        .engine
        .branch_dialogue(&alice, &id("root"), 2, id("again"))
        .await
        .unwrap();
    assert!(lent.fork.is_some());
    assert!(stored_texts(&f, "alice", "again").await.is_empty());
}
