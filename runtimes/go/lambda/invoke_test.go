package lambda

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"nimbus.dev/lambda/lambdacontext"
)

// fakeAPI is a Runtime API that hands out queued events, records the posts, and answers
// next with 410 once the queue is empty so that runLoop returns.
type fakeAPI struct {
	mu         sync.Mutex
	events     []string
	headers    []map[string]string
	posts      []post
	postStatus int
	gets       int // GET next requests
}

type post struct {
	path, contentType, body string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method == http.MethodGet && r.URL.Path == "/2018-06-01/runtime/invocation/next" {
		f.gets++
		f.serveNext(w)
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.posts = append(f.posts, post{r.URL.Path, r.Header.Get("Content-Type"), string(body)})
	status := f.postStatus
	if status == 0 && r.Header.Get("Nimbus-Runtime-Next") != "" {
		// Nimbus's Runtime API: an accepted post that asks is answered with the next event.
		f.serveNext(w)
		return
	}
	if status == 0 {
		status = http.StatusAccepted
	}
	w.WriteHeader(status)
	io.WriteString(w, `{"status":"OK"}`)
}

func (f *fakeAPI) serveNext(w http.ResponseWriter) {
	if len(f.events) == 0 {
		w.WriteHeader(http.StatusGone)
		return
	}
	n := len(f.posts)
	w.Header().Set("Lambda-Runtime-Aws-Request-Id", "req-"+strconv.Itoa(n))
	w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(2*time.Second).UnixMilli(), 10))
	w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:f")
	w.Header().Set("Lambda-Runtime-Trace-Id", "Root=1-abc")
	w.Header().Set("Content-Type", "application/json")
	if len(f.headers) > 0 {
		for k, v := range f.headers[0] {
			w.Header().Set(k, v)
		}
		f.headers = f.headers[1:]
	}
	io.WriteString(w, f.events[0])
	f.events = f.events[1:]
}

func run(t *testing.T, f *fakeAPI, handler interface{}) error {
	t.Helper()
	srv := httptest.NewServer(f)
	defer srv.Close()
	return runLoop(strings.TrimPrefix(srv.URL, "http://"), newHandler(handler))
}

func TestLoopPostsResultsAndErrors(t *testing.T) {
	f := &fakeAPI{events: []string{`{"name":"ada"}`, `{"name":""}`, `{"name":"bob"}`}}
	err := run(t, f, func(ctx context.Context, e event) (reply, error) {
		if e.Name == "" {
			return reply{}, errors.New("no name")
		}
		lc, _ := lambdacontext.FromContext(ctx)
		return reply{e.Name + " " + lc.AwsRequestID}, nil
	})
	if err == nil || !strings.Contains(err.Error(), "410") {
		t.Fatalf("the loop ends on a non-200 next: %v", err)
	}
	if f.gets != 1 {
		t.Errorf("each post's answer is the next event: %d GET next, want 1", f.gets)
	}
	want := []post{
		{"/2018-06-01/runtime/invocation/req-0/response", "application/json", `{"greeting":"ada req-0"}`},
		{"/2018-06-01/runtime/invocation/req-1/error", "application/json", `{"errorMessage":"no name","errorType":"errorString"}`},
		{"/2018-06-01/runtime/invocation/req-2/response", "application/json", `{"greeting":"bob req-2"}`},
	}
	if len(f.posts) != len(want) {
		t.Fatalf("posts: %+v", f.posts)
	}
	for i := range want {
		if f.posts[i] != want[i] {
			t.Errorf("post %d: got %+v want %+v", i, f.posts[i], want[i])
		}
	}
}

func TestContextCarriesDeadlineAndMetadata(t *testing.T) {
	f := &fakeAPI{
		events: []string{`{}`},
		headers: []map[string]string{{
			"Lambda-Runtime-Client-Context":   `{"Client":{"app_title":"t"},"custom":{"k":"v","n":{"x":1}}}`,
			"Lambda-Runtime-Cognito-Identity": `{"cognitoIdentityId":"id1","cognitoIdentityPoolId":"pool"}`,
		}},
	}
	var got map[string]interface{}
	run(t, f, func(ctx context.Context) (map[string]interface{}, error) {
		deadline, ok := ctx.Deadline()
		lc, _ := lambdacontext.FromContext(ctx)
		got = map[string]interface{}{
			"hasDeadline": ok,
			"left":        time.Until(deadline).Milliseconds(),
			"arn":         lc.InvokedFunctionArn,
			"app":         lc.ClientContext.Client.AppTitle,
			"custom":      lc.ClientContext.Custom["n"],
			"cognito":     lc.Identity.CognitoIdentityID,
			"trace":       ctx.Value("x-amzn-trace-id"),
		}
		return got, nil
	})
	if got["hasDeadline"] != true || got["left"].(int64) <= 0 || got["left"].(int64) > 2000 {
		t.Errorf("deadline: %v", got)
	}
	if got["arn"] != "arn:aws:lambda:us-east-1:000000000000:function:f" || got["app"] != "t" ||
		got["custom"] != `{"x":1}` || got["cognito"] != "id1" || got["trace"] != "Root=1-abc" {
		t.Errorf("context: %v", got)
	}
	if len(f.posts) != 1 || !strings.HasSuffix(f.posts[0].path, "/response") {
		t.Errorf("posts: %+v", f.posts)
	}
}

