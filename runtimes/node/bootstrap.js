'use strict';
// Nimbus Node.js bootstrap: speaks the Lambda Runtime API (2018-06-01) to the
// server at $AWS_LAMBDA_RUNTIME_API and runs the handler named by $_HANDLER
// from $LAMBDA_TASK_ROOT. CommonJS, Node 18+, no dependencies.
//
// Started as: cwd = code dir, `node /abs/runtimes/node/bootstrap.js`; or, as a
// stem cell, with only _NIMBUS_STEM=1 and the Runtime API address: it then waits
// (specialize) for the function's environment before loading the handler.
// Exit codes: 129 after an init error or an uncaught exception (reported
// first), 128 after an unhandled promise rejection (reported first), 1 when
// the Runtime API is unusable (bad env, connection failure, non-200 from next).
//
// Behaviour follows aws-lambda-nodejs-runtime-interface-client: handler
// resolution (.js/.mjs/.cjs, package.json "type":"module"), the context object,
// callback / context.done semantics (including callbackWaitsForEmptyEventLoop
// via 'beforeExit'), error bodies {errorType,errorMessage,trace} and the
// console format `ISO-TIME\tREQUEST-ID\tLEVEL\tmessage` (newlines -> \r).

const http = require('http');
const path = require('path');
const fs = require('fs');
const { format } = require('util');

const API_PREFIX = '/2018-06-01/runtime';
const env = process.env;

// ---------------------------------------------------------------- logging --

let currentRequestId; // printed as "undefined" before the first invoke, like Lambda
// With AWS_LAMBDA_MAX_CONCURRENCY > 1 (the function's instance_concurrency) several
// invocations run at once: each one's request id and trace variables follow its async
// context ({ id, vars }).
let invocations = null; // an AsyncLocalStorage then
const requestId = () => {
  const inv = invocations && invocations.getStore();
  return inv ? inv.id : currentRequestId;
};

// ----------------------------------------------------- invocation variables --

// The trace headers of the invocation, as Lambda's runtimes give them to the function:
// process.env._X_AMZN_TRACE_ID (Lambda-Runtime-Trace-Id), TRACEPARENT and TRACESTATE.
// They live in JavaScript, not in the C environment: `process.env.X = v` is setenv(3), and
// glibc keeps every value ever set (an instance grew ~260 bytes per invocation until its
// memory limit killed it). process.env becomes a proxy of the real environment that
// answers these names from the invocation in progress (its async context when several run
// at once, else the latest) and everything else from the environment as before; child
// processes get them (child_process enumerates process.env), native code's getenv does not.
const INVOCATION_VARS = ['_X_AMZN_TRACE_ID', 'TRACEPARENT', 'TRACESTATE'];
let latestVars = Object.create(null);

function invocationVars() {
  const inv = invocations && invocations.getStore();
  return inv ? inv.vars : latestVars;
}

function varsOf(headers) {
  const vars = Object.create(null);
  const set = (name, v) => {
    if (v) vars[name] = v;
  };
  set('_X_AMZN_TRACE_ID', headers['lambda-runtime-trace-id']);
  set('TRACEPARENT', headers['nimbus-runtime-traceparent']);
  set('TRACESTATE', headers['nimbus-runtime-tracestate']);
  return vars;
}

function installInvocationEnv() {
  const real = process.env;
  const own = (k) => typeof k === 'string' && INVOCATION_VARS.includes(k);
  for (const k of INVOCATION_VARS) {
    if (real[k] !== undefined) latestVars[k] = real[k];
    delete real[k];
  }
  const descriptor = (v) => ({ value: v, writable: true, enumerable: true, configurable: true });
  process.env = new Proxy(real, {
    get: (t, k) => (own(k) ? invocationVars()[k] : t[k]),
    set(t, k, v) {
      if (own(k)) invocationVars()[k] = String(v);
      else t[k] = v;
      return true;
    },
    has: (t, k) => (own(k) ? invocationVars()[k] !== undefined : k in t),
    deleteProperty(t, k) {
      if (own(k)) delete invocationVars()[k];
      else delete t[k];
      return true;
    },
    ownKeys(t) {
      // Without the names (native code may have set them): a key twice would throw.
      const keys = Reflect.ownKeys(t).filter((k) => !own(k));
      const vars = invocationVars();
      for (const k of INVOCATION_VARS) if (vars[k] !== undefined) keys.push(k);
      return keys;
    },
    getOwnPropertyDescriptor(t, k) {
      if (!own(k)) return Reflect.getOwnPropertyDescriptor(t, k);
      const v = invocationVars()[k];
      return v === undefined ? undefined : descriptor(v);
    },
    defineProperty(t, k, d) {
      if (!own(k)) return Reflect.defineProperty(t, k, d);
      if ('value' in d) invocationVars()[k] = String(d.value);
      return true;
    },
  });
}

