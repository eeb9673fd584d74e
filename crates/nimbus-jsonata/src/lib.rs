//! A JSONata 2.x evaluator over [`serde_json::Value`], written for Nimbus's workflows
//! (Step Functions' `QueryLanguage: "JSONata"`).
//!
//! ```
//! use nimbus_jsonata::{Bindings, Expression};
//! use serde_json::json;
//!
//! let expr = Expression::parse("$sum(items.(qty * price))").unwrap();
//! let input = json!({"items": [{"qty": 2, "price": 5}, {"qty": 1, "price": 3}]});
//! assert_eq!(expr.evaluate(&input, &Bindings::new()).unwrap(), Some(json!(13)));
//! ```
//!
//! - [`Expression::parse`] tokenizes (`lexer`) and parses (`parser`, a Pratt parser) to
//!   an AST ([`ast`]) with positions; errors carry JSONata's codes ([`Error`]).
//! - [`Expression::evaluate`] runs the evaluator (`eval`) with JSONata's sequence
//!   semantics; `None` is JSONata's *undefined*.
//! - [`Bindings`] binds variables (`$states`, …), registers native functions
//!   ([`Bindings::register`]) and sets [`Limits`] (depth, steps, time) so that hostile
//!   expressions fail with `U1001` instead of hanging or overflowing the stack.
//!
//! Calls in tail position loop instead of recursing, as in JSONata, so tail-recursive
//! functions run at any depth within the step budget.
//!
//! Not implemented: function signature checking (signatures are parsed and ignored;
//! built-ins check their own arguments), `$formatInteger`/`$parseInteger` beyond
//! decimal digit pictures, exponent pictures in `$formatNumber`, week, era, word and
//! Roman-numeral components in date/time pictures (formatting and `$toMillis`),
//! custom matcher functions in place of regexes, `$clone`. Object keys of the input
//! keep serde_json's order (sorted unless its `preserve_order` feature is on); objects
//! built by expressions keep insertion order until converted back to JSON.

pub mod ast;
mod error;
mod eval;
mod functions;
mod lexer;
mod parser;
mod value;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use error::{Error, Result};
pub use functions::builtin_names;

/// A parsed JSONata expression; cheap to clone and shareable across threads.
#[derive(Clone)]
pub struct Expression {
    root: Arc<ast::Node>,
    source: Arc<str>,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expression")
            .field("source", &self.source)
            .finish()
    }
}

impl Expression {
    /// Parses an expression.
    pub fn parse(source: &str) -> Result<Expression> {
        Ok(Expression {
            root: Arc::new(parser::parse(source)?),
            source: source.into(),
        })
    }

    /// The expression's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The AST (after path processing).
    pub fn ast(&self) -> &ast::Node {
        &self.root
    }

    /// Evaluates against `input` with `bindings`; `Ok(None)` is JSONata's undefined.
    pub fn evaluate(&self, input: &Value, bindings: &Bindings) -> Result<Option<Value>> {
        self.evaluate_opt(Some(input), bindings)
    }

    /// Evaluates with an optional (undefined) input.
    pub fn evaluate_opt(
        &self,
        input: Option<&Value>,
        bindings: &Bindings,
    ) -> Result<Option<Value>> {
        self.evaluate_shared(input.map(|v| Arc::new(v.clone())), bindings)
    }

    /// Evaluates with a shared input, which is read in place rather than copied.
    pub fn evaluate_shared(
        &self,
        input: Option<Arc<Value>>,
        bindings: &Bindings,
    ) -> Result<Option<Value>> {
        let root = input
            .map(|v| value::Val::from_ref(value::JRef::root(v)))
            .unwrap_or(value::Val::Undefined);
        let mut ev = eval::Evaluator::new(bindings, root.clone());
        let input = match root {
            value::Val::Arr(..) => value::Val::Arr(
                std::rc::Rc::new(vec![root]),
                value::Flags {
                    sequence: true,
                    outer_wrapper: true,
                    ..Default::default()
                },
            ),
            v => v,
        };
        let r = ev.eval(&self.root, &input, 0)?;
        r.to_json()
    }
}

/// A native function: called with the arguments converted to JSON (`None` for
/// undefined), returns a JSON value or `None` for undefined.
#[derive(Clone)]
pub struct NativeFn {
    /// How many arguments higher-order functions (`$map`, …) pass to it.
    pub arity: usize,
    /// The implementation.
    #[allow(clippy::type_complexity)]
    pub f: Arc<dyn Fn(&[Option<Value>]) -> Result<Option<Value>> + Send + Sync>,
}

impl fmt::Debug for NativeFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeFn")
            .field("arity", &self.arity)
            .finish()
    }
}

/// Evaluation budgets.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum nesting of evaluation (`U1001` beyond).
    pub max_depth: usize,
    /// Maximum evaluation steps (nodes, calls, allocated range items; `U1001` beyond).
    pub max_steps: u64,
    /// Wall-clock budget (`U1001` beyond), checked every 1,024 steps.
    pub timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 1000,
            max_steps: 2_000_000,
            timeout: Some(Duration::from_secs(2)),
        }
    }
}

/// Variables, native functions and limits for an evaluation.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    pub(crate) vars: HashMap<String, Arc<Value>>,
    pub(crate) functions: HashMap<String, NativeFn>,
    pub(crate) limits: Limits,
}

impl Bindings {
    /// Empty bindings with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds `$name` (without the `$`) to a value.
    pub fn bind(&mut self, name: impl Into<String>, value: Value) -> &mut Self {
        self.vars.insert(name.into(), Arc::new(value));
        self
    }

    /// Binds `$name` to shared JSON without copying it: expressions read the fields
    /// they use in place (`$states.input.id` costs the same for any payload size).
    pub fn bind_shared(&mut self, name: impl Into<String>, value: Arc<Value>) -> &mut Self {
        self.vars.insert(name.into(), value);
        self
    }

    /// Builder form of [`Bindings::bind`].
    pub fn with(mut self, name: impl Into<String>, value: Value) -> Self {
        self.bind(name, value);
        self
    }

    /// Registers a native function `$name`; it shadows a built-in of the same name.
    pub fn register<F>(&mut self, name: impl Into<String>, arity: usize, f: F) -> &mut Self
    where
        F: Fn(&[Option<Value>]) -> Result<Option<Value>> + Send + Sync + 'static,
    {
        self.functions.insert(
            name.into(),
            NativeFn {
                arity,
                f: Arc::new(f),
            },
        );
        self
    }

    /// Sets the evaluation limits.
    pub fn set_limits(&mut self, limits: Limits) -> &mut Self {
        self.limits = limits;
        self
    }

    /// The evaluation limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}
