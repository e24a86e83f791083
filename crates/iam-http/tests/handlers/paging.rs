//! Page tokens and paging parameters of the lists.

use actix_web::http::Method;

use crate::support::{BASE, World, bare, json, send};

async fn create_accounts<S, B>(world: &World, app: &S, n: usize)
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    for i in 0..n {
        let body = format!(
            r#"{{"id": "sa-{i}", "displayName": "n", "scope": "project", "scopeId": "web"}}"#
        );
        assert_eq!(
            send(app, json(Method::POST, BASE, &world.admin(), &body))
                .await
                .status,
            201
        );
        world.clock.advance(time::Duration::milliseconds(1));
    }
}

#[actix_web::test]
async fn a_cursor_walk_visits_every_account_once() {
    let world = World::new();
    let app = world.app().await;
    create_accounts(&world, &app, 5).await;
    let mut seen = Vec::new();
    let mut path = format!("{BASE}?pageSize=2");
    loop {
        let page = send(&app, bare(Method::GET, &path, &world.admin())).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let body = page.json();
        assert!(body.get("total").is_none());
        for account in body["serviceAccounts"].as_array().unwrap() {
            seen.push(account["id"].as_str().unwrap().to_owned());
        }
        match body["nextPageToken"].as_str() {
            Some(token) => path = format!("{BASE}?pageSize=2&pageToken={token}"),
            None => break,
        }
    }
    assert_eq!(seen, ["sa-0", "sa-1", "sa-2", "sa-3", "sa-4"]);
}

#[actix_web::test]
async fn a_forged_or_rebound_page_token_is_400() {
    let world = World::new();
    let app = world.app().await;
    create_accounts(&world, &app, 3).await;
    let first = send(
        &app,
        bare(
            Method::GET,
            &format!("{BASE}?pageSize=1&scope=project"),
            &world.admin(),
        ),
    )
    .await;
    let token = first.json()["nextPageToken"].as_str().unwrap().to_owned();
    let mut forged = token.clone().into_bytes();
    forged[2] = if forged[2] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for path in [
        format!("{BASE}?pageSize=1&scope=project&pageToken={forged}"),
        // Bound to the filters it was issued for.
        format!("{BASE}?pageSize=1&scope=organization&pageToken={token}"),
        format!("{BASE}?pageToken=not-a-token"),
    ] {
        let answer = send(&app, bare(Method::GET, &path, &world.admin())).await;
        assert_eq!(answer.status, 400, "{path}");
        assert_eq!(
            answer.reasons(),
            [(
                "INVALID_PAGE_TOKEN".to_owned(),
                Some("pageToken".to_owned())
            )]
        );
    }
}

#[actix_web::test]
async fn offset_mode_counts_and_excludes_page_tokens() {
    let world = World::new();
    let app = world.app().await;
    create_accounts(&world, &app, 3).await;
    let page = send(
        &app,
        bare(
            Method::GET,
            &format!("{BASE}?offset=1&pageSize=1"),
            &world.admin(),
        ),
    )
    .await;
    let body = page.json();
    assert_eq!(body["total"], 3);
    assert!(body.get("nextPageToken").is_none());
    assert_eq!(body["serviceAccounts"][0]["id"], "sa-1");
    let both = send(
        &app,
        bare(
            Method::GET,
            &format!("{BASE}?offset=0&pageToken=x"),
            &world.admin(),
        ),
    )
    .await;
    assert_eq!(both.status, 400);
    assert!(
        both.reasons()
            .iter()
            .any(|(reason, _)| reason == "MUTUALLY_EXCLUSIVE")
    );
}

#[actix_web::test]
async fn bad_paging_and_filter_parameters_are_each_named() {
    let world = World::new();
    let app = world.app().await;
    let path = format!("{BASE}?pageSize=501&scope=galaxy&scopeId=Not_An_Id");
    let answer = send(&app, bare(Method::GET, &path, &world.admin())).await;
    assert_eq!(answer.status, 400);
    let mut fields: Vec<String> = answer
        .reasons()
        .into_iter()
        .filter_map(|(_, f)| f)
        .collect();
    fields.sort();
    assert_eq!(fields, ["pageSize", "scope", "scopeId"]);
    // Parameters the list does not know are refused before the values are looked at.
    let unknown = send(
        &app,
        bare(
            Method::GET,
            &format!("{BASE}?bogus=1&pageSize=0"),
            &world.admin(),
        ),
    )
    .await;
    assert_eq!(
        unknown.reasons(),
        [("UNKNOWN_PARAMETER".to_owned(), Some("bogus".to_owned()))]
    );
}
