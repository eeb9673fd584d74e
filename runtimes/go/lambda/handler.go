package lambda

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Handler is the raw form of a handler: the event bytes in, the response bytes out.
type Handler interface {
	Invoke(ctx context.Context, payload []byte) ([]byte, error)
}

// Option configures StartWithOptions and NewHandlerWithOptions.
type Option func(*handlerOptions)

type handlerOptions struct {
	Handler
	baseContext     context.Context
	escapeHTML      bool
	indentPrefix    string
	indent          string
	sigtermHandlers []func()
}

// WithContext makes ctx the parent of every invocation's context.
func WithContext(ctx context.Context) Option {
	return func(h *handlerOptions) { h.baseContext = ctx }
}

// WithSetEscapeHTML sets SetEscapeHTML on the response's JSON encoder (default false).
func WithSetEscapeHTML(escapeHTML bool) Option {
	return func(h *handlerOptions) { h.escapeHTML = escapeHTML }
}

// WithSetIndent sets SetIndent on the response's JSON encoder.
func WithSetIndent(prefix, indent string) Option {
	return func(h *handlerOptions) { h.indentPrefix, h.indent = prefix, indent }
}

// WithEnableSIGTERM runs the given functions when the process receives SIGTERM, then
// exits.
func WithEnableSIGTERM(funcs ...func()) Option {
	return func(h *handlerOptions) { h.sigtermHandlers = append(h.sigtermHandlers, funcs...) }
}

// NewHandler wraps a handler function (see Start for the accepted shapes) as a Handler
// that decodes the event and encodes the result as JSON.
func NewHandler(handlerFunc interface{}) Handler {
	return NewHandlerWithOptions(handlerFunc)
}

// NewHandlerWithOptions is NewHandler with options.
func NewHandlerWithOptions(handlerFunc interface{}, options ...Option) Handler {
	return newHandler(handlerFunc, options...)
}

func newHandler(handlerFunc interface{}, options ...Option) *handlerOptions {
	if h, ok := handlerFunc.(*handlerOptions); ok {
		return h
	}
	h := &handlerOptions{baseContext: context.Background()}
	for _, o := range options {
		o(h)
	}
	h.Handler = reflectHandler(handlerFunc, h)
	return h
}

type bytesHandlerFunc func(context.Context, []byte) ([]byte, error)

func (f bytesHandlerFunc) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	return f(ctx, payload)
}

// errorHandler fails every invocation with err (an invalid handler).
func errorHandler(err error) Handler {
	return bytesHandlerFunc(func(context.Context, []byte) ([]byte, error) { return nil, err })
}

var (
	contextType = reflect.TypeOf((*context.Context)(nil)).Elem()
	errorType   = reflect.TypeOf((*error)(nil)).Elem()
)

// checkSignature validates a handler's type; it reports whether the first argument is
// the context and the type of the event argument (nil without one).
func checkSignature(t reflect.Type) (takesContext bool, event reflect.Type, err error) {
	switch n := t.NumIn(); {
	case n > 2:
		return false, nil, fmt.Errorf("handlers may not take more than two arguments, but handler takes %d", n)
	case n == 2:
		if !t.In(0).Implements(contextType) {
			return false, nil, fmt.Errorf("handler takes two arguments, but the first is not Context. got %s", t.In(0).Kind())
		}
		takesContext, event = true, t.In(1)
	case n == 1:
		if t.In(0).Implements(contextType) {
			takesContext = true
		} else {
			event = t.In(0)
		}
	}
	switch n := t.NumOut(); {
	case n > 2:
		return false, nil, errors.New("handler may not return more than two values")
	case n == 2:
		if !t.Out(1).Implements(errorType) {
			return false, nil, errors.New("handler returns two values, but the second does not implement error")
		}
	case n == 1:
		if !t.Out(0).Implements(errorType) {
			return false, nil, errors.New("handler returns a single value, but it does not implement error")
		}
	}
	return takesContext, event, nil
}

func reflectHandler(handlerFunc interface{}, h *handlerOptions) Handler {
	if handlerFunc == nil {
		return errorHandler(errors.New("handler is nil"))
	}
	if handler, ok := handlerFunc.(Handler); ok {
		return handler
	}
	fn := reflect.ValueOf(handlerFunc)
	t := fn.Type()
	if t.Kind() != reflect.Func {
		return errorHandler(fmt.Errorf("handler kind %s is not %s", t.Kind(), reflect.Func))
	}
	takesContext, eventType, err := checkSignature(t)
	if err != nil {
		return errorHandler(err)
	}
	return bytesHandlerFunc(func(ctx context.Context, payload []byte) ([]byte, error) {
		args := make([]reflect.Value, 0, 2)
		if takesContext {
			args = append(args, reflect.ValueOf(ctx))
		}
		if eventType != nil {
			event := reflect.New(eventType)
			if err := json.NewDecoder(bytes.NewReader(payload)).Decode(event.Interface()); err != nil {
				return nil, err
			}
			args = append(args, event.Elem())
		}
		results := fn.Call(args)
		if n := len(results); n > 0 {
			if err, ok := results[n-1].Interface().(error); ok && err != nil {
				return nil, err
			}
		}
		var out interface{}
		if len(results) == 2 {
			out = results[0].Interface()
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(h.escapeHTML)
		enc.SetIndent(h.indentPrefix, h.indent)
		if err := enc.Encode(out); err != nil {
			return nil, err
		}
		b := buf.Bytes()
		if h.indentPrefix == "" && h.indent == "" {
			b = b[:len(b)-1] // the encoder's newline
		}
		return b, nil
	})
}
