//! Handler tests without a database: the real routes of `iam-http` over the domain's
//! in-memory fakes (`iam-domain`'s `test-support` feature). Body and PATCH parsing,
//! preconditions, OAuth2 request parsing, page tokens and the error mapping.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod bodies;
mod errors;
mod oauth;
mod openapi;
mod paging;
mod patch;
mod support;
