//! A `wasi-http` function: a component of the standard `wasi:http/proxy` world, built with
//! the `wasi` crate's bindings. Nimbus hands it each HTTP request as it is (function URL
//! and routes); the same component runs on any wasi:http host (`wasmtime serve`, Spin, …).
//!
//! `GET /?name=you` (or `/wasm/hello/you`) answers `Hello, you!`; `POST` echoes the body back.

use std::io::{Read as _, Write as _};
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasi::http::proxy::export!(Hello);

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        let (status, body) = match request.method() {
            Method::Post | Method::Put => match read_body(&request) {
                Ok(body) => (200, body),
                Err(e) => (400, format!("cannot read the body: {e}\n").into_bytes()),
            },
            _ => {
                let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".into());
                let name = name_in(&path).unwrap_or("world");
                (200, format!("{greeting}, {name}!\n").into_bytes())
            }
        };
        // stderr (and stdout) lines go to the function's log
        eprintln!(
            "hello-wasm: {} {path} -> {status}",
            method_name(&request.method())
        );

        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("valid header");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(status).expect("valid status");
        let out = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let mut stream = out.write().expect("the stream is taken once");
        stream.write_all(&body).expect("write the body");
        stream.flush().expect("flush the body");
        drop(stream);
        OutgoingBody::finish(out, None).expect("finish the body");
    }
}

/// `name` from `?name=…`, or what follows `/hello/` in the path (`/wasm/hello/you`: a route
/// hands the component the whole path).
fn name_in(path: &str) -> Option<&str> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("name="))
        .or_else(|| path.rsplit_once("/hello/").map(|(_, name)| name))
        .filter(|n| !n.is_empty())
}

fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body: IncomingBody = request.consume().map_err(|()| "consumed".to_string())?;
    let mut stream = body.stream().map_err(|()| "no stream".to_string())?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    drop(stream);
    let _trailers = IncomingBody::finish(body);
    Ok(bytes)
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(s) => s.clone(),
    }
}
