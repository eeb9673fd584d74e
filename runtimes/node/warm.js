'use strict';
// Loaded and invoked by a Node stem cell before it is specialised (bootstrap.js, warmUp):
// the handler loading path (resolution, package.json scope, CommonJS compile) and the
// invocation path (context, console, result) are then compiled before a real handler takes
// them. Nothing it logs is written.
exports.handler = async (event, context) => {
  console.log('warm %s', event.warm);
  return { warm: true, remainingMs: context.getRemainingTimeInMillis() };
};
