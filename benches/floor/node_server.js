'use strict';
// The Node.js floor of the Nimbus benchmark: a bare `http.createServer` that calls the
// same handler module Nimbus runs, with a minimal function-URL-like event and context,
// and answers its JSON. Usage (cwd = the handler's directory):
//   node node_server.js PORT HANDLER        e.g. node node_server.js 9000 index.handler
// FLOOR_WORKERS=N (default 1): N processes sharing the port (node:cluster), the most the
// runtime serves on a host of N cores with no platform in front.
const cluster = require('cluster');
const workers = Number(process.env.FLOOR_WORKERS || 1);
if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (w, code) => {
    process.stderr.write(`floor worker ${w.process.pid} exited (${code})\n`);
    process.exit(1);
  });
  return;
}
const http = require('http');
const path = require('path');
const { randomUUID } = require('crypto');

const [port, handlerSpec] = process.argv.slice(2);
const dot = handlerSpec.lastIndexOf('.');
const handler = require(path.resolve(handlerSpec.slice(0, dot)))[handlerSpec.slice(dot + 1)];

http
  .createServer((req, res) => {
    req.resume();
    req.on('end', async () => {
      const q = req.url.indexOf('?');
      const rawPath = q < 0 ? req.url : req.url.slice(0, q);
      const rawQueryString = q < 0 ? '' : req.url.slice(q + 1);
      const event = {
        version: '2.0',
        routeKey: '$default',
        rawPath,
        rawQueryString,
        headers: req.headers,
        queryStringParameters: rawQueryString
          ? Object.fromEntries(new URLSearchParams(rawQueryString))
          : undefined,
        requestContext: { http: { method: req.method, path: rawPath } },
        isBase64Encoded: false,
      };
      const deadline = Date.now() + 3000;
      const context = {
        awsRequestId: randomUUID(),
        functionName: 'floor',
        functionVersion: '$LATEST',
        getRemainingTimeInMillis: () => deadline - Date.now(),
      };
      try {
        const out = await handler(event, context);
        res.writeHead(out.statusCode, out.headers);
        res.end(out.body);
      } catch (e) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(String(e));
      }
    });
  })
  .listen(Number(port), '127.0.0.1');
