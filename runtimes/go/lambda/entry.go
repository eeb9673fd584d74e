// Package lambda runs a Go function under Nimbus (or AWS Lambda): Start takes the
// handler and serves invocations from the Runtime API at $AWS_LAMBDA_RUNTIME_API until
// the process is stopped. It has the shape of github.com/aws/aws-lambda-go/lambda, so
// existing handlers compile with only the import path changed; it uses the standard
// library only.
package lambda

import (
	"context"
	"errors"
	"log"
	"os"
	"syscall"
)

// Start runs handler for every invocation and never returns.
//
// handler must be a function that takes between zero and two arguments and returns
// between zero and two values:
//
//	func ()
//	func () error
//	func (TIn) error
//	func () (TOut, error)
//	func (TIn) (TOut, error)
//	func (context.Context) error
//	func (context.Context, TIn) error
//	func (context.Context) (TOut, error)
//	func (context.Context, TIn) (TOut, error)
//
// With two arguments the first must be a context.Context; with two results the second
// must be an error, and a single result must be an error. The event is decoded into TIn
// and TOut is encoded with encoding/json. A value implementing Handler is used as is.
// An invalid handler makes every invocation fail with the reason.
func Start(handler interface{}) {
	StartWithOptions(handler)
}

// StartWithOptions is Start with options (WithContext, WithSetEscapeHTML, …).
func StartWithOptions(handler interface{}, options ...Option) {
	start(newHandler(handler, options...))
}

// StartWithContext is Start with ctx as the parent of every invocation's context.
//
// Deprecated: use StartWithOptions(handler, WithContext(ctx)).
func StartWithContext(ctx context.Context, handler interface{}) {
	StartWithOptions(handler, WithContext(ctx))
}

// StartHandler runs a Handler.
//
// Deprecated: use Start, which also accepts a Handler.
func StartHandler(handler Handler) {
	StartWithOptions(handler)
}

// StartHandlerWithContext runs a Handler with ctx as the parent context.
//
// Deprecated: use StartWithOptions(handler, WithContext(ctx)).
func StartHandlerWithContext(ctx context.Context, handler Handler) {
	StartWithOptions(handler, WithContext(ctx))
}

// HandlerFunc is the type constraint of StartHandlerFunc.
type HandlerFunc[TIn, TOut any] interface {
	func(context.Context, TIn) (TOut, error)
}

// StartHandlerFunc is Start for a handler of the exact type
// func(context.Context, TIn) (TOut, error), checked at compile time.
func StartHandlerFunc[TIn any, TOut any, H HandlerFunc[TIn, TOut]](handler H, options ...Option) {
	StartWithOptions(handler, options...)
}

// The test suite replaces these to run Start in-process.
var (
	logFatal = log.Fatal
	getenv   = os.Getenv
	execSelf = reexec
)

func start(h *handlerOptions) {
	api := getenv("AWS_LAMBDA_RUNTIME_API")
	if api == "" {
		logFatal("expected AWS Lambda environment variable AWS_LAMBDA_RUNTIME_API is not defined: run this program as a Lambda or Nimbus function")
		return
	}
	if len(h.sigtermHandlers) > 0 {
		enableSIGTERM(h.sigtermHandlers)
	}
	err := runLoop(api, h)
	if errors.Is(err, errPanicked) {
		// aws-lambda-go exits here and Lambda starts the next invocation in a freshly
		// initialized runtime. Replacing the process image gives the same fresh start
		// without the platform having to notice an exit between invocations.
		log.Printf("restarting the runtime after a panic")
		err = execSelf()
		log.Printf("cannot restart the runtime: %v", err)
	}
	logFatal(err)
}

// reexec replaces the process with a new run of the same executable; it returns only on
// failure.
func reexec() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return syscall.Exec(exe, os.Args, os.Environ())
}
