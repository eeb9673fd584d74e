// One connection pool per function instance, made at the first invocation and reused by
// the next ones (an instance serves one invocation at a time, so one connection is enough).
const { Pool } = require("pg");

let pool;

exports.pool = () => {
  if (!pool) {
    pool = new Pool({
      connectionString: process.env.DATABASE_URL,
      max: 1,
      idleTimeoutMillis: 60_000,
      connectionTimeoutMillis: 5_000,
    });
    // A connection the server closed while idle is dropped from the pool; the next query
    // opens another.
    pool.on("error", (e) => console.log(`idle PostgreSQL connection lost: ${e.message}`));
  }
  return pool;
};
