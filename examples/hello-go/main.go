// A Lambda-style Go handler: answers API Gateway HTTP API v2 / function URL events.
// With aws-lambda-go the imports would read github.com/aws/aws-lambda-go/...; nothing
// else changes.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"nimbus.dev/lambda/events"
	"nimbus.dev/lambda/lambda"
	"nimbus.dev/lambda/lambdacontext"
)

func handler(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	name := req.PathParameters["name"]
	if name == "" {
		name = req.QueryStringParameters["name"]
	}
	if name == "" {
		name = "world"
	}
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "Hello"
	}
	log.Printf("greeting %s", name)
	lc, _ := lambdacontext.FromContext(ctx)
	deadline, _ := ctx.Deadline()
	body, err := json.Marshal(map[string]interface{}{
		"message":     fmt.Sprintf("%s, %s from Go!", greeting, name),
		"path":        req.RawPath,
		"method":      req.RequestContext.HTTP.Method,
		"requestId":   lc.AwsRequestID,
		"function":    lambdacontext.FunctionName + ":" + lambdacontext.FunctionVersion,
		"remainingMs": time.Until(deadline).Milliseconds(),
	})
	if err != nil {
		return events.APIGatewayV2HTTPResponse{}, err
	}
	return events.APIGatewayV2HTTPResponse{
		StatusCode: 200,
		Headers:    map[string]string{"content-type": "application/json"},
		Body:       string(body),
	}, nil
}

func main() {
	lambda.Start(handler)
}
