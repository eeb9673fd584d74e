//! The redis connector (being written: refuses to connect until it lands).

use crate::error::{Result, SourceError};
use crate::source::{Context, Record, Source};
use async_trait::async_trait;
use std::time::Duration;

pub struct RedisSource {
    _ctx: Context,
}

impl RedisSource {
    pub fn new(ctx: Context) -> Result<Self> {
        Ok(Self { _ctx: ctx })
    }
}

#[async_trait]
impl Source for RedisSource {
    async fn connect(&self) -> Result<()> {
        Err(SourceError::Config(
            "the redis connector is not built yet".into(),
        ))
    }
    async fn poll(&self, _max: usize, _wait: Duration) -> Result<Vec<Record>> {
        Ok(Vec::new())
    }
    async fn ack(&self, _records: &[Record]) -> Result<()> {
        Ok(())
    }
}
