//! Transactions run again when PostgreSQL aborts them as a deadlock or a serialisation
//! failure (`40P01`, `40001`): [`Pg::retrying`] and the statements of its [`Tx`], whose
//! errors are the store's own type `E` and mark the attempt as worth repeating.

use crate::{Pg, PgError, Row, Transaction};
use std::cell::Cell;
use std::marker::PhantomData;
use tokio_postgres::types::ToSql;

/// Attempts of a transaction PostgreSQL aborted as a deadlock or serialisation failure.
pub const ATTEMPTS: u32 = 5;

/// Parameters of a statement.
pub type Params<'a> = [&'a (dyn ToSql + Sync)];

/// A transaction whose statements fail with `E` (prepared once per connection); remembers
/// whether PostgreSQL asked for a retry.
pub struct Tx<'a, E> {
    tx: &'a Transaction<'a>,
    retry: &'a Cell<bool>,
    error: PhantomData<fn() -> E>,
}

/// `e` as the store's error, noting in `retry` whether PostgreSQL aborted the transaction
/// as a deadlock or a serialisation failure.
fn fail<E: From<PgError>>(retry: &Cell<bool>, e: impl Into<PgError>) -> E {
    let e = e.into();
    if matches!(e.code(), Some("40001" | "40P01")) {
        retry.set(true);
    }
    e.into()
}

impl<E: From<PgError>> Tx<'_, E> {
    fn fail(&self, e: impl Into<PgError>) -> E {
        fail(self.retry, e)
    }

    pub async fn batch(&self, sql: &str) -> Result<(), E> {
        self.tx.batch_execute(sql).await.map_err(|e| self.fail(e))
    }

    /// `sql` prepared once per connection (cached).
    async fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement, E> {
        self.tx.prepare_cached(sql).await.map_err(|e| self.fail(e))
    }

    pub async fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, E> {
        let st = self.prepare(sql).await?;
        self.tx.query(&st, params).await.map_err(|e| self.fail(e))
    }

    pub async fn query_opt(&self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, E> {
        let st = self.prepare(sql).await?;
        self.tx
            .query_opt(&st, params)
            .await
            .map_err(|e| self.fail(e))
    }

    pub async fn query_one(&self, sql: &str, params: &Params<'_>) -> Result<Row, E> {
        let st = self.prepare(sql).await?;
        self.tx
            .query_one(&st, params)
            .await
            .map_err(|e| self.fail(e))
    }

    pub async fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64, E> {
        let st = self.prepare(sql).await?;
        self.tx.execute(&st, params).await.map_err(|e| self.fail(e))
    }
}

impl Pg {
    /// `f` in one transaction, begun with `setup` (e.g. `SET TRANSACTION ISOLATION LEVEL
    /// …`), committed when it returns `Ok` and rolled back otherwise; run again, up to
    /// [`ATTEMPTS`] times in all, when PostgreSQL aborted it as a deadlock or a
    /// serialisation failure.
    pub fn retrying<T, E: From<PgError>>(
        &self,
        setup: Option<&str>,
        f: impl AsyncFn(&Tx<'_, E>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut attempt = 1;
        loop {
            let retry = Cell::new(false);
            let out = self.block_on(async {
                let mut c = self.client().await?;
                let tx = c.transaction().await.map_err(PgError::from)?;
                let t = Tx {
                    tx: &tx,
                    retry: &retry,
                    error: PhantomData,
                };
                if let Some(sql) = setup {
                    t.batch(sql).await?;
                }
                let out = f(&t).await?;
                tx.commit().await.map_err(|e| fail::<E>(&retry, e))?;
                Ok(out)
            });
            match out {
                Err(_) if retry.get() && attempt < ATTEMPTS => attempt += 1,
                out => return out,
            }
        }
    }
}