// AWS_LAMBDA_LOG_FORMAT=JSON (LoggingConfig.LogFormat): each line is one JSON object
// {timestamp, level, requestId, message} as Lambda's runtime writes it (one argument is
// kept as it is, Errors as {errorType, errorMessage, stackTrace}; several are formatted
// into the message, the first Error's fields added).
const jsonFormat = () => (env.AWS_LAMBDA_LOG_FORMAT || '').toUpperCase() === 'JSON';

function jsonErrorReplacer(_k, v) {
  if (v instanceof Error) {
    return Object.assign(
      {
        errorType: (v.constructor && v.constructor.name) || 'UnknownError',
        errorMessage: v.message,
        stackTrace: typeof v.stack === 'string' ? v.stack.split('\n') : v.stack,
      },
      v
    );
  }
  return v;
}

function formatJsonLine(level, params) {
  const result = { timestamp: new Date().toISOString(), level, requestId: requestId() };
  if (params.length === 1) {
    result.message = params[0];
    try {
      return JSON.stringify(result, jsonErrorReplacer);
    } catch (_) {
      result.message = format(result.message);
      return JSON.stringify(result);
    }
  }
  result.message = format.apply(null, params);
  for (const p of params) {
    if (p instanceof Error) {
      result.errorType = (p.constructor && p.constructor.name) || 'UnknownError';
      result.errorMessage = p.message;
      result.stackTrace = typeof p.stack === 'string' ? p.stack.split('\n') : [];
      break;
    }
  }
  return JSON.stringify(result);
}

// `out`: where lines go (a stem cell's warm-up passes a sink that drops them).
function patchConsole(out = process.stdout) {
  const levels = { TRACE: 1, DEBUG: 2, INFO: 3, WARN: 4, ERROR: 5, FATAL: 6 };
  const min = levels[(env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] || 1;
  const nop = () => {};
  const json = jsonFormat();
  const mk = (name) => {
    if (levels[name] < min) return nop;
    if (json) {
      return function () {
        const line = formatJsonLine(name, Array.prototype.slice.call(arguments));
        out.write((line === undefined ? '' : line.replace(/\n/g, '\r')) + '\n');
      };
    }
    return function () {
      let msg = format.apply(null, arguments);
      if (msg.indexOf('\n') !== -1) msg = msg.replace(/\n/g, '\r');
      out.write(`${new Date().toISOString()}\t${requestId()}\t${name}\t${msg}\n`);
    };
  };
  console.trace = mk('TRACE');
  console.debug = mk('DEBUG');
  console.info = mk('INFO');
  console.log = console.info;
  console.warn = mk('WARN');
  console.error = mk('ERROR');
  console.fatal = mk('FATAL');
}

// ----------------------------------------------------------------- errors --

class RuntimeError extends Error {}
function runtimeError(type, message) {
  const e = new RuntimeError(message);
  e.name = `Runtime.${type}`;
  return e;
}

function isErrorLike(e) {
  return (
    e instanceof Error ||
    (e && typeof e.name === 'string' && typeof e.message === 'string' && typeof e.stack === 'string')
  );
}

// Lambda's Errors.toRapidResponse.
function toRapidResponse(e) {
  try {
    if (isErrorLike(e)) {
      return {
        errorType: e.name || 'Error',
        errorMessage: String(e.message),
        trace: typeof e.stack === 'string' ? e.stack.split('\n') : [],
      };
    }
    return { errorType: typeof e, errorMessage: String(e), trace: [] };
  } catch (_) {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
      trace: [],
    };
  }
}

// Lambda's Errors.toFormatted: tab + JSON with the non-enumerable fields.
function toFormatted(e) {
  try {
    return (
      '\t' +
      JSON.stringify(e, (_k, v) => {
        if (v instanceof Error) {
          const r = Object.assign({ errorType: v.name, errorMessage: v.message, code: v.code }, v);
          if (typeof v.stack === 'string') r.stack = v.stack.split('\n');
          return r;
        }
        return v;
      })
    );
  } catch (_) {
    return '\t' + JSON.stringify(toRapidResponse(e));
  }
}

function intoError(e) {
  return e instanceof Error ? e : new Error(e);
}

function logError(label, e) {
  // JSON: the error itself (Lambda's jsonErrorLogger); text: label + tab + JSON.
  if (jsonFormat()) console.error(intoError(e));
  else console.error(label, toFormatted(intoError(e)));
}

// ---------------------------------------------------- Runtime API client --

