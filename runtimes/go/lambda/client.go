package lambda

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
)

// Runtime API (2018-06-01) headers, lower-case as stored in header.
const (
	headerRequestID          = "lambda-runtime-aws-request-id"
	headerDeadlineMS         = "lambda-runtime-deadline-ms"
	headerTraceID            = "lambda-runtime-trace-id"
	headerCognitoIdentity    = "lambda-runtime-cognito-identity"
	headerClientContext      = "lambda-runtime-client-context"
	headerInvokedFunctionARN = "lambda-runtime-invoked-function-arn"
	headerTenantID           = "lambda-runtime-aws-tenant-id"
	contentTypeJSON          = "application/json"
	// Nimbus's extension: an accepted result or error posted with this header is answered
	// with the next invocation instead of 202 (another Runtime API ignores it).
	headerAskNext = "Nimbus-Runtime-Next"
)

// client talks HTTP/1.1 to the Runtime API at one address (host:port, no scheme) over
// one kept-alive connection. It is deliberately small instead of net/http: the Runtime
// API is a loopback peer with three calls, and leaving net/http (and crypto/tls) out
// makes a function's first build several times faster and its binary half the size.
type client struct {
	address   string
	userAgent string
	conn      net.Conn
	r         *bufio.Reader
	// pending is the next invocation when a post's answer carried it (headerAskNext).
	pending *invoke
}

func newClient(address string) *client {
	return &client{address: address, userAgent: "nimbus-lambda-go/" + runtime.Version()}
}

// header holds response headers by lower-case name (the first value of each).
type header map[string]string

// Get returns the value of the header name (any case), or "".
func (h header) Get(name string) string {
	return h[strings.ToLower(name)]
}

type response struct {
	status int
	header header
	body   []byte
}

type invoke struct {
	id      string
	payload []byte
	headers header
}

const apiPrefix = "/2018-06-01/runtime"

// next waits for the next invocation (a long poll, no timeout), or returns the one the
// last post's answer carried; anything but 200 is an error.
func (c *client) next() (*invoke, error) {
	if inv := c.pending; inv != nil {
		c.pending = nil
		return inv, nil
	}
	path := apiPrefix + "/invocation/next"
	resp, err := c.do("GET", path, nil, "", false)
	if err != nil {
		return nil, fmt.Errorf("failed to get the next invoke: %v", err)
	}
	if resp.status != 200 {
		return nil, fmt.Errorf("failed to GET %s: got unexpected status code: %d", path, resp.status)
	}
	return invokeOf(resp), nil
}

func invokeOf(resp *response) *invoke {
	return &invoke{id: resp.header.Get(headerRequestID), payload: resp.body, headers: resp.header}
}

// post sends a result or an error; anything but 202 is an error. With askNext the answer
// may instead be the next invocation (200), kept for next.
func (c *client) post(path string, body []byte, contentType string, askNext bool) error {
	path = apiPrefix + path
	resp, err := c.do("POST", path, body, contentType, askNext)
	if err != nil {
		return fmt.Errorf("failed to POST to %s: %v", path, err)
	}
	if askNext && resp.status == 200 && resp.header.Get(headerRequestID) != "" {
		c.pending = invokeOf(resp)
		return nil
	}
	if resp.status != 202 {
		return fmt.Errorf("failed to POST to %s: got unexpected status code: %d %s", path, resp.status, bytes.TrimSpace(resp.body))
	}
	return nil
}

// success posts a result; its answer is the next invocation.
func (c *client) success(id string, body []byte) error {
	return c.post("/invocation/"+id+"/response", body, contentTypeJSON, true)
}

// failure posts an error; with askNext its answer is the next invocation (not when the
// process exits after it).
func (c *client) failure(id string, body []byte, askNext bool) error {
	return c.post("/invocation/"+id+"/error", body, contentTypeJSON, askNext)
}

// errNoResponse: the connection failed before any byte of the response arrived.
var errNoResponse = errors.New("connection closed before a response")

// do sends one request and reads the response. A GET that fails on a reused connection
// before any response byte is retried once on a new connection (the peer may have closed
// it while idle); a POST is never sent twice.
func (c *client) do(method, path string, body []byte, contentType string, askNext bool) (*response, error) {
	reused := c.conn != nil
	resp, err := c.roundTrip(method, path, body, contentType, askNext)
	if err != nil && reused && method == "GET" && errors.Is(err, errNoResponse) {
		resp, err = c.roundTrip(method, path, body, contentType, askNext)
	}
	return resp, err
}