func TestBadDeadlineOrClientContextFailsTheInvocationOnly(t *testing.T) {
	f := &fakeAPI{
		events:  []string{`{}`, `{}`, `{}`},
		headers: []map[string]string{{"Lambda-Runtime-Deadline-Ms": "soon"}, {"Lambda-Runtime-Client-Context": "{"}},
	}
	run(t, f, func() (string, error) { return "ok", nil })
	if len(f.posts) != 3 || !strings.Contains(f.posts[0].body, "failed to parse deadline") ||
		!strings.Contains(f.posts[1].body, "client context") || f.posts[2].body != `"ok"` {
		t.Errorf("posts: %+v", f.posts)
	}
}

func panicky(kind string) {
	switch kind {
	case "string":
		panic("boom")
	case "nil":
		var m map[string]int
		var p *struct{ x int }
		m["a"] = p.x
	}
}

func TestPanicIsReportedThenTheLoopStops(t *testing.T) {
	for _, kind := range []string{"string", "nil"} {
		f := &fakeAPI{events: []string{`"` + kind + `"`, `"never"`}}
		err := run(t, f, func(k string) error { panicky(k); return nil })
		if err != errPanicked {
			t.Fatalf("%s: got %v", kind, err)
		}
		if len(f.posts) != 1 || !strings.HasSuffix(f.posts[0].path, "/error") {
			t.Fatalf("%s: posts %+v", kind, f.posts)
		}
		var body struct {
			Message string `json:"errorMessage"`
			Type    string `json:"errorType"`
			Stack   []struct {
				Path  string `json:"path"`
				Line  int    `json:"line"`
				Label string `json:"label"`
			} `json:"stackTrace"`
		}
		if err := json.Unmarshal([]byte(f.posts[0].body), &body); err != nil {
			t.Fatal(err)
		}
		if kind == "string" && (body.Type != "string" || body.Message != "boom") {
			t.Errorf("%+v", body)
		}
		if kind == "nil" && (body.Type != "errorString" || !strings.Contains(body.Message, "nil pointer dereference")) {
			t.Errorf("%+v", body)
		}
		if len(body.Stack) < 2 || body.Stack[0].Label != "panicky" || !strings.HasSuffix(body.Stack[0].Path, "lambda/invoke_test.go") {
			t.Errorf("%s: stack %+v", kind, body.Stack)
		}
		for _, fr := range body.Stack {
			if strings.HasPrefix(fr.Label, "callHandler") || strings.HasPrefix(fr.Label, "gopanic") {
				t.Errorf("frame %+v should be hidden", fr)
			}
		}
	}
}

func TestRefusedPostStopsTheLoop(t *testing.T) {
	f := &fakeAPI{events: []string{`{}`, `{}`}, postStatus: http.StatusOK}
	err := run(t, f, func() error { return nil })
	if err == nil || !strings.Contains(err.Error(), "unexpected status code: 200") || len(f.posts) != 1 {
		t.Errorf("got %v, posts %+v", err, f.posts)
	}
}

func TestStartRestartsAfterAPanic(t *testing.T) {
	defer func(f func(...interface{}), g func(string) string, e func() error) {
		logFatal, getenv, execSelf = f, g, e
	}(logFatal, getenv, execSelf)
	f := &fakeAPI{events: []string{`{}`, `{}`}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	var fatal []interface{}
	restarted := 0
	logFatal = func(v ...interface{}) { fatal = v }
	getenv = func(string) string { return strings.TrimPrefix(srv.URL, "http://") }
	execSelf = func() error { restarted++; return errors.New("exec refused") }
	Start(func() error { panic("boom") })
	if restarted != 1 || len(f.posts) != 1 {
		t.Errorf("restarted %d times after %d posts", restarted, len(f.posts))
	}
	if len(fatal) != 1 || fatal[0].(error).Error() != "exec refused" {
		t.Errorf("exits when the restart fails: %v", fatal)
	}
}

func TestStartNeedsTheRuntimeAPI(t *testing.T) {
	defer func(f func(...interface{}), g func(string) string) { logFatal, getenv = f, g }(logFatal, getenv)
	var fatal []interface{}
	logFatal = func(v ...interface{}) { fatal = v }
	getenv = func(string) string { return "" }
	Start(func() {})
	if len(fatal) != 1 || !strings.Contains(fatal[0].(string), "AWS_LAMBDA_RUNTIME_API") {
		t.Errorf("got %v", fatal)
	}
}