function parseApiAddress(v) {
  if (!v) return null;
  const i = v.lastIndexOf(':');
  if (i <= 0) return null;
  let host = v.slice(0, i);
  if (host[0] === '[' && host[host.length - 1] === ']') host = host.slice(1, -1);
  const port = Number(v.slice(i + 1));
  if (!Number.isInteger(port) || port <= 0 || port > 65535) return null;
  return { host, port };
}

const API = parseApiAddress(env.AWS_LAMBDA_RUNTIME_API);
if (!API) {
  process.stderr.write(
    `nimbus node bootstrap: AWS_LAMBDA_RUNTIME_API must be host:port (got ${JSON.stringify(env.AWS_LAMBDA_RUNTIME_API)})\n`,
  );
  process.exit(1);
}
// Streamed responses, and the fatal path's own connections; sized for the invocations in
// progress once the function's concurrency is known (main).
let agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

// An invocation loop's requests (GET next, POST response and error) go over one kept-alive
// socket with a minimal HTTP/1.1 client: a request is one write, answers are matched in
// order, and a result is posted with ASK_NEXT so that its answer is the next invocation
// (no 202 and GET next in between). The Runtime API answers with Content-Length.
// While nothing is pending the socket does not keep the event loop alive (an empty loop is
// how an async handler that never settles is detected). Each loop has its own client: a
// request waits behind the one before it on its socket, which may be a parked `next`.
class RapidClient {
  constructor() {
    this.sock = null;
    this.buf = null;
    this.pending = []; // { resolve, reject, retry, reused } in the order the requests were written
    this.answered = 0; // answers read on the current socket
    this.nextAnswer = null; // a posted result's answer that is the next invocation (ASK_NEXT)
  }

  connect() {
    const s = require('net').connect({ host: API.host, port: API.port });
    s.setNoDelay(true);
    s.on('data', (d) => this.onData(s, d));
    const gone = (err) => this.onGone(s, err || new Error('the Runtime API closed the connection'));
    s.on('error', gone);
    s.on('close', () => gone(null));
    this.sock = s;
    this.buf = null;
    this.answered = 0;
  }

  request(method, urlPath, headers, body) {
    return new Promise((resolve, reject) => {
      let head = `${method} ${urlPath} HTTP/1.1\r\nHost: ${API.host}\r\n`;
      if (headers) for (const k of Object.keys(headers)) head += `${k}: ${headers[k]}\r\n`;
      const msg = body && body.length ? Buffer.concat([Buffer.from(head + '\r\n'), body]) : Buffer.from(head + '\r\n');
      const send = (retry) => {
        if (!this.sock) this.connect();
        this.sock.ref();
        this.pending.push({ resolve, reject, retry, reused: this.answered > 0 });
        this.sock.write(msg);
      };
      // A kept-alive socket the server closed while idle: sent again once on a fresh one.
      send(() => send(null));
    });
  }

  onGone(s, err) {
    if (s !== this.sock) return;
    this.sock = null;
    const failed = this.pending.splice(0);
    for (const p of failed) {
      if (p.retry && p.reused && err.code !== 'ECONNREFUSED') p.retry();
      else p.reject(err);
    }
  }

  onData(s, d) {
    this.buf = this.buf ? Buffer.concat([this.buf, d]) : d;
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const lines = this.buf.toString('latin1', 0, end).split('\r\n');
      const status = Number(lines[0].split(' ')[1]);
      const headers = {};
      for (let i = 1; i < lines.length; i++) {
        const c = lines[i].indexOf(':');
        if (c > 0) headers[lines[i].slice(0, c).trim().toLowerCase()] = lines[i].slice(c + 1).trim();
      }
      if (headers['transfer-encoding']) {
        s.destroy(new Error(`unsupported Transfer-Encoding from the Runtime API: ${headers['transfer-encoding']}`));
        return;
      }
      const len = Number(headers['content-length'] || 0);
      if (this.buf.length < end + 4 + len) return;
      const body = this.buf.subarray(end + 4, end + 4 + len);
      this.buf = this.buf.length > end + 4 + len ? this.buf.subarray(end + 4 + len) : null;
      this.answered++;
      const p = this.pending.shift();
      if (this.pending.length === 0) s.unref();
      if (p) p.resolve({ status, headers, body });
      if (!this.buf) return;
    }
  }
}
const rapid = new RapidClient();

