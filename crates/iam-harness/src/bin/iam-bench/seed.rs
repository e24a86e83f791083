//! The benchmark's data: one service account with a credential, and a tenant of
//! [`LIST_ACCOUNTS`] more accounts (to list, and to create credentials for).

use std::net::SocketAddr;
use std::thread;

use anyhow::{Context as _, Result, anyhow, ensure};
use iam_harness::json_string;
use iam_harness::loadgen::{Connection, Request};

use crate::{ACCOUNTS_PATH, ADMIN_ROLE, BENCH_ACCOUNT, LIST_ACCOUNTS, TENANT};

/// What the scenarios need from the seeded data.
pub(crate) struct Seeded {
    /// The JSON body of a token mint request for `sa-bench`'s credential.
    pub(crate) mint_body: String,
    /// The ids of the other accounts.
    pub(crate) accounts: Vec<String>,
}

/// The request creating account `id` in the tenant.
fn create_account(token: &str, id: &str) -> Request {
    Request::post(ACCOUNTS_PATH).bearer(token).json(format!(
        r#"{{"id":"{id}","displayName":"{id}","scope":"organization","scopeId":"{TENANT}","roles":["{ADMIN_ROLE}"]}}"#
    ))
}

/// Sends `request` on `connection` and requires `status`.
fn call(
    connection: &mut Connection,
    addr: SocketAddr,
    request: &Request,
    status: u16,
    what: &str,
) -> Result<iam_harness::loadgen::Response> {
    let response = connection
        .send(&request.render(addr))
        .with_context(|| format!("{what}: the request failed"))?;
    ensure!(
        response.status == status,
        "{what}: expected HTTP {status}, got {}",
        response.summary()
    );
    Ok(response)
}

/// Creates `sa-bench` with a credential, then the other accounts over `clients`
/// connections in parallel (through the API, like any client).
pub(crate) fn seed(addr: SocketAddr, token: &str, clients: usize) -> Result<Seeded> {
    let mut connection = Connection::new(addr);
    let created = call(
        &mut connection,
        addr,
        &create_account(token, BENCH_ACCOUNT),
        201,
        "creating sa-bench",
    )?;
    let client_id = json_string(&created.text(), "clientId")
        .context("no clientId in the created service account")?;
    let credential = call(
        &mut connection,
        addr,
        &Request::post(format!("{ACCOUNTS_PATH}/{BENCH_ACCOUNT}/credentials")).bearer(token),
        201,
        "creating a credential of sa-bench",
    )?;
    let secret = json_string(&credential.text(), "clientSecret")
        .context("no clientSecret in the created credential")?;

    let accounts: Vec<String> = (1..=LIST_ACCOUNTS)
        .map(|n| format!("sa-filler-{n:06}"))
        .collect();
    let chunk = accounts.len().div_ceil(clients.max(1));
    thread::scope(|scope| {
        let workers: Vec<_> = accounts
            .chunks(chunk)
            .map(|ids| {
                scope.spawn(move || {
                    let mut connection = Connection::new(addr);
                    for id in ids {
                        call(
                            &mut connection,
                            addr,
                            &create_account(token, id),
                            201,
                            &format!("creating {id}"),
                        )?;
                    }
                    Ok::<_, anyhow::Error>(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|worker| {
            worker
                .join()
                .map_err(|_| anyhow!("a seeding thread panicked"))?
        })
    })?;
    Ok(Seeded {
        mint_body: serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
        })
        .to_string(),
        accounts,
    })
}

/// The `pageToken` of page `page` (1-based; at least 2) of the tenant's accounts in cursor
/// mode with the default page size: found by walking the pages before it.
pub(crate) fn page_token(addr: SocketAddr, token: &str, page: usize) -> Result<String> {
    let mut connection = Connection::new(addr);
    let mut next: Option<String> = None;
    for n in 1..page {
        let path = match &next {
            None => ACCOUNTS_PATH.to_owned(),
            Some(cursor) => format!("{ACCOUNTS_PATH}?pageToken={cursor}"),
        };
        let listed = call(
            &mut connection,
            addr,
            &Request::get(path).bearer(token),
            200,
            &format!("listing page {n}"),
        )?;
        next = Some(
            json_string(&listed.text(), "nextPageToken")
                .with_context(|| format!("page {n} has no nextPageToken"))?,
        );
    }
    next.context("page 1 has no page token")
}
