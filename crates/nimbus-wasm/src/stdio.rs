//! A component's stdout and stderr: each line goes to the function's log with the
//! request id, within the invocation's output budget (as a process function's output).

use bytes::Bytes;
use nimbus_runtime::{LogCtx, LogStreamKind};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamResult};

/// The longest line kept whole; a longer one is split (as for process functions).
const MAX_LINE: usize = 256 * 1024;

#[derive(Clone)]
pub(crate) struct LogWriter {
    log: Arc<LogCtx>,
    stream: LogStreamKind,
    /// A line not yet ended, shared by the streams the component opens.
    partial: Arc<Mutex<Vec<u8>>>,
}

impl LogWriter {
    pub(crate) fn new(log: Arc<LogCtx>, stream: LogStreamKind) -> Self {
        LogWriter {
            log,
            stream,
            partial: Arc::default(),
        }
    }

    fn write(&self, mut buf: &[u8]) {
        let mut partial = self.partial.lock().unwrap();
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let (line, rest) = buf.split_at(i);
            if partial.is_empty() {
                self.log.output(self.stream, trim_cr(line));
            } else {
                partial.extend_from_slice(line);
                self.log.output(self.stream, trim_cr(&partial));
                partial.clear();
            }
            buf = &rest[1..];
        }
        partial.extend_from_slice(buf);
        while partial.len() >= MAX_LINE {
            let rest = partial.split_off(MAX_LINE);
            self.log.output(self.stream, &partial);
            *partial = rest;
        }
    }

    /// Writes what is left of an unfinished last line.
    pub(crate) fn flush_partial(&self) {
        let mut partial = self.partial.lock().unwrap();
        if !partial.is_empty() {
            self.log.output(self.stream, trim_cr(&partial));
            partial.clear();
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl IsTerminal for LogWriter {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogWriter {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    /// Written at once, on the guest's call (not by a background task), so every line is
    /// in the log, with its request id, when the invocation ends.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for LogWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        LogWriter::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogWriter {
    async fn ready(&mut self) {}
}

impl AsyncWrite for LogWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
