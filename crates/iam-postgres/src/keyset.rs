//! The row-value comparison `(a, b) > (c, d)` that keyset pagination needs.
//!
//! diesel has no tuple comparison. Written as a row comparison, Postgres uses it as an index
//! condition on `(org_id, created_at, uid)`, so a page deep in the list starts with an index
//! seek instead of scanning what precedes it. (`a > c OR (a = c AND b > d)` is equivalent but
//! is not used as an index bound.)
//!
//! Unlike `diesel::dsl::sql`, this expression keeps the query cacheable as a prepared
//! statement, so a list page is one round trip instead of prepare + execute.
//!
//! Also here: building a page from its rows ([`cursor_page_of`]) and, for what belongs to an
//! account, from the statements sent together with the account's existence check
//! ([`cursor_page_if`], [`offset_page_if`]).

use std::future::Future;

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::Bool;
use iam_domain::pagination::{Cursor, Page};
use iam_domain::ports::StoreError;

use crate::error::{DbError, corrupt};

/// `(first, second) > (after_first, after_second)`.
#[derive(Debug, Clone, Copy, QueryId)]
pub(crate) struct RowGreaterThan<A, B, C, D> {
    first: A,
    second: B,
    after_first: C,
    after_second: D,
}

/// `(first, second) > (after_first, after_second)` in SQL's row-comparison semantics.
pub(crate) fn row_greater_than<A, B, C, D>(
    (first, second): (A, B),
    (after_first, after_second): (C, D),
) -> RowGreaterThan<A, B, C, D>
where
    A: Expression,
    B: Expression,
    C: Expression<SqlType = A::SqlType>,
    D: Expression<SqlType = B::SqlType>,
{
    RowGreaterThan {
        first,
        second,
        after_first,
        after_second,
    }
}

impl<A, B, C, D> Expression for RowGreaterThan<A, B, C, D> {
    type SqlType = Bool;
}

impl<A, B, C, D, DB> QueryFragment<DB> for RowGreaterThan<A, B, C, D>
where
    DB: Backend,
    A: QueryFragment<DB>,
    B: QueryFragment<DB>,
    C: QueryFragment<DB>,
    D: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("(");
        self.first.walk_ast(out.reborrow())?;
        out.push_sql(", ");
        self.second.walk_ast(out.reborrow())?;
        out.push_sql(") > (");
        self.after_first.walk_ast(out.reborrow())?;
        out.push_sql(", ");
        self.after_second.walk_ast(out.reborrow())?;
        out.push_sql(")");
        Ok(())
    }
}

impl<A, B, C, D, QS> AppearsOnTable<QS> for RowGreaterThan<A, B, C, D>
where
    A: AppearsOnTable<QS>,
    B: AppearsOnTable<QS>,
    C: AppearsOnTable<QS>,
    D: AppearsOnTable<QS>,
{
}

impl<A, B, C, D, QS> SelectableExpression<QS> for RowGreaterThan<A, B, C, D>
where
    A: SelectableExpression<QS>,
    B: SelectableExpression<QS>,
    C: SelectableExpression<QS>,
    D: SelectableExpression<QS>,
{
}

impl<A, B, C, D, GB> ValidGrouping<GB> for RowGreaterThan<A, B, C, D>
where
    (A, B, C, D): ValidGrouping<GB>,
{
    type IsAggregate = <(A, B, C, D) as ValidGrouping<GB>>::IsAggregate;
}

/// A cursor-mode page from `rows`, read in `(created_at, uid)` order with one more than
/// `size` asked for: the first `size`, converted with `convert`, and `next` (the last item's
/// position) iff that one more exists.
///
/// # Errors
/// The first error of `convert`.
pub(crate) fn cursor_page_of<R, T>(
    mut rows: Vec<R>,
    size: u16,
    convert: impl FnMut(R) -> Result<T, StoreError>,
    position: impl Fn(&T) -> Cursor,
) -> Result<Page<T>, StoreError> {
    let more = rows.len() > usize::from(size);
    rows.truncate(usize::from(size));
    let items = rows
        .into_iter()
        .map(convert)
        .collect::<Result<Vec<_>, _>>()?;
    let next = if more {
        items.last().map(position)
    } else {
        None
    };
    Ok(Page {
        items,
        next,
        total: None,
    })
}

/// A cursor-mode page of what belongs to an account (its credentials, its federated
/// credentials), from two statements sent together on one connection: `exists` (the account
/// exists and the caller may read it) and `rows` (one more than `size`, as for
/// [`cursor_page_of`]). `None` when `exists` is false, whatever `rows` holds.
///
/// # Errors
/// The first failed statement, or the first error of `convert`.
pub(crate) async fn cursor_page_if<R, T>(
    exists: impl Future<Output = QueryResult<bool>>,
    rows: impl Future<Output = QueryResult<Vec<R>>>,
    size: u16,
    convert: impl FnMut(R) -> Result<T, StoreError>,
    position: impl Fn(&T) -> Cursor,
) -> Result<Option<Page<T>>, StoreError> {
    let (exists, rows) = tokio::try_join!(exists, rows).map_err(DbError::from)?;
    if !exists {
        return Ok(None);
    }
    cursor_page_of(rows, size, convert, position).map(Some)
}

/// As [`cursor_page_if`], in offset mode: `rows` is the page itself and `total` counts every
/// item, all three statements sent together.
///
/// # Errors
/// The first failed statement, a negative count, or the first error of `convert`.
pub(crate) async fn offset_page_if<R, T>(
    exists: impl Future<Output = QueryResult<bool>>,
    rows: impl Future<Output = QueryResult<Vec<R>>>,
    total: impl Future<Output = QueryResult<i64>>,
    convert: impl FnMut(R) -> Result<T, StoreError>,
) -> Result<Option<Page<T>>, StoreError> {
    let (exists, rows, total) = tokio::try_join!(exists, rows, total).map_err(DbError::from)?;
    if !exists {
        return Ok(None);
    }
    Ok(Some(Page {
        items: rows.into_iter().map(convert).collect::<Result<_, _>>()?,
        next: None,
        total: Some(u64::try_from(total).map_err(|e| corrupt(format_args!("count: {e}")))?),
    }))
}
