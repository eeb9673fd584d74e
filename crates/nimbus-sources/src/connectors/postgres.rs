//! The postgres connector (being written: refuses to connect until it lands).

use crate::error::{Result, SourceError};
use crate::source::{Context, Record, Source};
use async_trait::async_trait;
use std::time::Duration;

pub struct PostgresSource {
    _ctx: Context,
}

impl PostgresSource {
    pub fn new(ctx: Context) -> Result<Self> {
        Ok(Self { _ctx: ctx })
    }
}

#[async_trait]
impl Source for PostgresSource {
    async fn connect(&self) -> Result<()> {
        Err(SourceError::Config(
            "the postgres connector is not built yet".into(),
        ))
    }
    async fn poll(&self, _max: usize, _wait: Duration) -> Result<Vec<Record>> {
        Ok(Vec::new())
    }
    async fn ack(&self, _records: &[Record]) -> Result<()> {
        Ok(())
    }
}
