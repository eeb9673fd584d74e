//! The benchmark's wasm floor (`nimbus-bench --speed`): what `wasmtime serve` does, on
//! the engine settings of Nimbus's executor (`nimbus_wasm::engine_config`: pooling
//! allocator, copy-on-write images, epoch interruption) and with its imports
//! (`nimbus_wasm::linker`), and nothing else. A bare hyper HTTP/1.1 server (a tokio worker
//! per core) that instantiates a `wasi:http/proxy` component afresh for each request, in a
//! store of its own with a WASI context holding only the given environment, and answers
//! its response, read whole as Nimbus reads a buffered answer: no routing, logs, metrics,
//! limits or invocation records. The least a fresh instance per request costs on the
//! machine.
//!
//! ```text
//! cargo build --release -p nimbus-wasm --example wasm_floor
//! target/release/examples/wasm_floor 127.0.0.1:9000 app.wasm [KEY=VALUE…]
//! ```
//!
//! `KEY=VALUE` arguments are the component's environment.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{bail, Engine, Result, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

struct Ctx {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, path, env @ ..] = args.as_slice() else {
        bail!("usage: wasm_floor ADDR COMPONENT.wasm [KEY=VALUE...]");
    };
    let env: Arc<Vec<(String, String)>> = Arc::new(
        env.iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let addr = addr
        .parse::<SocketAddr>()
        .context("ADDR must be host:port")?;
    let engine = Engine::new(&nimbus_wasm::engine_config(1000))?;
    let linker = nimbus_wasm::linker::<Ctx>(&engine)?;
    let component =
        Component::from_file(&engine, path).with_context(|| format!("cannot compile {path}"))?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let (pre, env) = (pre.clone(), env.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(pre.clone(), env.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
}

/// One request: a fresh store and instance, the handler on a task of its own (it may run
/// past its response), the response read whole.
async fn handle(
    pre: ProxyPre<Ctx>,
    env: Arc<Vec<(String, String)>>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>> {
    let mut store = Store::new(
        pre.engine(),
        Ctx {
            wasi: WasiCtx::builder().envs(&env).build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        },
    );
    // No ticker advances the epoch: the deadline is never reached.
    store.set_epoch_deadline(u64::MAX);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)?;
    let out = store.data_mut().http().new_response_outparam(tx)?;
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
    });
    match rx.await {
        Ok(Ok(resp)) => {
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(hyper::Response::from_parts(parts, Full::new(body)))
        }
        Ok(Err(code)) => bail!("the component answered with the error {code:?}"),
        Err(_) => match task.await? {
            Ok(()) => bail!("the component never set a response"),
            Err(e) => Err(e),
        },
    }
}
