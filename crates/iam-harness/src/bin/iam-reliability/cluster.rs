//! Scenario 6: two instances on one database behave as one (SPEC §7, scale-out).
//!
//! - The credential cap is exact under concurrent creates spread over both.
//! - A disable on one is enforced by the other on the next request (no token from the
//!   disabled account's secret); a revocation on one is enforced by the other (introspection
//!   and use as a bearer token).
//! - The same `Idempotency-Key` sent to both at once does the work once.

use std::time::Instant;

use anyhow::{Context as _, Result};
use iam_harness::json_string;
use iam_harness::loadgen::{Request, Response};

use crate::Pace;
use crate::fixture::{ACCOUNTS, Fixture, TOKEN};
use crate::outcome::Outcome;
use crate::traffic::{Sample, once, spread};

const INTROSPECT: &str = "/v1/regions/global/auth/introspect";
const REVOKE: &str = "/v1/regions/global/auth/revoke";
/// The example organization's cap.
const CAP: usize = 5;

pub(crate) fn run(fixture: &Fixture, pace: Pace) -> Result<Outcome> {
    let a = fixture.server(&[])?;
    let b = a.another_instance()?;
    let (_running_a, _running_b) = (Fixture::start(&a)?, Fixture::start(&b)?);
    let addrs = [a.addr, b.addr];
    let epoch = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut outcome = Outcome::new(
        "two-instances",
        "two servers on one database, clients alternating between them",
    );

    // The cap, with creates spread over both instances at once.
    let rounds = if pace.fast { 2 } else { 5 };
    let mut over_cap = Vec::new();
    for _ in 0..rounds {
        let account = fixture.id("sa-rel-two-cap");
        fixture.create_account(a.addr, &account)?;
        let create =
            Request::post(format!("{ACCOUNTS}/{account}/credentials")).bearer(&fixture.admin);
        let answers = spread(&addrs, &vec![create; 2 * CAP], epoch);
        let created = answers
            .iter()
            .filter(|(s, _)| s.status == Some(201))
            .count();
        let refused = answers
            .iter()
            .filter(|(s, _)| s.status == Some(409))
            .count();
        samples.extend(answers.iter().map(|(s, _)| *s));
        let stored = fixture.count(&format!(
            "SELECT count(*) FROM credentials c JOIN service_accounts s \
             ON c.service_account_uid = s.uid WHERE s.id = '{account}'"
        ))?;
        if created != CAP || refused != CAP || stored != CAP as u64 {
            over_cap.push(format!(
                "{account}: {created} created, {refused} refused, {stored} stored"
            ));
        }
    }
    outcome.check(
        format!(
            "{} concurrent credential creates over both instances: exactly {CAP} succeed",
            2 * CAP
        ),
        over_cap.is_empty(),
        over_cap
            .first()
            .cloned()
            .unwrap_or_else(|| format!("{rounds} accounts")),
    );

    // A disable on A, the next mint on B.
    let disabled = fixture.create_client(a.addr, "sa-rel-two-off")?;
    let mint = Request::post(TOKEN).json(disabled.mint_body.clone());
    let before = call(b.addr, &mint, epoch, &mut samples);
    let patch = Request::patch(format!("{ACCOUNTS}/{}", disabled.account))
        .bearer(&fixture.admin)
        .json(r#"{"status":"disabled"}"#);
    let patched = call(a.addr, &patch, epoch, &mut samples);
    let after = call(b.addr, &mint, epoch, &mut samples);
    outcome.check(
        "an account disabled on one instance mints no token on the other, from the next request",
        status(before.as_ref()) == 200
            && status(patched.as_ref()) == 200
            && status(after.as_ref()) == 401,
        format!(
            "mint on B {}, disable on A {}, mint on B {}",
            status(before.as_ref()),
            status(patched.as_ref()),
            status(after.as_ref())
        ),
    );

    // A revocation on A, introspection and use on B.
    let client = fixture.create_client(a.addr, "sa-rel-two-rev")?;
    let minted = call(
        a.addr,
        &Request::post(TOKEN).json(client.mint_body.clone()),
        epoch,
        &mut samples,
    )
    .context("no answer to the token request")?;
    let token = json_string(&minted.text(), "access_token").context("no access_token")?;
    let body = serde_json::json!({ "token": token }).to_string();
    let introspect = Request::post(INTROSPECT)
        .bearer(&fixture.admin)
        .json(body.clone());
    let use_token = Request::get(format!("{ACCOUNTS}/{}", client.account)).bearer(&token);
    let active_before = active(call(b.addr, &introspect, epoch, &mut samples));
    let used_before = status(call(b.addr, &use_token, epoch, &mut samples).as_ref());
    let revoked = status(
        call(
            a.addr,
            &Request::post(REVOKE).bearer(&fixture.admin).json(body),
            epoch,
            &mut samples,
        )
        .as_ref(),
    );
    let active_after = active(call(b.addr, &introspect, epoch, &mut samples));
    let used_after = status(call(b.addr, &use_token, epoch, &mut samples).as_ref());
    outcome.check(
        "a token revoked on one instance is inactive and refused on the other, from the next request",
        active_before == Some(true)
            && used_before == 200
            && revoked == 200
            && active_after == Some(false)
            && used_after == 401,
        format!(
            "before: active {active_before:?}, use {used_before}; revoke {revoked}; after: active \
             {active_after:?}, use {used_after}"
        ),
    );

    // One Idempotency-Key sent to both at once.
    let account = fixture.id("sa-rel-two-idem");
    fixture.create_account(a.addr, &account)?;
    let keys = if pace.fast { 3 } else { CAP - 1 };
    let mut wrong = Vec::new();
    let mut replayed = 0;
    for n in 0..keys {
        let create = Request::post(format!("{ACCOUNTS}/{account}/credentials"))
            .bearer(&fixture.admin)
            .header("Idempotency-Key", format!("{account}-{n}"));
        let answers = spread(&addrs, &[create.clone(), create], epoch);
        samples.extend(answers.iter().map(|(s, _)| *s));
        let ids: Vec<String> = answers
            .iter()
            .filter_map(|(_, r)| r.as_ref())
            .filter(|r| r.status == 201)
            .filter_map(|r| json_string(&r.text(), "id"))
            .collect();
        replayed += answers
            .iter()
            .filter_map(|(_, r)| r.as_ref())
            .filter(|r| r.header("idempotent-replayed") == Some("true"))
            .count();
        let in_progress = answers
            .iter()
            .filter_map(|(_, r)| r.as_ref())
            .filter(|r| r.status == 409)
            .count();
        // Both created (the same one, replayed), or one did and the other was told to wait.
        let consistent =
            (ids.len() == 2 && ids[0] == ids[1]) || (ids.len() == 1 && in_progress == 1);
        if !consistent {
            wrong.push(format!(
                "key {n}: {} created ({ids:?}), {in_progress} in progress",
                ids.len()
            ));
        }
    }
    let stored = fixture.count(&format!(
        "SELECT count(*) FROM credentials c JOIN service_accounts s \
         ON c.service_account_uid = s.uid WHERE s.id = '{account}'"
    ))?;
    outcome.check(
        "the same Idempotency-Key sent to both instances at once creates once",
        wrong.is_empty() && stored == keys as u64,
        format!(
            "{keys} keys, {stored} credentials stored, {replayed} replays{}",
            wrong.first().map_or_else(String::new, |w| format!("; {w}"))
        ),
    );
    outcome.count(&samples);
    Ok(outcome)
}

fn call(
    addr: std::net::SocketAddr,
    request: &Request,
    epoch: Instant,
    samples: &mut Vec<Sample>,
) -> Option<Response> {
    let (sample, response) = once(addr, request, epoch);
    samples.push(sample);
    response
}

fn status(response: Option<&Response>) -> u16 {
    response.as_ref().map_or(0, |r| r.status)
}

fn active(response: Option<Response>) -> Option<bool> {
    response.filter(|r| r.status == 200)?.json()["active"].as_bool()
}
