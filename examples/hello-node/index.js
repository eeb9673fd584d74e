// A Lambda-style Node.js handler: answers API Gateway HTTP API v2 / function URL events.
exports.handler = async (event, context) => {
  const name = event.pathParameters?.name ?? event.queryStringParameters?.name ?? 'world';
  const greeting = process.env.GREETING || 'Hello';
  console.log(`greeting ${name}`);
  return {
    statusCode: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      message: `${greeting}, ${name} from Node.js!`,
      path: event.rawPath ?? null,
      method: event.requestContext?.http?.method ?? null,
      requestId: context.awsRequestId,
      function: `${context.functionName}:${context.functionVersion}`,
      remainingMs: context.getRemainingTimeInMillis(),
    }),
  };
};
