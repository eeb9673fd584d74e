// Imported by a Node stem cell before it is specialised (bootstrap.js, warmUp): the ES module
// loader is set up (~6 ms) before a function whose handler is an ES module needs it.
export const handler = async () => ({ warm: true });
