//! The workflow engine's pure core: everything about Amazon States Language state
//! machines that can be decided without I/O.
//!
//! - [`definition`]: the typed model of a state machine parsed from ASL JSON;
//! - [`validate`]: statelint-like checks at create time, returning every problem;
//! - [`path`]: reference paths, general JSONPath and `ResultPath` insertion;
//! - [`intrinsics`]: the `States.*` intrinsic functions;
//! - [`io`]: the input/output pipeline (`InputPath` → `Parameters` → `ResultSelector` →
//!   `ResultPath` → `OutputPath`);
//! - [`choice`]: Choice rule evaluation;
//! - [`jsonata`]: the JSONata query language (`{% … %}` templates, `$states`, `Arguments`,
//!   `Output`, `Assign` and workflow variables, Step Functions' added functions);
//! - [`errors`] and [`retry`]: predefined error names, Retry decisions and Catch selection;
//! - [`steps`]: Wait targets, Fail errors, Map items and failure tolerance.
//!
//! The durable executor, store, API and triggers build on this crate; it does no I/O and
//! takes randomness, the context object (`$$`, `$states.context`) and the workflow variables
//! as inputs. Both query languages are implemented, per machine and per state
//! ([`definition::QueryLanguage`]).

pub mod choice;
pub mod definition;
pub mod errors;
pub mod intrinsics;
pub mod io;
pub mod jsonata;
pub mod path;
pub mod retry;
pub mod steps;
pub mod store;
pub mod validate;

pub use errors::{Error, Result};
