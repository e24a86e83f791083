//! Which URLs the service may fetch.

use std::net::IpAddr;

use reqwest::Url;

use crate::error::UrlError;

/// Checks a URL the service may fetch: `https://`, or `http://` only for loopback hosts
/// (`localhost`, 127.0.0.0/8, `[::1]`); no userinfo, no fragment; must parse as an absolute
/// URL with a host.
///
/// # Errors
/// The [`UrlError`] saying which rule the URL breaks.
pub fn check_fetch_url(url: &str) -> Result<(), UrlError> {
    parse_fetch_url(url).map(drop)
}

/// [`check_fetch_url`], handing back the parsed URL.
pub(crate) fn parse_fetch_url(url: &str) -> Result<Url, UrlError> {
    let parsed = Url::parse(url).map_err(|err| UrlError::Invalid(err.to_string()))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Userinfo);
    }
    if parsed.fragment().is_some() {
        return Err(UrlError::Fragment);
    }
    let host = parsed
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or(UrlError::NoHost)?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback(host) => Ok(parsed),
        "http" => Err(UrlError::PlainHttp),
        other => Err(UrlError::Scheme(crate::error::echo(other))),
    }
}

/// Whether `host` (as a parsed URL serializes it: IPv4 normalized, IPv6 in brackets) is
/// `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_allowed_anywhere() {
        assert_eq!(check_fetch_url("https://issuer.example.com/jwks"), Ok(()));
        assert_eq!(check_fetch_url("https://10.0.0.1:8443/keys?x=1"), Ok(()));
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert_eq!(check_fetch_url("http://localhost/jwks"), Ok(()));
        assert_eq!(check_fetch_url("http://LOCALHOST:9000/jwks"), Ok(()));
        assert_eq!(check_fetch_url("http://127.0.0.1:8080/jwks"), Ok(()));
        assert_eq!(check_fetch_url("http://127.0.0.5/jwks"), Ok(()));
        assert_eq!(check_fetch_url("http://[::1]:8080/jwks"), Ok(()));
        assert_eq!(
            check_fetch_url("http://example.com/jwks"),
            Err(UrlError::PlainHttp)
        );
        assert_eq!(
            check_fetch_url("http://128.0.0.1/jwks"),
            Err(UrlError::PlainHttp)
        );
        assert_eq!(
            check_fetch_url("http://[::2]/jwks"),
            Err(UrlError::PlainHttp)
        );
        assert_eq!(
            check_fetch_url("http://localhost.example.com/"),
            Err(UrlError::PlainHttp)
        );
    }

    #[test]
    fn other_schemes_are_refused() {
        assert_eq!(
            check_fetch_url("ftp://example.com/jwks"),
            Err(UrlError::Scheme("ftp".into()))
        );
        assert!(matches!(
            check_fetch_url("file:///etc/passwd"),
            Err(UrlError::NoHost)
        ));
        assert!(matches!(
            check_fetch_url("data:text/plain,x"),
            Err(UrlError::NoHost | UrlError::Scheme(_))
        ));
    }

    #[test]
    fn userinfo_and_fragments_are_refused() {
        assert_eq!(
            check_fetch_url("https://user@example.com/"),
            Err(UrlError::Userinfo)
        );
        assert_eq!(
            check_fetch_url("https://u:p@example.com/"),
            Err(UrlError::Userinfo)
        );
        assert_eq!(
            check_fetch_url("http://u:p@localhost/"),
            Err(UrlError::Userinfo)
        );
        assert_eq!(
            check_fetch_url("https://example.com/jwks#x"),
            Err(UrlError::Fragment)
        );
    }

    #[test]
    fn relative_or_garbage_is_refused() {
        assert!(matches!(
            check_fetch_url("/jwks"),
            Err(UrlError::Invalid(_))
        ));
        assert!(matches!(check_fetch_url(""), Err(UrlError::Invalid(_))));
        assert!(matches!(
            check_fetch_url("https://"),
            Err(UrlError::Invalid(_))
        ));
    }
}