func (c *client) roundTrip(method, path string, body []byte, contentType string, askNext bool) (*response, error) {
	if c.conn == nil {
		conn, err := net.Dial("tcp", c.address)
		if err != nil {
			return nil, err
		}
		c.conn, c.r = conn, bufio.NewReaderSize(conn, 64*1024)
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n", method, path, c.address, c.userAgent)
	if method != "GET" {
		if contentType != "" {
			fmt.Fprintf(&req, "Content-Type: %s\r\n", contentType)
		}
		fmt.Fprintf(&req, "Content-Length: %d\r\n", len(body))
		if askNext {
			fmt.Fprintf(&req, "%s: 1\r\n", headerAskNext)
		}
	}
	req.WriteString("\r\n")
	req.Write(body)
	if _, err := c.conn.Write(req.Bytes()); err != nil {
		c.close()
		return nil, fmt.Errorf("%w: %v", errNoResponse, err)
	}
	resp, keepAlive, err := readResponse(c.r, method)
	if err != nil || !keepAlive {
		c.close()
	}
	return resp, err
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.r = nil, nil
	}
}

// readResponse reads one HTTP/1.1 response (skipping 1xx ones): the body by
// Content-Length, chunked (trailers are read and dropped) or up to EOF. keepAlive says
// whether the connection can carry another request.
func readResponse(r *bufio.Reader, method string) (resp *response, keepAlive bool, err error) {
	for {
		line, err := readLine(r)
		if err != nil {
			if line == "" && (err == io.EOF || errors.Is(err, net.ErrClosed) || isReset(err)) {
				return nil, false, fmt.Errorf("%w: %v", errNoResponse, err)
			}
			return nil, false, err
		}
		proto, rest, _ := strings.Cut(line, " ")
		code, _, _ := strings.Cut(rest, " ")
		status, convErr := strconv.Atoi(code)
		if !strings.HasPrefix(proto, "HTTP/1.") || convErr != nil || status < 100 || status > 999 {
			return nil, false, fmt.Errorf("malformed HTTP status line %q", line)
		}
		h, err := readHeader(r)
		if err != nil {
			return nil, false, err
		}
		if status < 200 {
			continue // 100 Continue and friends
		}
		resp = &response{status: status, header: h}
		keepAlive = proto == "HTTP/1.1" && !strings.EqualFold(h.Get("connection"), "close")
		switch {
		case method == "HEAD" || status == 204 || status == 304:
		case strings.EqualFold(h.Get("transfer-encoding"), "chunked"):
			resp.body, err = readChunked(r)
		case h.Get("content-length") != "":
			n, convErr := strconv.ParseInt(h.Get("content-length"), 10, 64)
			if convErr != nil || n < 0 {
				return nil, false, fmt.Errorf("malformed Content-Length %q", h.Get("content-length"))
			}
			resp.body = make([]byte, n)
			_, err = io.ReadFull(r, resp.body)
		default:
			resp.body, err = io.ReadAll(r)
			keepAlive = false
		}
		if err != nil {
			return nil, false, fmt.Errorf("failed to read the response body: %v", err)
		}
		return resp, keepAlive, nil
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// readLine reads a line without its CRLF (or LF).
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return line, err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func readHeader(r *bufio.Reader) (header, error) {
	h := header{}
	for {
		line, err := readLine(r)
		if err != nil {
			return nil, fmt.Errorf("failed to read the response headers: %v", err)
		}
		if line == "" {
			return h, nil
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("malformed header line %q", line)
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if _, seen := h[name]; !seen {
			h[name] = strings.TrimSpace(value)
		}
	}
}

func readChunked(r *bufio.Reader) ([]byte, error) {
	var body []byte
	for {
		line, err := readLine(r)
		if err != nil {
			return nil, err
		}
		sizeText, _, _ := strings.Cut(line, ";")
		size, err := strconv.ParseInt(strings.TrimSpace(sizeText), 16, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("malformed chunk size %q", line)
		}
		if size == 0 {
			_, err := readHeader(r) // trailers
			return body, err
		}
		start := len(body)
		body = append(body, make([]byte, size)...)
		if _, err := io.ReadFull(r, body[start:]); err != nil {
			return nil, err
		}
		if crlf, err := readLine(r); err != nil || crlf != "" {
			return nil, fmt.Errorf("malformed chunk end")
		}
	}
}
