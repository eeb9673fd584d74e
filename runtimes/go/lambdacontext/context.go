// Package lambdacontext gives handlers the metadata of the function and of the current
// invocation, like github.com/aws/aws-lambda-go/lambdacontext: the package variables
// describe the function (read from Lambda's environment at start), and FromContext
// returns the per-invocation LambdaContext that lambda.Start puts into the handler's
// context.Context.
package lambdacontext

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
)

// LogGroupName is the log group of the function ($AWS_LAMBDA_LOG_GROUP_NAME).
var LogGroupName string

// LogStreamName is the log stream of this instance ($AWS_LAMBDA_LOG_STREAM_NAME).
var LogStreamName string

// FunctionName is the name of the function ($AWS_LAMBDA_FUNCTION_NAME).
var FunctionName string

// MemoryLimitInMB is the configured memory limit ($AWS_LAMBDA_FUNCTION_MEMORY_SIZE),
// 0 when it is not set.
var MemoryLimitInMB int

// FunctionVersion is the version that runs ($AWS_LAMBDA_FUNCTION_VERSION), e.g. $LATEST.
var FunctionVersion string

func init() {
	LogGroupName = os.Getenv("AWS_LAMBDA_LOG_GROUP_NAME")
	LogStreamName = os.Getenv("AWS_LAMBDA_LOG_STREAM_NAME")
	FunctionName = os.Getenv("AWS_LAMBDA_FUNCTION_NAME")
	MemoryLimitInMB, _ = strconv.Atoi(os.Getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"))
	FunctionVersion = os.Getenv("AWS_LAMBDA_FUNCTION_VERSION")
}

// ClientApplication describes the calling application (from the client context).
type ClientApplication struct {
	InstallationID string `json:"installation_id"`
	AppTitle       string `json:"app_title"`
	AppVersionCode string `json:"app_version_code"`
	AppPackageName string `json:"app_package_name"`
}

// ClientContext is what the caller passed in X-Amz-Client-Context.
type ClientContext struct {
	Client ClientApplication
	Env    map[string]string `json:"env"`
	Custom map[string]string `json:"custom"`
}

// UnmarshalJSON accepts non-string values in "custom" and keeps them as JSON text.
func (cc *ClientContext) UnmarshalJSON(data []byte) error {
	var raw struct {
		Client ClientApplication          `json:"Client"`
		Env    map[string]string          `json:"env"`
		Custom map[string]json.RawMessage `json:"custom"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	cc.Client, cc.Env, cc.Custom = raw.Client, raw.Env, nil
	if raw.Custom != nil {
		cc.Custom = make(map[string]string, len(raw.Custom))
		for k, v := range raw.Custom {
			var s string
			if json.Unmarshal(v, &s) == nil {
				cc.Custom[k] = s
			} else {
				cc.Custom[k] = string(v)
			}
		}
	}
	return nil
}

// CognitoIdentity is the Cognito identity of the caller, when there is one.
type CognitoIdentity struct {
	CognitoIdentityID     string
	CognitoIdentityPoolID string
}

// LambdaContext is the metadata of one invocation.
type LambdaContext struct {
	AwsRequestID       string
	InvokedFunctionArn string
	Identity           CognitoIdentity
	ClientContext      ClientContext
	TenantID           string `json:",omitempty"`
}

type key struct{}

// NewContext returns a copy of parent that carries lc.
func NewContext(parent context.Context, lc *LambdaContext) context.Context {
	return context.WithValue(parent, key{}, lc)
}

// FromContext returns the LambdaContext in ctx, if there is one.
func FromContext(ctx context.Context) (*LambdaContext, bool) {
	lc, ok := ctx.Value(key{}).(*LambdaContext)
	return lc, ok
}
