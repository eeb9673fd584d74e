package lambda

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"nimbus.dev/lambda/lambda/messages"
)

type event struct {
	Name string `json:"name"`
}

type reply struct {
	Greeting string `json:"greeting"`
}

type myError struct{ code int }

func (e *myError) Error() string { return fmt.Sprintf("code %d", e.code) }

func invokeString(t *testing.T, handler interface{}, payload string) (string, error) {
	t.Helper()
	out, err := NewHandler(handler).Invoke(context.Background(), []byte(payload))
	return string(out), err
}

func TestEverySignatureAwsLambdaGoAccepts(t *testing.T) {
	cases := []struct {
		name    string
		handler interface{}
		want    string
	}{
		{"func()", func() {}, "null"},
		{"func() error", func() error { return nil }, "null"},
		{"func(TIn) error", func(e event) error {
			if e.Name != "ada" {
				return errors.New("bad event")
			}
			return nil
		}, "null"},
		{"func() (TOut, error)", func() (reply, error) { return reply{"hi"}, nil }, `{"greeting":"hi"}`},
		{"func(TIn) (TOut, error)", func(e event) (reply, error) { return reply{"hi " + e.Name}, nil }, `{"greeting":"hi ada"}`},
		{"func(ctx) error", func(ctx context.Context) error { return ctx.Err() }, "null"},
		{"func(ctx, TIn) error", func(_ context.Context, e event) error { return nil }, "null"},
		{"func(ctx) (TOut, error)", func(context.Context) (*reply, error) { return &reply{"p"}, nil }, `{"greeting":"p"}`},
		{"func(ctx, TIn) (TOut, error)", func(_ context.Context, e event) (map[string]int, error) {
			return map[string]int{e.Name: 1}, nil
		}, `{"ada":1}`},
		{"func(TIn) (string, error) with raw types", func(s map[string]interface{}) (string, error) {
			return "<" + s["name"].(string) + ">", nil
		}, `"<ada>"`},
	}
	for _, c := range cases {
		got, err := invokeString(t, c.handler, `{"name":"ada"}`)
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

func TestInvalidHandlersFailEveryInvocation(t *testing.T) {
	cases := map[string]interface{}{
		"handler is nil":                          nil,
		"handler kind int is not func":            42,
		"may not take more than two arguments":    func(a, b, c int) {},
		"the first is not Context":                func(a, b int) {},
		"may not return more than two values":     func() (int, int, error) { return 0, 0, nil },
		"the second does not implement error":     func() (int, int) { return 0, 0 },
		"single value, but it does not implement": func() int { return 0 },
	}
	for want, h := range cases {
		_, err := invokeString(t, h, `{}`)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error containing %q", err, want)
		}
	}
}

func TestErrorsAndDecodeFailures(t *testing.T) {
	_, err := invokeString(t, func(e event) error { return &myError{7} }, `{}`)
	if got := errorResponse(err); got.Type != "myError" || got.Message != "code 7" {
		t.Errorf("got %+v", got)
	}
	_, err = invokeString(t, func() error { return errors.New("plain") }, `{}`)
	if got := errorResponse(err); got.Type != "errorString" || got.Message != "plain" {
		t.Errorf("got %+v", got)
	}
	_, err = invokeString(t, func() error { return fmt.Errorf("wrapped: %w", &myError{1}) }, `{}`)
	if got := errorResponse(err); got.Type != "wrapError" {
		t.Errorf("got %+v", got)
	}
	_, err = invokeString(t, func() error {
		return messages.InvokeResponse_Error{Type: "Custom.Type", Message: "chosen"}
	}, `{}`)
	if got := errorResponse(err); got.Type != "Custom.Type" || got.Message != "chosen" {
		t.Errorf("got %+v", got)
	}
	_, err = invokeString(t, func(e event) error { return nil }, `{"name":5}`)
	if got := errorResponse(err); got.Type != "UnmarshalTypeError" {
		t.Errorf("got %+v", got)
	}
	_, err = invokeString(t, func(e event) error { return nil }, `not json`)
	if got := errorResponse(err); got.Type != "SyntaxError" {
		t.Errorf("got %+v", got)
	}
}

func TestEncodingOptions(t *testing.T) {
	h := func() (string, error) { return "<b>", nil }
	out, _ := NewHandler(h).Invoke(context.Background(), nil)
	if string(out) != `"<b>"` {
		t.Errorf("default: %s", out)
	}
	out, _ = NewHandlerWithOptions(h, WithSetEscapeHTML(true)).Invoke(context.Background(), nil)
	if string(out) != `"\u003cb\u003e"` {
		t.Errorf("escaped: %s", out)
	}
	out, _ = NewHandlerWithOptions(func() (map[string]int, error) { return map[string]int{"a": 1}, nil },
		WithSetIndent("", " ")).Invoke(context.Background(), nil)
	if string(out) != "{\n \"a\": 1\n}\n" {
		t.Errorf("indented: %q", out)
	}
}

type rawHandler struct{}

func (rawHandler) Invoke(_ context.Context, p []byte) ([]byte, error) { return append(p, '!'), nil }

func TestHandlerValuesAreUsedAsIs(t *testing.T) {
	got, err := invokeString(t, rawHandler{}, "raw")
	if got != "raw!" || err != nil {
		t.Errorf("got %q %v", got, err)
	}
}
