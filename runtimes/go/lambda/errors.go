package lambda

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"strings"

	"nimbus.dev/lambda/lambda/messages"
)

// typeName is the errorType of an error or panic value: the name of its type, through
// one pointer (errors.New gives "errorString", a *MyError gives "MyError"), as
// aws-lambda-go reports it.
func typeName(v interface{}) string {
	t := reflect.TypeOf(v)
	if t == nil {
		return ""
	}
	if t.Kind() == reflect.Ptr {
		return t.Elem().Name()
	}
	return t.Name()
}

// errorResponse is the error a handler returned, as posted to /error. A returned
// messages.InvokeResponse_Error is posted as it is.
func errorResponse(err error) *messages.InvokeResponse_Error {
	if e, ok := err.(messages.InvokeResponse_Error); ok {
		return &e
	}
	return &messages.InvokeResponse_Error{Message: err.Error(), Type: typeName(err)}
}

// panicResponse is a recovered panic as posted to /error: the value's text and type and
// the stack where it happened; the runtime exits afterwards.
func panicResponse(v interface{}) *messages.InvokeResponse_Error {
	if e, ok := v.(messages.InvokeResponse_Error); ok {
		return &e
	}
	return &messages.InvokeResponse_Error{
		Message:    fmt.Sprintf("%v", v),
		Type:       typeName(v),
		StackTrace: panicStack(),
		ShouldExit: true,
	}
}

const maxStackFrames = 32

// panicStack is the stack of the panicking goroutine from the frame that panicked down
// to the handler: called from the deferred recover, it skips the runtime's panic
// machinery above and leaves out this package's invoke frames (and the reflection that
// called the handler function) below.
func panicStack() []*messages.InvokeResponse_Error_StackFrame {
	pcs := make([]uintptr, 128)
	n := runtime.Callers(1, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var out []*messages.InvokeResponse_Error_StackFrame
	var funcs []string
	inPanic, inUser := false, false
	for more := true; more; {
		var f runtime.Frame
		f, more = frames.Next()
		switch {
		case !inPanic:
			inPanic = f.Function == "runtime.gopanic"
		case !inUser && strings.HasPrefix(f.Function, "runtime."):
			// runtime.panicmem, runtime.sigpanic, … between gopanic and the culprit
		case isInvokeFrame(f.Function):
			more = false
		default:
			inUser = true
			out = append(out, stackFrame(f))
			funcs = append(funcs, f.Function)
		}
	}
	for len(funcs) > 0 && strings.HasPrefix(funcs[len(funcs)-1], "reflect.") {
		funcs, out = funcs[:len(funcs)-1], out[:len(out)-1]
	}
	if len(out) > maxStackFrames {
		out = out[:maxStackFrames]
	}
	return out
}

var thisPackage = reflect.TypeOf(handlerOptions{}).PkgPath() + "."

// isInvokeFrame tells the frames of this package that call the handler.
func isInvokeFrame(function string) bool {
	rest := strings.TrimPrefix(function, thisPackage)
	return rest != function && (strings.HasPrefix(rest, "callHandler") ||
		strings.HasPrefix(rest, "bytesHandlerFunc") || strings.HasPrefix(rest, "reflectHandler"))
}

// stackFrame shortens the frame's file to the package's directory and file name and its
// function to the name inside the package.
func stackFrame(f runtime.Frame) *messages.InvokeResponse_Error_StackFrame {
	label := f.Function
	pkgDirs := strings.Count(label, "/")
	if i := strings.LastIndex(label, "/"); i >= 0 {
		label = label[i+1:]
	}
	if i := strings.Index(label, "."); i >= 0 {
		label = label[i+1:]
	}
	path := f.File
	// keep as many trailing path elements as the package path has, plus the file
	cut := len(path)
	for k := 0; k < pkgDirs+2 && cut > 0; k++ {
		cut = strings.LastIndex(path[:cut], "/")
	}
	if cut >= 0 {
		path = path[cut+1:]
	}
	return &messages.InvokeResponse_Error_StackFrame{Path: path, Line: int32(f.Line), Label: label}
}

// marshalError encodes an error message; one that cannot be encoded becomes a
// Runtime.SerializationError.
func marshalError(e *messages.InvokeResponse_Error) []byte {
	b, err := json.Marshal(e)
	if err != nil {
		b, _ = json.Marshal(&messages.InvokeResponse_Error{Type: "Runtime.SerializationError", Message: err.Error()})
	}
	return b
}
