package lambda

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"time"

	"nimbus.dev/lambda/lambda/messages"
	"nimbus.dev/lambda/lambdacontext"
)

// errPanicked ends the loop after a handler panicked (and the error was reported).
var errPanicked = errors.New("calling the handler function resulted in a panic, the process should exit")

// runLoop serves invocations until one cannot be completed (the Runtime API refused a
// call or went away) or the handler panicked; it returns why.
func runLoop(address string, h *handlerOptions) error {
	c := newClient(address)
	for {
		inv, err := c.next()
		if err != nil {
			return err
		}
		if err := handleInvoke(c, inv, h); err != nil {
			return err
		}
	}
}

// handleInvoke runs one invocation and posts its outcome. It returns an error when the
// process should exit: a post failed or the handler panicked.
func handleInvoke(c *client, inv *invoke, h *handlerOptions) error {
	deadline, err := parseDeadline(inv.headers.Get(headerDeadlineMS))
	if err != nil {
		return reportFailure(c, inv, errorResponse(err))
	}
	ctx, cancel := context.WithDeadline(h.baseContext, deadline)
	defer cancel()

	lc := lambdacontext.LambdaContext{
		AwsRequestID:       inv.id,
		InvokedFunctionArn: inv.headers.Get(headerInvokedFunctionARN),
		TenantID:           inv.headers.Get(headerTenantID),
	}
	if s := inv.headers.Get(headerClientContext); s != "" {
		if err := json.Unmarshal([]byte(s), &lc.ClientContext); err != nil {
			return reportFailure(c, inv, errorResponse(fmt.Errorf("failed to unmarshal client context json: %v", err)))
		}
	}
	if s := inv.headers.Get(headerCognitoIdentity); s != "" {
		if err := json.Unmarshal([]byte(s), &lc.Identity); err != nil {
			return reportFailure(c, inv, errorResponse(fmt.Errorf("failed to unmarshal cognito identity json: %v", err)))
		}
	}
	ctx = lambdacontext.NewContext(ctx, &lc)

	traceID := inv.headers.Get(headerTraceID)
	os.Setenv("_X_AMZN_TRACE_ID", traceID)
	//nolint:staticcheck // the string key is what aws-lambda-go uses
	ctx = context.WithValue(ctx, "x-amzn-trace-id", traceID)

	response, invokeErr := callHandler(ctx, inv.payload, h.Handler)
	if invokeErr != nil {
		if err := reportFailure(c, inv, invokeErr); err != nil {
			return err
		}
		if invokeErr.ShouldExit {
			return errPanicked
		}
		return nil
	}
	if err := c.success(inv.id, response); err != nil {
		return fmt.Errorf("unexpected error occurred when sending the function response to the API: %v", err)
	}
	return nil
}

// callHandler runs the handler and turns a returned error or a panic into the error
// message to post.
func callHandler(ctx context.Context, payload []byte, h Handler) (response []byte, invokeErr *messages.InvokeResponse_Error) {
	defer func() {
		if v := recover(); v != nil {
			invokeErr = panicResponse(v)
		}
	}()
	response, err := h.Invoke(ctx, payload)
	if err != nil {
		return nil, errorResponse(err)
	}
	return response, nil
}

func reportFailure(c *client, inv *invoke, invokeErr *messages.InvokeResponse_Error) error {
	payload := marshalError(invokeErr)
	log.Printf("%s", payload)
	// After a panic the process exits: no next invocation is asked for.
	if err := c.failure(inv.id, payload, !invokeErr.ShouldExit); err != nil {
		return fmt.Errorf("unexpected error occurred when sending the function error to the API: %v", err)
	}
	return nil
}

func parseDeadline(header string) (time.Time, error) {
	ms, err := strconv.ParseInt(header, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("failed to parse deadline: %v", err)
	}
	return time.Unix(ms/1000, (ms%1000)*int64(time.Millisecond)), nil
}
