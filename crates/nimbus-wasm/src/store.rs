//! What one request's store holds: its WASI context (environment, the package read-only
//! at `/var/task`, output into the function's log), its wasi:http context with the
//! function's network policy, and its memory limiter.

use crate::net::Egress;
use crate::stdio::LogWriter;
use nimbus_runtime::{LogCtx, LogStreamKind};
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub(crate) struct Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    egress: Egress,
    pub(crate) limits: Limits,
    output: [LogWriter; 2],
}

impl Host {
    pub(crate) fn new(
        env: &[(String, String)],
        code_dir: &Path,
        log: &Arc<LogCtx>,
        egress: Egress,
        memory_bytes: usize,
    ) -> Self {
        let output = [
            LogWriter::new(log.clone(), LogStreamKind::Stdout),
            LogWriter::new(log.clone(), LogStreamKind::Stderr),
        ];
        let mut b = WasiCtxBuilder::new();
        b.envs(env)
            .stdout(output[0].clone())
            .stderr(output[1].clone());
        // The package, read-only, where a Lambda function finds it. A missing directory
        // (the package was removed) leaves the component without it rather than failing.
        let _ = b.preopened_dir(code_dir, "/var/task", FsPerms::ReadOnly);
        Host {
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            egress,
            limits: Limits::new(memory_bytes),
            output,
        }
    }

    /// Writes the component's unfinished last lines, once its request is over.
    pub(crate) fn flush_output(&self) {
        for w in &self.output {
            w.flush_partial();
        }
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

/// The function's memory size over all the instance's linear memories, and the most
/// it used.
pub(crate) struct Limits {
    max: usize,
    used: usize,
    pub(crate) peak: usize,
    /// A growth past the limit was refused during this request.
    pub(crate) refused: bool,
}

impl Limits {
    fn new(max: usize) -> Self {
        Limits {
            max,
            used: 0,
            peak: 0,
            refused: false,
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used - current.min(self.used) + desired;
        if total > self.max {
            self.refused = true;
            return Ok(false);
        }
        self.used = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
