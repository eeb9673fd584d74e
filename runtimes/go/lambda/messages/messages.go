// Package messages holds the error shape the runtime posts to Lambda's Runtime API, like
// github.com/aws/aws-lambda-go/lambda/messages. A handler can return an
// InvokeResponse_Error to choose the errorType the caller sees.
package messages

import "fmt"

//nolint:revive,stylecheck // the names match aws-lambda-go
type InvokeResponse_Error struct {
	Message    string                             `json:"errorMessage"`
	Type       string                             `json:"errorType"`
	StackTrace []*InvokeResponse_Error_StackFrame `json:"stackTrace,omitempty"`
	// ShouldExit makes the runtime exit after reporting the error (set for panics).
	ShouldExit bool `json:"-"`
}

func (e InvokeResponse_Error) Error() string {
	return fmt.Sprintf("%#v", e)
}

//nolint:revive,stylecheck // the names match aws-lambda-go
type InvokeResponse_Error_StackFrame struct {
	Path  string `json:"path"`
	Line  int32  `json:"line"`
	Label string `json:"label"`
}
