//! Keyset (cursor) and offset pagination of lists ordered by `(createdAt, uid)`.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::validation::InvalidValue;

/// Items per page, 1–500 (default 50).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u16);

impl PageSize {
    /// Largest allowed page.
    pub const MAX: u16 = 500;
    /// The size when none is asked for.
    pub const DEFAULT: u16 = 50;

    /// Parses a page size.
    ///
    /// # Errors
    /// `OUT_OF_RANGE` outside 1–500.
    pub fn new(size: i64) -> Result<Self, InvalidValue> {
        match u16::try_from(size) {
            Ok(size) if (1..=Self::MAX).contains(&size) => Ok(Self(size)),
            _ => Err(InvalidValue::new(
                "OUT_OF_RANGE",
                format!("must be between 1 and {}", Self::MAX),
            )),
        }
    }

    /// The size as a number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self(Self::DEFAULT)
    }
}

/// The position of the last item of a page in the `(created_at, uid)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `createdAt` of the last item returned.
    pub created_at: OffsetDateTime,
    /// `uid` of the last item returned.
    pub uid: Uuid,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagePosition {
    /// Cursor mode: after the given item, or from the start.
    After(Option<Cursor>),
    /// Offset mode: skip this many items and report the total.
    Offset(u64),
}

/// A page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items at most.
    pub size: PageSize,
    /// Where to start.
    pub position: PagePosition,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in `(created_at, uid)` order.
    pub items: Vec<T>,
    /// Cursor mode: the position to continue from, present iff more items exist.
    pub next: Option<Cursor>,
    /// Offset mode: the number of all matching items.
    pub total: Option<u64>,
}
