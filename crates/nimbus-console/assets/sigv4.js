// AWS Signature Version 4 in the browser (WebCrypto), the canonical request exactly as the
// server's verifier builds it (crates/nimbus-auth/src/sigv4.rs): the path as sent with dot
// and empty segments removed then every byte but the unreserved ones and `/` percent-encoded;
// the query's names and values decoded, re-encoded and sorted; the signed headers lowercase
// with values trimmed and inner whitespace collapsed; the hex SHA-256 of the body.

const enc = new TextEncoder();

export const REGION = "us-east-1";
export const SERVICE = "lambda";

function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function sha256Hex(data) {
  const bytes = typeof data === "string" ? enc.encode(data) : data;
  return hex(await crypto.subtle.digest("SHA-256", bytes));
}

async function hmac(key, data) {
  const k = await crypto.subtle.importKey(
    "raw", typeof key === "string" ? enc.encode(key) : key,
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return crypto.subtle.sign("HMAC", k, enc.encode(data));
}

const UNRESERVED = /[A-Za-z0-9\-_.~]/;

/** Percent-encodes every byte but the unreserved ones (and `/` when keepSlash). */
export function uriEncode(bytes, keepSlash) {
  let out = "";
  for (const b of bytes) {
    const c = String.fromCharCode(b);
    if ((b < 128 && UNRESERVED.test(c)) || (keepSlash && c === "/")) out += c;
    else out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

function percentDecode(s) {
  const out = [];
  const src = enc.encode(s);
  for (let i = 0; i < src.length; i++) {
    if (src[i] === 0x25 && i + 2 < src.length) {
      const h = String.fromCharCode(src[i + 1], src[i + 2]);
      if (/^[0-9A-Fa-f]{2}$/.test(h)) {
        out.push(parseInt(h, 16));
        i += 2;
        continue;
      }
    }
    out.push(src[i]);
  }
  return out;
}

function removeDotSegments(path) {
  if (path === "") return "/";
  const out = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") out.pop();
    else out.push(seg);
  }
  let s = "/" + out.join("/");
  if (path.endsWith("/") && out.length > 0) s += "/";
  return s;
}

export function canonicalUri(path) {
  return uriEncode(enc.encode(removeDotSegments(path)), true);
}

export function canonicalQuery(query) {
  const pairs = query.split("&").filter((p) => p !== "").map((p) => {
    const i = p.indexOf("=");
    const [k, v] = i < 0 ? [p, ""] : [p.slice(0, i), p.slice(i + 1)];
    return [uriEncode(percentDecode(k), false), uriEncode(percentDecode(v), false)];
  });
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join("&");
}

export function amzDate(d) {
  return d.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/**
 * The headers to send with a request: `x-amz-date`, `x-amz-content-sha256`, `authorization`
 * (plus the given ones). `url` is a URL object of this origin; `body` a string or bytes.
 */
export async function sign({ method, url, headers = {}, body = "" }, { keyId, secret }, now = new Date()) {
  const date = amzDate(now);
  const day = date.slice(0, 8);
  const payload = await sha256Hex(body);
  const all = { ...headers, "x-amz-date": date, "x-amz-content-sha256": payload };
  const signed = { host: url.host };
  for (const [k, v] of Object.entries(all)) {
    const n = k.toLowerCase();
    if (n === "content-type" || n.startsWith("x-amz-")) signed[n] = String(v);
  }
  const names = Object.keys(signed).sort();
  const canonical = [
    method.toUpperCase(),
    canonicalUri(url.pathname),
    canonicalQuery(url.search.replace(/^\?/, "")),
    ...names.map((n) => `${n}:${signed[n].trim().split(/[ \t\n\r\f\v]+/).join(" ")}`),
    "",
    names.join(";"),
    payload,
  ].join("\n");
  const scope = `${day}/${REGION}/${SERVICE}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", date, scope, await sha256Hex(canonical)].join("\n");
  let key = await hmac("AWS4" + secret, day);
  key = await hmac(key, REGION);
  key = await hmac(key, SERVICE);
  key = await hmac(key, "aws4_request");
  const signature = hex(await hmac(key, toSign));
  return {
    ...all,
    authorization: `AWS4-HMAC-SHA256 Credential=${keyId}/${scope}, SignedHeaders=${names.join(";")}, Signature=${signature}`,
  };
}
