//! The paging query parameters every list shares: `pageSize`, `pageToken`, `offset`.

use iam_domain::{PagePosition, PageRequest, PageSize};

use crate::error::ErrorDetail;
use crate::page_token::PageTokenCodec;

/// Paging parameters as given.
#[derive(Debug, Default)]
pub struct PageQuery {
    size: PageSize,
    token: Option<String>,
    offset: Option<u64>,
}

impl PageQuery {
    /// Takes `name=value` if `name` is a paging parameter (reporting a bad value in
    /// `errors`); returns `false` for any other parameter.
    pub fn take(&mut self, name: &str, value: &str, errors: &mut Vec<ErrorDetail>) -> bool {
        match name {
            "pageSize" => match value
                .parse::<i64>()
                .ok()
                .and_then(|n| PageSize::new(n).ok())
            {
                Some(size) => self.size = size,
                None => errors.push(ErrorDetail::field(
                    name,
                    "OUT_OF_RANGE",
                    "must be an integer between 1 and 500",
                )),
            },
            "offset" => match value.parse::<u64>() {
                Ok(n) if i64::try_from(n).is_ok() => self.offset = Some(n),
                _ => errors.push(ErrorDetail::field(
                    name,
                    "OUT_OF_RANGE",
                    "must be a non-negative integer",
                )),
            },
            "pageToken" => self.token = Some(value.to_owned()),
            _ => return false,
        }
        true
    }

    /// The page request. A token is checked against `binding` (the collection, tenant and
    /// filters it must have been issued for); problems are reported in `errors`.
    pub fn request(
        self,
        codec: &PageTokenCodec,
        binding: &[&str],
        errors: &mut Vec<ErrorDetail>,
    ) -> PageRequest {
        let position = match (self.offset, self.token) {
            (Some(_), Some(_)) => {
                errors.push(ErrorDetail::field(
                    "pageToken",
                    "MUTUALLY_EXCLUSIVE",
                    "pageToken and offset cannot be combined",
                ));
                PagePosition::After(None)
            }
            (Some(offset), None) => PagePosition::Offset(offset),
            (None, Some(token)) => {
                if let Ok(cursor) = codec.decode(&token, binding) {
                    PagePosition::After(Some(cursor))
                } else {
                    errors.push(ErrorDetail::field(
                        "pageToken",
                        "INVALID_PAGE_TOKEN",
                        "the page token is malformed, altered, or was issued for other filters",
                    ));
                    PagePosition::After(None)
                }
            }
            (None, None) => PagePosition::After(None),
        };
        PageRequest {
            size: self.size,
            position,
        }
    }
}