function request(method, urlPath, headers, body, opts) {
  return new Promise((resolve, reject) => {
    let retried = false;
    const send = () => {
      const req = http.request(
        { host: API.host, port: API.port, method, path: urlPath, headers, agent: opts && opts.agent !== undefined ? opts.agent : agent },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.on('error', (err) => {
        // A kept-alive socket the server closed while idle: retry once on a fresh one.
        if (!retried && req.reusedSocket && err.code === 'ECONNRESET') {
          retried = true;
          send();
        } else reject(err);
      });
      if (opts && opts.timeoutMs) req.setTimeout(opts.timeoutMs, () => req.destroy(new Error('timeout')));
      req.end(body);
    };
    send();
  });
}

function apiFailure(what, err) {
  process.stderr.write(`nimbus node bootstrap: ${what}: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
}

let warming = false; // a stem cell's warm-up invocation (see warmUp): its refusal is expected

// `client`: the invocation loop's (`opts`: a connection of its own instead).
async function post(urlPath, contentType, body, extraHeaders, opts, client = rapid) {
  const headers = Object.assign({ 'Content-Type': contentType, 'Content-Length': body.length }, extraHeaders);
  const quiet = warming; // the answer may come after the warm-up is over
  const res = opts ? await request('POST', urlPath, headers, body, opts) : await client.request('POST', urlPath, headers, body);
  if ((res.status < 200 || res.status > 299) && !quiet) {
    process.stderr.write(
      `nimbus node bootstrap: POST ${urlPath} returned ${res.status}: ${res.body.toString('utf8').slice(0, 500)}\n`,
    );
  }
  return res;
}

function errorBody(e) {
  return Buffer.from(JSON.stringify(toRapidResponse(e)));
}

function postInvocationError(id, e, opts, client, extraHeaders = null) {
  return post(`${API_PREFIX}/invocation/${encodeURIComponent(id)}/error`, 'application/json', errorBody(e), extraHeaders, opts, client);
}

// Nimbus's extension of the Runtime API: a result or error posted with this header is
// answered, once accepted, with the next invocation (a refused one with its refusal), so
// an invocation costs one exchange instead of a post, its 202 and a GET next.
const ASK_NEXT = { 'Nimbus-Runtime-Next': '1' };

function postInitError(e, opts) {
  const body = toRapidResponse(e);
  return post(
    `${API_PREFIX}/init/error`,
    'application/json',
    Buffer.from(JSON.stringify(body)),
    { 'Lambda-Runtime-Function-Error-Type': body.errorType },
    opts,
  );
}

// --------------------------------------------------------- handler loading --

function hasTypeModule(dir) {
  // Nearest package.json decides; a node_modules boundary stops the search.
  for (;;) {
    if (dir.endsWith(path.sep + 'node_modules')) return false;
    const pj = path.join(dir, 'package.json');
    let text;
    try {
      text = fs.readFileSync(pj, 'utf8');
    } catch (_) {
      text = undefined;
    }
    if (text !== undefined) {
      try {
        const pkg = JSON.parse(text);
        return !!pkg && pkg.type === 'module';
      } catch (e) {
        console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`, e);
        return false;
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return false;
    dir = parent;
  }
}

function isFile(p) {
  try {
    return fs.statSync(p).isFile();
  } catch (_) {
    return false;
  }
}

function importFile(file) {
  const { pathToFileURL } = require('url');
  return import(pathToFileURL(file).href);
}

async function requireOrImport(file) {
  try {
    return require(file);
  } catch (e) {
    if (e && e.code === 'ERR_REQUIRE_ESM') return importFile(file);
    throw e;
  }
}

async function loadModule(root, modulePath) {
  const base = path.resolve(root, modulePath);
  // Extensionless path first, as Lambda does: a file, or a directory require() resolves.
  if (fs.existsSync(base)) return requireOrImport(base);
  if (isFile(base + '.js')) {
    return hasTypeModule(path.dirname(base)) ? importFile(base + '.js') : requireOrImport(base + '.js');
  }
  if (isFile(base + '.mjs')) return importFile(base + '.mjs');
  if (isFile(base + '.cjs')) return require(base + '.cjs');
  // Node-style resolution (directory with index.js, package in node_modules).
  let resolved;
  try {
    resolved = require.resolve(modulePath, { paths: [root] });
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND') {
      const err = new Error(`Cannot find module '${modulePath}'`);
      err.code = 'MODULE_NOT_FOUND';
      throw err;
    }
    throw e;
  }
  return requireOrImport(resolved);
}

const STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');

