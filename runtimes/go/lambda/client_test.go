package lambda

import (
	"bufio"
	"net"
	"strings"
	"testing"
)

// rawServer answers each request on a connection with the next canned response and
// closes the connection when the response list for it runs out; each connection gets
// the lists in order.
func rawServer(t *testing.T, conns [][]string) (addr string, requests chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	requests = make(chan string, 100)
	go func() {
		for _, responses := range conns {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			r := bufio.NewReader(conn)
			for _, resp := range responses {
				var req strings.Builder
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						conn.Close()
						return
					}
					req.WriteString(line)
					if line == "\r\n" {
						break
					}
				}
				requests <- req.String()
				conn.Write([]byte(resp))
			}
			conn.Close()
		}
	}()
	return ln.Addr().String(), requests
}

func TestClientReadsChunkedBodiesAndTrailers(t *testing.T) {
	addr, reqs := rawServer(t, [][]string{{
		"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: r1\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"3;ext=1\r\n{\"a\r\n5\r\n\":1}x\r\n0\r\nX-Trailer: t\r\n\r\n",
		"HTTP/1.1 202 Accepted\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}",
	}})
	c := newClient(addr)
	inv, err := c.next()
	if err != nil || inv.id != "r1" || string(inv.payload) != `{"a":1}x` {
		t.Fatalf("got %+v %v", inv, err)
	}
	if err := c.success("r1", []byte(`"ok"`)); err != nil {
		t.Fatal(err)
	}
	<-reqs
	post := <-reqs
	for _, want := range []string{"POST /2018-06-01/runtime/invocation/r1/response HTTP/1.1\r\n", "Content-Length: 4\r\n", "Content-Type: application/json\r\n", "User-Agent: nimbus-lambda-go/"} {
		if !strings.Contains(post, want) {
			t.Errorf("request %q lacks %q", post, want)
		}
	}
}

func TestClientRetriesANextOnAClosedIdleConnection(t *testing.T) {
	ok := "HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: %s\r\nContent-Length: 2\r\n\r\n{}"
	addr, _ := rawServer(t, [][]string{
		{strings.Replace(ok, "%s", "first", 1)}, // then the server closes the connection
		{strings.Replace(ok, "%s", "second", 1)},
	})
	c := newClient(addr)
	for _, want := range []string{"first", "second"} {
		inv, err := c.next()
		if err != nil || inv.id != want {
			t.Fatalf("want %s: got %+v %v", want, inv, err)
		}
	}
}

func TestClientHonoursConnectionCloseAndEOFBodies(t *testing.T) {
	addr, _ := rawServer(t, [][]string{
		{"HTTP/1.1 200 OK\r\nConnection: close\r\nLambda-Runtime-Aws-Request-Id: a\r\nContent-Length: 1\r\n\r\n1"},
		{"HTTP/1.0 200 OK\r\nLambda-Runtime-Aws-Request-Id: b\r\n\r\nuntil EOF"},
		{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"},
	})
	c := newClient(addr)
	inv, err := c.next()
	if err != nil || string(inv.payload) != "1" {
		t.Fatalf("%+v %v", inv, err)
	}
	inv, err = c.next()
	if err != nil || string(inv.payload) != "until EOF" {
		t.Fatalf("%+v %v", inv, err)
	}
	if err := c.failure("b", []byte("{}"), true); err != nil {
		t.Fatal(err)
	}
}

func TestClientRejectsGarbage(t *testing.T) {
	addr, _ := rawServer(t, [][]string{{"SMTP ready\r\n\r\n"}})
	if _, err := newClient(addr).next(); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("got %v", err)
	}
	if _, err := newClient("127.0.0.1:1").next(); err == nil {
		t.Error("connection refused is an error")
	}
}

func TestLargeEventsThroughNetHTTP(t *testing.T) {
	big := `"` + strings.Repeat("x", 200000) + `"`
	f := &fakeAPI{events: []string{big}}
	run(t, f, func(s string) (int, error) { return len(s), nil })
	if len(f.posts) != 1 || f.posts[0].body != "200000" {
		t.Errorf("posts %+v", f.posts)
	}
}
