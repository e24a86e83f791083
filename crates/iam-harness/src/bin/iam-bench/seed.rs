//! The benchmark's data: one service account with a credential, and filler accounts.

use std::net::SocketAddr;

use anyhow::{Context as _, Result, ensure};
use iam_harness::json_string;
use iam_harness::loadgen::{Connection, Request};

use crate::{ACCOUNTS_PATH, ADMIN_ROLE, BENCH_ACCOUNT, FILLER_ACCOUNTS, TENANT};

/// Creates the benchmark's service account (with a credential) and the filler accounts;
/// returns the JSON body of a token mint request for that credential.
pub(crate) fn seed(addr: SocketAddr, token: &str) -> Result<String> {
    let mut connection = Connection::new(addr);
    let mut call = |request: Request, what: &str| {
        let response = connection
            .send(&request.render(addr))
            .with_context(|| format!("{what}: the request failed"))?;
        ensure!(
            response.status == 201,
            "{what}: expected HTTP 201, got {}",
            response.summary()
        );
        Ok(response)
    };
    let account = |id: &str, name: &str| {
        Request::post(ACCOUNTS_PATH).bearer(token).json(format!(
            r#"{{"id":"{id}","displayName":"{name}","scope":"organization","scopeId":"{TENANT}","roles":["{ADMIN_ROLE}"]}}"#
        ))
    };

    let created = call(account(BENCH_ACCOUNT, "bench"), "creating sa-bench")?;
    let client_id = json_string(&created.text(), "clientId")
        .context("no clientId in the created service account")?;
    for n in 1..=FILLER_ACCOUNTS {
        let id = format!("sa-filler-{n:04}");
        call(account(&id, &id), &format!("creating {id}"))?;
    }
    let credential = call(
        Request::post(format!("{ACCOUNTS_PATH}/{BENCH_ACCOUNT}/credentials")).bearer(token),
        "creating a credential of sa-bench",
    )?;
    let secret = json_string(&credential.text(), "clientSecret")
        .context("no clientSecret in the created credential")?;
    Ok(serde_json::json!({
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
    })
    .to_string())
}
