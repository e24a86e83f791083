//! Verification rules, over real HTTP against the fake issuer.

mod common;

use common::{LEEWAY, NOW, claims, claims_with, fetcher, header_of, locations, with_header};
use iam_oidc::testing::{FakeAlg, FakeIssuer, WEAK_RSA_KID};
use iam_oidc::{FetchCounts, FetcherConfig, JwksLocation, VerifyError, audiences};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const ALGS: [FakeAlg; 3] = [FakeAlg::Rs256, FakeAlg::Es256, FakeAlg::EdDsa];

#[tokio::test]
async fn every_algorithm_verifies_through_both_locations() {
    let issuer = FakeIssuer::start().await;
    for location in locations(&issuer) {
        let fetcher = fetcher(FetcherConfig::default());
        for alg in ALGS {
            let token = issuer.sign(alg, &claims(&issuer.issuer()));
            let claims = fetcher
                .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
                .await
                .unwrap_or_else(|err| panic!("{alg:?} via {location:?}: {err}"));
            assert_eq!(claims["sub"], "workload-1");
            assert_eq!(audiences(&claims), vec!["iam".to_owned()]);
        }
    }
}

#[tokio::test]
async fn the_issuer_must_match_exactly() {
    let issuer = FakeIssuer::start().await;
    let fetcher = fetcher(FetcherConfig::default());
    let location = JwksLocation::Url(issuer.jwks_uri());
    let other = issuer.sign(FakeAlg::Es256, &claims("https://other.example"));
    let err = fetcher
        .verify(&other, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert_eq!(err.unwrap_err(), VerifyError::WrongIssuer);
    let slash = issuer.sign(FakeAlg::Es256, &claims(&format!("{}/", issuer.issuer())));
    let err = fetcher
        .verify(&slash, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert_eq!(err.unwrap_err(), VerifyError::WrongIssuer);
    let no_iss = issuer.sign(
        FakeAlg::Es256,
        &claims_with(&issuer.issuer(), &json!({"iss": null})),
    );
    let err = fetcher
        .verify(&no_iss, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert_eq!(err.unwrap_err(), VerifyError::WrongIssuer);
}

#[tokio::test]
async fn time_claims_are_checked_against_the_callers_clock() {
    let issuer = FakeIssuer::start().await;
    let fetcher = fetcher(FetcherConfig::default());
    let location = JwksLocation::Url(issuer.jwks_uri());
    let iss = issuer.issuer();
    let verify = |changes: serde_json::Value| {
        let token = issuer.sign(FakeAlg::EdDsa, &claims_with(&iss, &changes));
        let (fetcher, location, iss) = (&fetcher, &location, iss.clone());
        async move {
            fetcher
                .verify(&token, &iss, location, NOW, LEEWAY)
                .await
                .map(drop)
        }
    };
    assert_eq!(
        verify(json!({"exp": null})).await,
        Err(VerifyError::MissingExp)
    );
    assert_eq!(
        verify(json!({"exp": NOW - LEEWAY})).await,
        Err(VerifyError::Expired)
    );
    assert_eq!(
        verify(json!({"exp": NOW - LEEWAY + 1})).await,
        Ok(()),
        "within the leeway"
    );
    assert_eq!(
        verify(json!({"nbf": NOW + LEEWAY + 1})).await,
        Err(VerifyError::NotYetValid)
    );
    assert_eq!(verify(json!({"nbf": NOW + LEEWAY})).await, Ok(()));
    assert_eq!(
        verify(json!({"iat": NOW + LEEWAY + 1})).await,
        Err(VerifyError::IssuedInFuture)
    );
    assert_eq!(
        verify(json!({"iat": null, "nbf": null})).await,
        Ok(()),
        "both are optional"
    );
    assert_eq!(
        verify(json!({"aud": "someone-else"})).await,
        Ok(()),
        "aud is the caller's"
    );
}

#[tokio::test]
async fn forged_and_tampered_tokens_are_refused() {
    let issuer = FakeIssuer::start().await;
    let fetcher = fetcher(FetcherConfig::default());
    let location = JwksLocation::Url(issuer.jwks_uri());
    for alg in ALGS {
        let forged = issuer.forge(alg, &claims(&issuer.issuer()));
        assert_eq!(
            header_of(&forged)["kid"],
            header_of(&issuer.sign(alg, &json!({})))["kid"]
        );
        let err = fetcher
            .verify(&forged, &issuer.issuer(), &location, NOW, LEEWAY)
            .await;
        assert_eq!(err.unwrap_err(), VerifyError::BadSignature, "{alg:?}");

        // A genuine signature over other claims.
        let genuine = issuer.sign(alg, &claims(&issuer.issuer()));
        let admin = issuer.sign(
            alg,
            &claims_with(&issuer.issuer(), &json!({"sub": "admin"})),
        );
        let genuine: Vec<&str> = genuine.split('.').collect();
        let admin_payload = admin.split('.').nth(1).unwrap();
        let spliced = format!("{}.{admin_payload}.{}", genuine[0], genuine[2]);
        let err = fetcher
            .verify(&spliced, &issuer.issuer(), &location, NOW, LEEWAY)
            .await;
        assert_eq!(err.unwrap_err(), VerifyError::BadSignature, "{alg:?}");
    }
}

#[tokio::test]
async fn none_and_hmac_are_refused_before_any_key_lookup() {
    let issuer = FakeIssuer::start().await;
    let fetcher = fetcher(FetcherConfig::default());
    let location = JwksLocation::Url(issuer.jwks_uri());
    let genuine = issuer.sign(FakeAlg::Rs256, &claims(&issuer.issuer()));
    let kid = header_of(&genuine)["kid"].as_str().unwrap().to_owned();

    let none = with_header(&genuine, &json!({"alg": "none", "kid": kid}));
    let err = fetcher
        .verify(&none, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert_eq!(
        err.unwrap_err(),
        VerifyError::UnsupportedAlgorithm("none".into())
    );

    let unsigned = format!("{}.", none.rsplit_once('.').unwrap().0);
    let err = fetcher
        .verify(&unsigned, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert!(matches!(err.unwrap_err(), VerifyError::Malformed(_)));

    let header = Header {
        kid: Some(kid.clone()),
        ..Header::new(Algorithm::HS256)
    };
    // The classic confusion attack: the "secret" is public material of the issuer.
    let hmac = jsonwebtoken::encode(
        &header,
        &claims(&issuer.issuer()),
        &EncodingKey::from_secret(issuer.jwks_uri().as_bytes()),
    )
    .unwrap();
    let err = fetcher
        .verify(&hmac, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert_eq!(
        err.unwrap_err(),
        VerifyError::UnsupportedAlgorithm("HS256".into())
    );

    for alg in ["RS384", "PS256", "ES384"] {
        let other = with_header(&genuine, &json!({"alg": alg, "kid": kid}));
        let err = fetcher
            .verify(&other, &issuer.issuer(), &location, NOW, LEEWAY)
            .await;
        assert_eq!(
            err.unwrap_err(),
            VerifyError::UnsupportedAlgorithm(alg.into())
        );
    }
    assert_eq!(
        fetcher.counts(),
        FetchCounts::default(),
        "no key was ever fetched"
    );
    assert_eq!(issuer.fetches(), 0);
}

#[tokio::test]
async fn the_key_type_must_fit_the_algorithm() {
    let issuer = FakeIssuer::start().await;
    let fetcher = fetcher(FetcherConfig::default());
    let location = JwksLocation::Url(issuer.jwks_uri());
    let es = issuer.sign(FakeAlg::Es256, &claims(&issuer.issuer()));
    let es_kid = header_of(&es)["kid"].clone();
    let confused = with_header(&es, &json!({"alg": "RS256", "kid": es_kid}));
    let err = fetcher
        .verify(&confused, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert!(matches!(err.unwrap_err(), VerifyError::UnusableKey { .. }));

    let no_kid = with_header(&es, &json!({"alg": "ES256"}));
    let err = fetcher
        .verify(&no_kid, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert_eq!(err.unwrap_err(), VerifyError::MissingKeyId);
}

#[tokio::test]
async fn rsa_keys_under_2048_bits_are_refused() {
    let issuer = FakeIssuer::start().await;
    let fetcher = fetcher(FetcherConfig::default());
    let location = JwksLocation::Url(issuer.jwks_uri());
    let weak = issuer.sign_weak_rsa(&claims(&issuer.issuer()));
    assert_eq!(header_of(&weak)["kid"], WEAK_RSA_KID);
    let err = fetcher
        .verify(&weak, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert_eq!(
        err.unwrap_err(),
        VerifyError::UnusableKey {
            kid: WEAK_RSA_KID.into(),
            reason: "RSA modulus under 2048 bits"
        }
    );
    assert_eq!(
        issuer.fetches(),
        1,
        "a published but unusable kid does not trigger a refetch"
    );
}

#[tokio::test]
async fn discovery_must_name_the_same_issuer() {
    let issuer = FakeIssuer::start().await;
    issuer.set_discovery_issuer(Some("https://impostor.example"));
    let fetcher = fetcher(FetcherConfig::default());
    let location = JwksLocation::Discovery {
        issuer: issuer.issuer(),
    };
    let token = issuer.sign(FakeAlg::Es256, &claims(&issuer.issuer()));
    let err = fetcher
        .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
        .await;
    assert_eq!(err.unwrap_err(), VerifyError::KeysUnavailable);
    assert_eq!(
        fetcher.counts(),
        FetchCounts {
            fetched: 0,
            failed: 1
        }
    );
    assert_eq!(
        issuer.fetches(),
        0,
        "the JWKS of a wrong discovery document is not fetched"
    );
}

#[tokio::test]
async fn errors_never_contain_the_token() {
    let issuer = FakeIssuer::start().await;
    let fetcher = fetcher(FetcherConfig::default());
    let location = JwksLocation::Url(issuer.jwks_uri());
    let forged = issuer.forge(FakeAlg::Rs256, &claims(&issuer.issuer()));
    let unknown = issuer.sign_unknown_kid(FakeAlg::EdDsa, &claims(&issuer.issuer()));
    let expired = issuer.sign(
        FakeAlg::Es256,
        &claims_with(&issuer.issuer(), &json!({"exp": NOW - 3600})),
    );
    for token in [forged, unknown, expired, "x".repeat(20_000)] {
        let err = fetcher
            .verify(&token, &issuer.issuer(), &location, NOW, LEEWAY)
            .await;
        let err = err.unwrap_err();
        let text = format!("{err} {err:?}");
        for part in token.split('.') {
            assert!(!text.contains(part), "{text}");
        }
    }
}