// `root` and `full` (MODULE.FUNCTION): the task root and _HANDLER; a stem cell's warm-up
// loads its own module through here.
async function loadHandler(root = env.LAMBDA_TASK_ROOT || process.cwd(), full = env._HANDLER || '') {
  if (full.includes('..')) {
    throw runtimeError(
      'MalformedHandlerName',
      `'${full}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  const dot = full.lastIndexOf('.');
  if (dot <= 0 || dot === full.length - 1 || full.endsWith('/', dot)) {
    throw runtimeError('MalformedHandlerName', `Bad handler '${full}': use MODULE.FUNCTION, for example index.handler`);
  }
  const modulePath = full.slice(0, dot);
  const fnName = full.slice(dot + 1);

  installAwsLambdaGlobal();
  let mod;
  try {
    mod = await loadModule(root, modulePath);
  } catch (e) {
    if (e instanceof SyntaxError) throw runtimeError('UserCodeSyntaxError', String(e));
    if (e && (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_MODULE_NOT_FOUND')) {
      throw runtimeError('ImportModuleError', String(e));
    }
    throw e;
  }
  const fn = mod == null ? undefined : mod[fnName];
  if (!fn) throw runtimeError('HandlerNotFound', `${full} is undefined or not exported`);
  if (typeof fn !== 'function') throw runtimeError('HandlerNotFound', `${full} is not a function`);
  const streaming = fn[STREAMING] === 'response';
  if (fn[STREAMING] && !streaming) {
    throw runtimeError('MalformedStreamingHandler', 'Only response streaming is supported.');
  }
  return {
    fn,
    streaming,
    isAsync: !!(fn.constructor && fn.constructor.name === 'AsyncFunction'),
  };
}

// awslambda.streamifyResponse / HttpResponseStream, as Lambda provides them
// (the Node RIC's UserFunction.js and HttpResponseStream.js). The stream itself
// is built by runStreaming.
function installAwsLambdaGlobal() {
  if (env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA === '1' || env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA === 'true') return;
  globalThis.awslambda = {
    streamifyResponse(handler) {
      handler[STREAMING] = 'response';
      return handler;
    },
    HttpResponseStream: class HttpResponseStream {
      // The body becomes: JSON prelude, 8 NUL bytes, then what the handler writes.
      static from(stream, prelude) {
        stream.setContentType('application/vnd.awslambda.http-integration-response');
        const json = JSON.stringify(prelude || {});
        stream._onBeforeFirstWrite = (write) => {
          write(json);
          write(new Uint8Array(8));
        };
        return stream;
      }
    },
  };
}

// ------------------------------------------------------------ invocations --

let beforeExitHook = null;
process.on('beforeExit', () => {
  const h = beforeExitHook;
  beforeExitHook = null;
  if (h) h();
});

async function nextInvocation(client) {
  let res;
  const asked = client.nextAnswer;
  if (asked) {
    // The last result went out with ASK_NEXT: its answer is the next invocation, unless
    // the post was refused (post() said so on stderr), and then we ask as usual.
    client.nextAnswer = null;
    try {
      res = await asked;
    } catch (e) {
      apiFailure('posting the invocation result failed', e);
    }
    if (res.status !== 200) res = undefined;
  }
  try {
    if (!res) res = await client.request('GET', `${API_PREFIX}/invocation/next`, undefined, undefined);
  } catch (e) {
    apiFailure('GET next failed', e);
  }
  if (res.status !== 200) {
    apiFailure(`GET next returned ${res.status}`, res.body.toString('utf8').slice(0, 500));
  }
  const id = res.headers['lambda-runtime-aws-request-id'];
  if (!id) apiFailure('GET next', 'response lacks Lambda-Runtime-Aws-Request-Id');
  return { id, headers: res.headers, body: res.body };
}

function parseJsonHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

function buildContext(headers, id, callbackContext) {
  const deadline = Number(headers['lambda-runtime-deadline-ms']);
  return Object.assign(callbackContext, {
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext'),
    identity: parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    awsRequestId: id,
    tenantId: headers['lambda-runtime-aws-tenant-id'],
    getRemainingTimeInMillis() {
      return deadline - Date.now();
    },
  });
}

function isPromise(v) {
  return v && typeof v.then === 'function';
}

// Runs one invocation; the returned promise settles once its result or error has been
// posted (on `client`, the invocation loop's). `alone`: the only invocation in progress
// (AWS_LAMBDA_MAX_CONCURRENCY 1): only then can an empty event loop tell that the handler
// is done (callbackWaitsForEmptyEventLoop) or will never be; with several at once the other
// loops' parked `next` requests keep the loop alive, so a callback answers at once and a
// handler that never answers runs into its timeout.
function runInvocation(h, inv, client = rapid, alone = true) {
  return new Promise((settle) => {
    const id = inv.id;
    let reported = false;
    const report = (isErr, value) => {
      if (reported) {
        console.error('Invocation has already been reported as done. Cannot call complete more than once per invocation.');
        return;
      }
      reported = true;
      beforeExitHook = null;
      let p;
      if (!isErr) {
        let body;
        try {
          body = JSON.stringify(value === undefined ? null : value);
          if (body === undefined) body = 'null';
        } catch (e) {
          isErr = true;
          value = e;
        }
        if (!isErr) {
          p = post(`${API_PREFIX}/invocation/${encodeURIComponent(id)}/response`, 'application/json', Buffer.from(body), ASK_NEXT, null, client);
        }
      }
      if (isErr) {
        logError('Invoke Error', value);
        p = postInvocationError(id, value, null, client, ASK_NEXT);
      }
      // Settled at once: the loop's next invocation is this post's answer (ASK_NEXT).
      client.nextAnswer = p;
      p.catch((e) => apiFailure('posting the invocation result failed', e));
      settle();
    };

    // Callback / legacy context.done: only the first call of any of them counts.
    let finished = false;
    let waitForEmptyEventLoop = true;
    const once = (fn) =>
      function () {
        if (finished) return;
        finished = true;
        fn.apply(null, arguments);
      };
    const callback = once((err, result) => {
      beforeExitHook = null;
      if (err !== undefined && err !== null) report(true, err);
      else if (!waitForEmptyEventLoop || !alone) report(false, result);
      else beforeExitHook = () => setImmediate(() => report(false, result));
    });
    const done = (err, result) => {
      if (err !== undefined && err !== null) report(true, err);
      else report(false, result);
    };
    const callbackContext = {
      get callbackWaitsForEmptyEventLoop() {
        return waitForEmptyEventLoop;
      },
      set callbackWaitsForEmptyEventLoop(v) {
        waitForEmptyEventLoop = v;
      },
      succeed: once((result) => done(null, result)),
      fail: once((err) => (err === undefined || err === null ? done('handled') : done(err, null))),
      done: once(done),
    };

    let event;
    try {
      event = JSON.parse(inv.body.toString('utf8'));
    } catch (e) {
      const err = runtimeError('UnmarshalError', `Unable to parse the event as JSON: ${e.message}`);
      err.stack = `${err.name}: ${err.message}`;
      finished = true;
      report(true, err);
      return;
    }

    let returnedPromise = false;
    // The event loop emptied without a result: like Lambda, an async handler
    // (or a returned promise that never settled) fails, anything else succeeds with null.
    if (alone) beforeExitHook = () => {
      finished = true;
      if (h.isAsync || returnedPromise) {
        const e = runtimeError('NodeJsExit', 'Error: Runtime exited without providing a reason');
        report(true, e);
      } else report(false, null);
    };

    try {
      const context = buildContext(inv.headers, id, callbackContext);
      if (h.streaming) {
        // The response goes out as it is written; callbacks do not apply.
        finished = true;
        reported = true;
        const s = runStreaming(h.fn, event, context, id);
        if (alone) beforeExitHook = s.onEmptyLoop;
        s.done.then(
          () => {
            beforeExitHook = null;
            settle();
          },
          (e) => apiFailure('streaming the response failed', e),
        );
        return;
      }
      const result = h.fn(event, context, callback);
      if (isPromise(result)) {
        returnedPromise = true;
        result.then(callbackContext.succeed, callbackContext.fail);
      } else if (result !== undefined && h.fn.length < 3) {
        // Sync handler returning a value (Lambda would ignore it; Nimbus posts it).
        callbackContext.succeed(result);
      } else if (!alone && h.fn.length < 3) {
        // Neither a promise nor a callback, and no empty event loop to wait for.
        callbackContext.succeed(result);
      }
    } catch (e) {
      callback(e);
    }
  });
}

// Response streaming, as the Node RIC does it (ResponseStream.js, Runtime.js):
// the handler writes to a stream that is the body of a chunked POST to
// /response with `Lambda-Runtime-Function-Response-Mode: streaming`. The
// request starts at the first write (until then the content type may change).
// The invocation ends when the handler's promise has resolved and the stream
// has been ended; a failure is reported in the trailers
// Lambda-Runtime-Function-Error-Type and Lambda-Runtime-Function-Error-Body
// (base64 of the error JSON).
// Returns { done: settled once the Runtime API answered, onEmptyLoop() }.
function runStreaming(fn, event, context, id) {
  const { Writable } = require('stream');
  let req = null;
  let answer = null;
  let contentType = 'application/octet-stream';
  let first = true;
  let closed = false; // the request was ended (normally or with error trailers)

  const open = () => {
    if (req) return req;
    req = http.request({
      host: API.host,
      port: API.port,
      method: 'POST',
      path: `${API_PREFIX}/invocation/${encodeURIComponent(id)}/response`,
      agent,
      headers: {
        'Content-Type': contentType,
        'Lambda-Runtime-Function-Response-Mode': 'streaming',
        'Transfer-Encoding': 'chunked',
        Trailer: 'Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body',
      },
    });
    answer = new Promise((resolve, reject) => {
      req.on('response', (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
      req.on('error', reject);
    });
    return req;
  };
  const beforeFirstWrite = (r) => {
    if (!first) return;
    first = false;
    if (typeof stream._onBeforeFirstWrite === 'function') stream._onBeforeFirstWrite((c) => r.write(c));
  };

  const stream = new Writable({
    write(chunk, _enc, cb) {
      if (closed) return cb();
      const r = open();
      beforeFirstWrite(r);
      r.write(chunk, () => cb());
    },
    final(cb) {
      if (closed) return cb();
      const r = open();
      beforeFirstWrite(r);
      closed = true;
      r.end(() => cb());
    },
  });
  // Like the RIC: anything but a string or bytes is written as JSON.
  const write = stream.write.bind(stream);
  stream.write = (chunk, encoding, cb) => {
    if (typeof chunk !== 'string' && !Buffer.isBuffer(chunk) && !(chunk instanceof Uint8Array)) {
      chunk = JSON.stringify(chunk);
    }
    return write(chunk, encoding, cb);
  };
  stream.setContentType = (t) => {
    if (req) throw new Error('Cannot set content-type, too late.');
    contentType = t;
  };

  let settle;
  const done = new Promise((resolve, reject) => {
    settle = { resolve, reject };
  });
  let settled = false;
  const settleWith = () => {
    if (settled) return;
    settled = true;
    answer.then((res) => {
      if (res.status < 200 || res.status > 299) {
        process.stderr.write(
          `nimbus node bootstrap: streaming the response returned ${res.status}: ${res.body.toString('utf8').slice(0, 500)}\n`,
        );
      }
      settle.resolve();
    }, settle.reject);
  };

  let failed = false;
  const fail = (e) => {
    if (failed) return;
    failed = true;
    logError('Invoke Error', e);
    if (closed) {
      console.error('The response stream had already ended: the error cannot be reported.');
      stream.once('finish', settleWith);
      if (stream.writableFinished) settleWith();
      return;
    }
    closed = true;
    stream.destroy();
    const body = toRapidResponse(e);
    const r = open();
    r.addTrailers({
      'Lambda-Runtime-Function-Error-Type': body.errorType,
      'Lambda-Runtime-Function-Error-Body': Buffer.from(JSON.stringify(body)).toString('base64'),
    });
    r.end();
    settleWith();
  };
  stream.on('error', (e) => fail(e));

  let resolved = false;
  let result;
  try {
    result = fn(event, stream, context);
  } catch (e) {
    fail(e);
  }
  if (!failed) {
    if (!isPromise(result)) fail('Streaming does not support non-async handlers.');
    else {
      result.then(
        (value) => {
          resolved = true;
          if (value !== undefined) console.warn('Streaming handlers ignore return values.');
          if (failed) return;
          // Done once the handler has also ended the stream (a pipeline may still run).
          if (stream.writableFinished) settleWith();
          else stream.once('finish', () => failed || settleWith());
        },
        (e) => fail(e),
      );
    }
  }
  // Nothing left to run and the invocation is not over: fail it rather than hang.
  const onEmptyLoop = () =>
    fail(
      resolved
        ? runtimeError('StreamNotFinished', 'Response stream is not finished: call responseStream.end()')
        : runtimeError('NodeJsExit', 'Error: Runtime exited without providing a reason'),
    );
  return { done, onEmptyLoop };
}

// ------------------------------------------------------- fatal error paths --

let started = false; // true once the invocation loop runs
let fatal = false;
function onFatal(label, e, code) {
  if (fatal) return;
  fatal = true;
  beforeExitHook = null;
  logError(label, e);
  // A separate, non-pooled connection: the pooled socket may be parked on next.
  const opts = { agent: false, timeoutMs: 2000 };
  // The invocation it happened in (with several at once, the one whose context threw; the
  // others fail when the process exits).
  const id = requestId();
  const p = started && id !== undefined ? postInvocationError(id, e, opts) : postInitError(e, opts);
  p.then(
    () => process.exit(code),
    () => process.exit(code),
  );
}
process.on('uncaughtException', (e) => onFatal('Uncaught Exception', e, 129));
process.on('unhandledRejection', (reason) => {
  const e = runtimeError('UnhandledPromiseRejection', reason && reason.toString ? reason.toString() : String(reason));
  e.reason = reason;
  onFatal('Unhandled Promise Rejection', e, 128);
});

// ------------------------------------------------------------------- main --

// A stem cell (started with _NIMBUS_STEM=1 before any function was known) waits here
// until the server makes it an instance of a function: the answer carries the
// function's whole environment and its task root (already mounted).
async function specialize() {
  // Everything the path from here to the first invocation loads, loaded before the function
  // is known (a module loaded on first use costs ~0.3 ms each).
  const { Module } = require('module');
  require('url');
  require('stream');
  await warmUp();
  const stemPath = `${API_PREFIX}/nimbus/stem/specialize`;
  let res;
  try {
    // On the invocation loop's socket (warm: the warm-up used it), parked until the answer.
    res = await rapid.request('GET', stemPath, undefined, undefined);
  } catch (e) {
    apiFailure(`GET ${stemPath} failed`, e);
  }
  if (res.status !== 200) apiFailure(`GET ${stemPath} returned ${res.status}`, res.body.toString('utf8').slice(0, 500));
  const spec = JSON.parse(res.body.toString('utf8'));
  // The environment becomes the function's; only what differs changes: removing TZ (the
  // stem cell's and the function's are the same) would make V8 and ICU look the time zone
  // up again (3.5 ms in a sandbox, which has no /etc/localtime).
  const fnEnv = spec.env;
  for (const k of Object.keys(env)) if (!Object.prototype.hasOwnProperty.call(fnEnv, k)) delete env[k];
  for (const k of Object.keys(fnEnv)) if (env[k] !== fnEnv[k]) env[k] = fnEnv[k];
  process.chdir(spec.taskRoot);
  // Node read NODE_PATH when the stem cell started, before the function (and its layers'
  // /opt/nodejs paths) was known: read it again.
  Module._initPaths();
}

// V8 compiles a function at its first call: a stem cell loads a handler (warm.js, next to
// this file) the way it will load the function's, and runs the invocation path once (its
// answer posted for a request id the Runtime API refuses), so the first real load and
// invocation do not pay for compiling them.
async function warmUp() {
  warming = true;
  // The log path: process.stdout is created on first use (~2 ms: a stream over fd 1) and
  // util.format and Date#toISOString compile on their first call. Nothing is written: the
  // console writes to a sink until the function's own console is set up.
  process.stdout.write('');
  format('%s %d %j', 'warm', 1, {});
  new Date().toISOString();
  patchConsole({ write() {} });
  const warmFile = path.join(__dirname, 'warm.js');
  let h;
  try {
    h = await loadHandler(__dirname, 'warm.handler');
  } catch (_) {
    // No warm.js (a runtime dir of another version): the invocation path only.
    h = { fn: async () => ({ warm: true }), streaming: false, isAsync: true };
  }
  delete require.cache[warmFile];
  try {
    // The ES module loader, for handlers that are ES modules (warm-esm.mjs).
    await loadHandler(__dirname, 'warm-esm.handler');
  } catch (_) {
    // Missing: such a handler sets the loader up when it is loaded.
  }
  delete globalThis.awslambda;
  const inv = {
    id: 'nimbus-stem-warm-up',
    headers: { 'lambda-runtime-deadline-ms': String(Date.now() + 1000) },
    body: Buffer.from('{"warm":1}'),
  };
  try {
    await runInvocation(h, inv);
  } catch (_) {
    // Nothing to report: the real invocations report their own failures.
  }
  beforeExitHook = null;
  warming = false;
}

async function main() {
  if (env._NIMBUS_STEM === '1') await specialize();
  installInvocationEnv();
  patchConsole();
  let h;
  try {
    h = await loadHandler();
  } catch (e) {
    fatal = true;
    logError('Init Error', e);
    try {
      await postInitError(e, { agent: false, timeoutMs: 2000 });
    } catch (pe) {
      process.stderr.write(`nimbus node bootstrap: posting the init error failed: ${pe}\n`);
    }
    process.exit(129);
  }
  started = true;
  // The function's instance_concurrency (Lambda Managed Instances' variable): that many
  // invocation loops, each with its own Runtime API connection.
  const max = Math.max(1, Number.parseInt(env.AWS_LAMBDA_MAX_CONCURRENCY, 10) || 1);
  if (max === 1) return invocationLoop(h, rapid, true);
  invocations = new (require('async_hooks').AsyncLocalStorage)();
  agent = new http.Agent({ keepAlive: true, maxSockets: max });
  const loops = [invocationLoop(h, rapid, false)];
  for (let i = 1; i < max; i++) loops.push(invocationLoop(h, new RapidClient(), false));
  await Promise.all(loops);
}

async function invocationLoop(h, client, alone) {
  for (;;) {
    const inv = await nextInvocation(client);
    currentRequestId = inv.id;
    // Outside any invocation's async context (a timer set at init) these are the latest's.
    const vars = varsOf(inv.headers);
    latestVars = vars;
    if (alone) await runInvocation(h, inv, client, true);
    else await invocations.run({ id: inv.id, vars }, () => runInvocation(h, inv, client, false));
  }
}

main().catch((e) => onFatal('Uncaught Exception', e, 129));
