//! Fetching and caching rules, over real HTTP against the fake issuer (and a raw loopback
//! server for failures the fake issuer does not produce).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{LEEWAY, NOW, claims, fetcher, http_response, raw_server};
use iam_oidc::testing::{FakeAlg, FakeIssuer};
use iam_oidc::{FetchCounts, FetcherConfig, JwksLocation, VerifyError};
use tokio::task::JoinSet;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[tokio::test]
async fn ten_verifications_with_a_known_kid_fetch_once() {
    let issuer = FakeIssuer::start().await;
    let fetcher = fetcher(FetcherConfig::default());
    let location = JwksLocation::Url(issuer.jwks_uri());
    for _ in 0..10 {
        let token = issuer.sign(FakeAlg::EdDsa, &claims(&issuer.issuer()));
        fetcher
            .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
            .await
            .unwrap();
    }
    assert_eq!(issuer.fetches(), 1);
    assert_eq!(
        fetcher.counts(),
        FetchCounts {
            fetched: 1,
            failed: 0
        }
    );
}

#[tokio::test]
async fn discovery_is_cached_with_the_keys() {
    let issuer = FakeIssuer::start().await;
    let fetcher = fetcher(FetcherConfig::default());
    let location = JwksLocation::Discovery {
        issuer: issuer.issuer(),
    };
    for _ in 0..10 {
        let token = issuer.sign(FakeAlg::Es256, &claims(&issuer.issuer()));
        fetcher
            .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
            .await
            .unwrap();
    }
    assert_eq!(issuer.fetches(), 1);
    assert_eq!(
        fetcher.counts(),
        FetchCounts {
            fetched: 2,
            failed: 0
        },
        "discovery + JWKS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verifications_share_one_fetch() {
    let issuer = FakeIssuer::start().await;
    let fetcher = Arc::new(fetcher(FetcherConfig::default()));
    let location = JwksLocation::Discovery {
        issuer: issuer.issuer(),
    };
    let mut tasks = JoinSet::new();
    for alg in [FakeAlg::Rs256, FakeAlg::Es256, FakeAlg::EdDsa].repeat(8) {
        let token = issuer.sign(alg, &claims(&issuer.issuer()));
        let (fetcher, location, iss) = (Arc::clone(&fetcher), location.clone(), issuer.issuer());
        tasks.spawn(async move { fetcher.verify(&token, &iss, &location, NOW, LEEWAY).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(issuer.fetches(), 1);
    assert_eq!(
        fetcher.counts(),
        FetchCounts {
            fetched: 2,
            failed: 0
        }
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let issuer = FakeIssuer::start().await;
    let fetcher = fetcher(FetcherConfig::default());
    let location = JwksLocation::Url(issuer.jwks_uri());
    let known = issuer.sign(FakeAlg::Rs256, &claims(&issuer.issuer()));
    fetcher
        .verify(&known, &issuer.issuer(), &location, NOW, LEEWAY)
        .await
        .unwrap();
    assert_eq!(issuer.fetches(), 1);

    for _ in 0..5 {
        let unknown = issuer.sign_unknown_kid(FakeAlg::Rs256, &claims(&issuer.issuer()));
        let err = fetcher
            .verify(&unknown, &issuer.issuer(), &location, NOW, LEEWAY)
            .await;
        assert_eq!(
            err.unwrap_err(),
            VerifyError::UnknownKey {
                kid: "unpublished-rs256".into()
            }
        );
    }
    assert_eq!(
        issuer.fetches(),
        2,
        "one refetch for the unknown kid, then rate-limited"
    );
    fetcher
        .verify(&known, &issuer.issuer(), &location, NOW, LEEWAY)
        .await
        .unwrap();
    assert_eq!(
        fetcher.counts(),
        FetchCounts {
            fetched: 2,
            failed: 0
        }
    );
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_through_the_unknown_kid_refetch() {
    let issuer = FakeIssuer::start().await;
    let interval = ms(400);
    let fetcher = fetcher(FetcherConfig {
        refetch_interval: interval,
        ..Default::default()
    });
    let location = JwksLocation::Discovery {
        issuer: issuer.issuer(),
    };
    for alg in [FakeAlg::Rs256, FakeAlg::Es256, FakeAlg::EdDsa] {
        let old = issuer.sign(alg, &claims(&issuer.issuer()));
        fetcher
            .verify(&old, &issuer.issuer(), &location, NOW, LEEWAY)
            .await
            .unwrap();
        let before = issuer.fetches();
        tokio::time::sleep(interval + ms(100)).await;

        issuer.rotate(alg);
        let new = issuer.sign(alg, &claims(&issuer.issuer()));
        fetcher
            .verify(&new, &issuer.issuer(), &location, NOW, LEEWAY)
            .await
            .unwrap();
        assert_eq!(
            issuer.fetches(),
            before + 1,
            "{alg:?}: one refetch for the new kid"
        );
        let err = fetcher
            .verify(&old, &issuer.issuer(), &location, NOW, LEEWAY)
            .await;
        assert!(
            matches!(err, Err(VerifyError::UnknownKey { .. })),
            "{alg:?}: the old key left"
        );
        tokio::time::sleep(interval + ms(100)).await;
    }
}

#[tokio::test]
async fn a_down_issuer_with_nothing_cached_is_not_hammered() {
    let issuer = FakeIssuer::start().await;
    issuer.set_down(true);
    let backoff = ms(500);
    let fetcher = fetcher(FetcherConfig {
        failure_backoff: backoff,
        ..Default::default()
    });
    let location = JwksLocation::Url(issuer.jwks_uri());
    let token = issuer.sign(FakeAlg::Es256, &claims(&issuer.issuer()));
    for _ in 0..5 {
        let err = fetcher
            .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
            .await;
        assert_eq!(err.unwrap_err(), VerifyError::KeysUnavailable);
    }
    assert_eq!(issuer.fetches(), 1, "no new attempt within the backoff");
    assert_eq!(
        fetcher.counts(),
        FetchCounts {
            fetched: 0,
            failed: 1
        }
    );

    issuer.set_down(false);
    tokio::time::sleep(backoff + ms(100)).await;
    fetcher
        .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
        .await
        .unwrap();
    assert_eq!(
        fetcher.counts(),
        FetchCounts {
            fetched: 1,
            failed: 1
        }
    );
}

#[tokio::test]
async fn expired_keys_are_used_while_the_issuer_is_down() {
    let issuer = FakeIssuer::start().await;
    let config = FetcherConfig {
        default_ttl: ms(200),
        min_ttl: Duration::ZERO,
        failure_backoff: Duration::from_mins(1),
        ..Default::default()
    };
    let fetcher = fetcher(config);
    let location = JwksLocation::Url(issuer.jwks_uri());
    let token = issuer.sign(FakeAlg::Rs256, &claims(&issuer.issuer()));
    fetcher
        .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
        .await
        .unwrap();

    issuer.set_down(true);
    tokio::time::sleep(ms(400)).await;
    for _ in 0..3 {
        fetcher
            .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
            .await
            .unwrap();
    }
    assert_eq!(issuer.fetches(), 2, "one failed refetch, then the backoff");
    assert_eq!(
        fetcher.counts(),
        FetchCounts {
            fetched: 1,
            failed: 1
        }
    );
}

#[tokio::test]
async fn cache_control_sets_the_lifetime_within_bounds() {
    let issuer = FakeIssuer::start().await;
    let config = FetcherConfig {
        min_ttl: Duration::ZERO,
        ..Default::default()
    };
    let fetcher = fetcher(config);
    let location = JwksLocation::Url(issuer.jwks_uri());
    let token = issuer.sign(FakeAlg::EdDsa, &claims(&issuer.issuer()));

    issuer.set_cache_control(Some("no-store"));
    for _ in 0..3 {
        fetcher
            .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
            .await
            .unwrap();
    }
    assert_eq!(
        issuer.fetches(),
        3,
        "no-store: min_ttl (zero here) each time"
    );

    issuer.set_cache_control(Some("public, max-age=600"));
    for _ in 0..3 {
        fetcher
            .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
            .await
            .unwrap();
    }
    assert_eq!(
        issuer.fetches(),
        4,
        "max-age=600: cached after one more fetch"
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let issuer = FakeIssuer::start().await;
    let token = issuer.sign(FakeAlg::Es256, &claims(&issuer.issuer()));
    let location = JwksLocation::Url(issuer.jwks_uri());
    for omit_content_length in [false, true] {
        issuer.set_omit_content_length(omit_content_length);
        let small = fetcher(FetcherConfig {
            max_body: 512,
            ..Default::default()
        });
        let err = small
            .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
            .await;
        assert_eq!(err.unwrap_err(), VerifyError::KeysUnavailable);
        assert_eq!(
            small.counts(),
            FetchCounts {
                fetched: 0,
                failed: 1
            }
        );

        let default = fetcher(FetcherConfig::default());
        default
            .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    let base = raw_server(|_| None).await;
    let fetcher = fetcher(FetcherConfig {
        timeout: ms(300),
        ..Default::default()
    });
    let issuer = FakeIssuer::start().await;
    let token = issuer.sign(FakeAlg::Es256, &claims(&issuer.issuer()));
    let location = JwksLocation::Url(format!("{base}/jwks"));
    let started = std::time::Instant::now();
    let err = fetcher
        .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert_eq!(err.unwrap_err(), VerifyError::KeysUnavailable);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        fetcher.counts(),
        FetchCounts {
            fetched: 0,
            failed: 1
        }
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let issuer = FakeIssuer::start().await;
    let redirect = http_response(
        "302 Found",
        &format!("Location: {}\r\n", issuer.jwks_uri()),
        "",
    );
    let base = raw_server(|_| Some(redirect)).await;
    let fetcher = fetcher(FetcherConfig::default());
    let token = issuer.sign(FakeAlg::Es256, &claims(&issuer.issuer()));
    let location = JwksLocation::Url(format!("{base}/jwks"));
    let err = fetcher
        .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert_eq!(err.unwrap_err(), VerifyError::KeysUnavailable);
    assert_eq!(issuer.fetches(), 0);
}

#[tokio::test]
async fn a_discovered_jwks_uri_must_pass_the_url_check() {
    let issuer = raw_server(|base| {
        let body = format!(r#"{{"issuer": "{base}", "jwks_uri": "http://example.com/jwks"}}"#);
        Some(http_response("200 OK", "", &body))
    })
    .await;
    let fetcher = fetcher(FetcherConfig::default());
    let signer = FakeIssuer::start().await;
    let token = signer.sign(FakeAlg::Es256, &claims(&issuer));
    let location = JwksLocation::Discovery {
        issuer: issuer.clone(),
    };
    let err = fetcher
        .verify(&token, &issuer, &location, NOW, LEEWAY)
        .await;
    assert_eq!(err.unwrap_err(), VerifyError::KeysUnavailable);
    assert_eq!(
        fetcher.counts(),
        FetchCounts {
            fetched: 1,
            failed: 1
        },
        "plain http refused"
    );
}
