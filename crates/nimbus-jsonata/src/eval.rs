//! The evaluator: JSONata's sequence semantics over [`Val`], environments in an arena,
//! closures, and the depth, step and time budgets.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use indexmap::IndexMap;

use crate::ast::{BinOp, Group, Kind, Node, SortTerm, Stage};
use crate::error::{Error, Result};
use crate::functions;
use crate::value::{
    deep_equal, materialize, stringify, truthy, Flags, Func, JRef, Obj, Tuple, Val,
};
use crate::{Bindings, Limits};

/// Stack left before growing onto a new segment.
const RED_ZONE: usize = 256 * 1024;
/// Size of each new stack segment.
const STACK_SEGMENT: usize = 4 * 1024 * 1024;

struct Frame {
    vars: HashMap<String, Val>,
    parent: Option<usize>,
}

/// One evaluation's state.
pub(crate) struct Evaluator<'b> {
    frames: Vec<Frame>,
    pub bindings: &'b Bindings,
    limits: Limits,
    depth: usize,
    steps: u64,
    started: Instant,
    /// Milliseconds since the epoch at the start of the evaluation (`$now`, `$millis`).
    pub now_millis: i64,
    /// The context of the built-in being called (`$eval`'s default input).
    pub ctx_input: Val,
    /// The highest frame a closure captured: frames above it are freed after calls.
    max_captured: usize,
}

/// A call's outcome: a value, or a function to apply (a pending tail call).
enum Callee {
    Ready(Val),
    Apply(Rc<Func>, Vec<Val>),
}

impl<'b> Evaluator<'b> {
    pub fn new(bindings: &'b Bindings, root: Val) -> Self {
        let mut vars = HashMap::new();
        vars.insert("$".to_string(), root);
        let now_millis =
            (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        Evaluator {
            frames: vec![Frame { vars, parent: None }],
            bindings,
            limits: bindings.limits.clone(),
            depth: 0,
            steps: 0,
            started: Instant::now(),
            now_millis,
            ctx_input: Val::Undefined,
            max_captured: 0,
        }
    }

    /// Counts a step against the budget and checks the clock now and then.
    pub fn tick(&mut self, cost: u64, pos: usize) -> Result<()> {
        let before = self.steps;
        self.steps = self.steps.saturating_add(cost);
        if self.steps > self.limits.max_steps {
            return Err(Error::at(
                "U1001",
                pos,
                "Expression evaluation exceeded its step budget",
            ));
        }
        if let Some(t) = self.limits.timeout {
            if before >> 10 != self.steps >> 10 && self.started.elapsed() > t {
                return Err(Error::at(
                    "U1001",
                    pos,
                    "Expression evaluation timeout: check for an infinite loop",
                ));
            }
        }
        Ok(())
    }

    fn new_frame(&mut self, parent: usize) -> usize {
        self.frames.push(Frame {
            vars: HashMap::new(),
            parent: Some(parent),
        });
        self.frames.len() - 1
    }

    pub fn bind(&mut self, env: usize, name: &str, v: Val) {
        self.frames[env].vars.insert(name.to_string(), v);
    }

    fn lookup_var(&mut self, env: usize, name: &str) -> Val {
        let mut f = Some(env);
        while let Some(i) = f {
            if let Some(v) = self.frames[i].vars.get(name) {
                return v.clone();
            }
            f = self.frames[i].parent;
        }
        if let Some(v) = self.bindings.vars.get(name) {
            return Val::from_ref(JRef::root(v.clone()));
        }
        if let Some(nf) = self.bindings.functions.get(name) {
            return Val::Func(Rc::new(Func::Native(name.to_string(), nf.clone())));
        }
        if let Some(b) = functions::lookup(name) {
            return Val::Func(Rc::new(Func::Builtin(b)));
        }
        Val::Undefined
    }

    /// Evaluates a node against an input in an environment; the result holds no
    /// references into shared JSON.
    pub fn eval(&mut self, node: &Node, input: &Val, env: usize) -> Result<Val> {
        Ok(materialize(self.eval_raw(node, input, env)?))
    }

    /// Evaluates a node; objects of shared JSON may stay references (path steps).
    fn eval_raw(&mut self, node: &Node, input: &Val, env: usize) -> Result<Val> {
        self.tick(1, node.pos)?;
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            self.depth -= 1;
            return Err(Error::at(
                "U1001",
                node.pos,
                "Stack overflow error: Check for non-terminating recursive function. Consider rewriting as tail-recursive.",
            ));
        }
        // deep (but bounded) recursion runs on heap-allocated stack segments rather
        // than overflowing a small thread stack
        let r = stacker::maybe_grow(RED_ZONE, STACK_SEGMENT, || {
            self.eval_inner(node, input, env)
        });
        self.depth -= 1;
        let mut r = r?;
        for p in &node.predicates {
            r = match r {
                Val::Tuples(t) => {
                    Val::Tuples(Rc::new(self.filter_tuples(p, t.as_ref().clone(), env)?))
                }
                r => self.filter(p, r, env)?,
            };
        }
        if !matches!(node.kind, Kind::Path(_)) {
            if let Some(g) = &node.group {
                r = self.group(g, r, env)?;
            }
        }
        Ok(collapse(r, node.keep_array))
    }

    fn eval_inner(&mut self, node: &Node, input: &Val, env: usize) -> Result<Val> {
        Ok(match &node.kind {
            Kind::String(s) => Val::str(s.as_str()),
            Kind::Number(n) => Val::Num(*n),
            Kind::Bool(b) => Val::Bool(*b),
            Kind::Null => Val::Null,
            Kind::Regex(re, _) => Val::Func(Rc::new(Func::Regex(re.clone()))),
            Kind::Name(n) => lookup(input, n),
            Kind::Variable(v) => {
                if v.is_empty() {
                    match input {
                        Val::Arr(a, f) if f.outer_wrapper && !a.is_empty() => a[0].clone(),
                        _ => input.clone(),
                    }
                } else {
                    self.lookup_var(env, v)
                }
            }
            Kind::Wildcard => wildcard(&materialize(input.clone())),
            Kind::Descendant => {
                let mut out = Vec::new();
                if !input.is_undef() {
                    descendants(&materialize(input.clone()), &mut out);
                }
                if out.len() == 1 {
                    out.pop().unwrap_or(Val::Undefined)
                } else {
                    Val::seq(out)
                }
            }
            Kind::Parent(label) => self.lookup_var(env, &format!("!{label}")),
            Kind::Path(steps) => self.path(node, steps, input, env)?,
            Kind::Binary(op, l, r) => self.binary(*op, l, r, input, env, node.pos)?,
            Kind::Neg(e) => match self.eval(e, input, env)? {
                Val::Undefined => Val::Undefined,
                Val::Num(n) => Val::Num(-n),
                _ => {
                    return Err(Error::at(
                        "D1002",
                        node.pos,
                        "Cannot negate a non-numeric value",
                    ))
                }
            },
            Kind::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    let v = self.eval(item, input, env)?;
                    match v {
                        Val::Undefined => {}
                        Val::Arr(a, _) if !matches!(item.kind, Kind::Array(_)) => {
                            out.extend(a.iter().cloned())
                        }
                        v => out.push(v),
                    }
                }
                Val::Arr(
                    Rc::new(out),
                    Flags {
                        cons: node.cons_array,
                        ..Flags::default()
                    },
                )
            }
            Kind::Object(g) => self.group(g, input.clone(), env)?,
            Kind::Block(items) => {
                let frame = self.new_frame(env);
                let mut r = Val::Undefined;
                for (i, item) in items.iter().enumerate() {
                    // a block carrying ancestry passes its last tuple stream on
                    r = if node.tuple && i + 1 == items.len() {
                        self.eval_raw(item, input, frame)?
                    } else {
                        self.eval(item, input, frame)?
                    };
                }
                self.release_frames(frame);
                r
            }
            Kind::Condition(c, t, e) => {
                let c = self.eval(c, input, env)?;
                if truthy(&c) {
                    self.eval(t, input, env)?
                } else if let Some(e) = e {
                    self.eval(e, input, env)?
                } else {
                    Val::Undefined
                }
            }
            Kind::Bind(name, value) => {
                let v = self.eval(value, input, env)?;
                self.bind(env, name, v.clone());
                v
            }
            Kind::Lambda { params, body } => {
                self.max_captured = self.max_captured.max(env);
                Val::Func(Rc::new(Func::Lambda {
                    params: params.clone(),
                    body: body.clone(),
                    env,
                    input: input.clone(),
                }))
            }
            Kind::Placeholder => return Err(Error::at("S0201", node.pos, "Syntax error: ?")),
            Kind::Call {
                procedure,
                args,
                partial,
            } => self.call(procedure, args, *partial, None, input, env, node.pos)?,
            Kind::Apply(l, r) => {
                let lhs = self.eval(l, input, env)?;
                if let Kind::Call {
                    procedure,
                    args,
                    partial: false,
                } = &r.kind
                {
                    self.call(procedure, args, false, Some(lhs), input, env, r.pos)?
                } else {
                    let f = self.eval(r, input, env)?;
                    match (f, lhs) {
                        (Val::Func(g), Val::Func(f)) => Val::Func(Rc::new(Func::Chain(f, g))),
                        (Val::Func(g), lhs) => self.apply(&g, vec![lhs], input, node.pos)?,
                        _ => {
                            return Err(Error::at(
                                "T2006",
                                node.pos,
                                "The right side of the function application operator ~> must be a function",
                            ))
                        }
                    }
                }
            }
            Kind::Sort(terms) => self.sort_by(terms, input.clone(), env, node.pos)?,
            Kind::Transform { .. } => {
                self.max_captured = self.max_captured.max(env);
                Val::Func(Rc::new(Func::Transform(node.clone().into(), env)))
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        procedure: &Node,
        args: &[Node],
        partial: bool,
        first: Option<Val>,
        input: &Val,
        env: usize,
        pos: usize,
    ) -> Result<Val> {
        match self.call_prepare(procedure, args, partial, first, input, env, pos)? {
            Callee::Ready(v) => Ok(v),
            Callee::Apply(f, vals) => self.apply_ctx(&f, vals, input, pos),
        }
    }

    /// Evaluates the function and the arguments of a call.
    #[allow(clippy::too_many_arguments)]
    fn call_prepare(
        &mut self,
        procedure: &Node,
        args: &[Node],
        partial: bool,
        first: Option<Val>,
        input: &Val,
        env: usize,
        pos: usize,
    ) -> Result<Callee> {
        let f = self.eval(procedure, input, env)?;
        let Val::Func(f) = f else {
            let name = match &procedure.kind {
                Kind::Variable(v) => Some(v.clone()),
                Kind::Path(s) if s.len() == 1 => match &s[0].kind {
                    Kind::Name(n) => Some(n.clone()),
                    _ => None,
                },
                _ => None,
            };
            let known = name.as_deref().filter(|n| {
                matches!(&procedure.kind, Kind::Path(_))
                    && (functions::lookup(n).is_some() || self.bindings.functions.contains_key(*n))
            });
            let what = if partial { "partially apply" } else { "invoke" };
            let err = match known {
                Some(n) => Error::at(
                    if partial { "T1007" } else { "T1005" },
                    pos,
                    format!("Attempted to {what} a non-function. Did you mean ${n}?"),
                ),
                None => Error::at(
                    if partial { "T1008" } else { "T1006" },
                    pos,
                    format!("Attempted to {what} a non-function"),
                ),
            };
            return Err(err);
        };
        let mut vals: Vec<Option<Val>> = Vec::with_capacity(args.len() + 1);
        if let Some(v) = first {
            vals.push(Some(v));
        }
        for a in args {
            if matches!(a.kind, Kind::Placeholder) {
                vals.push(None);
            } else {
                vals.push(Some(self.eval(a, input, env)?));
            }
        }
        if partial {
            return Ok(Callee::Ready(Val::Func(Rc::new(Func::Partial(f, vals)))));
        }
        let vals = vals
            .into_iter()
            .map(|v| v.unwrap_or(Val::Undefined))
            .collect();
        Ok(Callee::Apply(f, vals))
    }

    /// Evaluates a lambda body; a call in tail position (through conditions and blocks)
    /// to another lambda is returned rather than made, so that the caller loops instead
    /// of recursing (JSONata's tail-call optimisation).
    fn eval_tail(&mut self, node: &Node, input: &Val, env: usize) -> Result<Callee> {
        let plain = node.predicates.is_empty()
            && node.group.is_none()
            && !node.keep_array
            && node.stages.is_empty()
            && !node.tuple;
        if plain {
            match &node.kind {
                Kind::Condition(c, t, e) => {
                    self.enter(node.pos)?;
                    let r = (|| {
                        let cv = self.eval(c, input, env)?;
                        if truthy(&cv) {
                            self.eval_tail(t, input, env)
                        } else if let Some(e) = e {
                            self.eval_tail(e, input, env)
                        } else {
                            Ok(Callee::Ready(Val::Undefined))
                        }
                    })();
                    self.depth -= 1;
                    return r;
                }
                Kind::Block(items) if !items.is_empty() => {
                    self.enter(node.pos)?;
                    let frame = self.new_frame(env);
                    let r = (|| {
                        for item in &items[..items.len() - 1] {
                            self.eval(item, input, frame)?;
                        }
                        self.eval_tail(&items[items.len() - 1], input, frame)
                    })();
                    self.depth -= 1;
                    return r;
                }
                Kind::Call {
                    procedure,
                    args,
                    partial: false,
                } => {
                    self.tick(1, node.pos)?;
                    return match self
                        .call_prepare(procedure, args, false, None, input, env, node.pos)?
                    {
                        Callee::Apply(f, vals) if matches!(*f, Func::Lambda { .. }) => {
                            Ok(Callee::Apply(f, vals))
                        }
                        Callee::Apply(f, vals) => {
                            let r = self.apply_ctx(&f, vals, input, node.pos)?;
                            Ok(Callee::Ready(materialize(collapse(r, false))))
                        }
                        ready => Ok(ready),
                    };
                }
                _ => {}
            }
        }
        Ok(Callee::Ready(self.eval(node, input, env)?))
    }

    /// Counts a step and one level of depth (undone by the caller).
    fn enter(&mut self, pos: usize) -> Result<()> {
        self.tick(1, pos)?;
        if self.depth >= self.limits.max_depth {
            return Err(Error::at(
                "U1001",
                pos,
                "Stack overflow error: Check for non-terminating recursive function. Consider rewriting as tail-recursive.",
            ));
        }
        self.depth += 1;
        Ok(())
    }

    /// Frees the frames from `mark` on when no closure can refer to them.
    fn release_frames(&mut self, mark: usize) {
        if self.max_captured < mark && mark <= self.frames.len() {
            self.frames.truncate(mark);
        }
    }

    /// Applies a function to arguments (no context).
    pub fn apply(&mut self, f: &Rc<Func>, args: Vec<Val>, input: &Val, pos: usize) -> Result<Val> {
        self.apply_ctx(f, args, input, pos)
    }

    fn apply_ctx(
        &mut self,
        f: &Rc<Func>,
        mut args: Vec<Val>,
        input: &Val,
        pos: usize,
    ) -> Result<Val> {
        self.tick(1, pos)?;
        match f.as_ref() {
            Func::Lambda { .. } => {
                let mark = self.frames.len();
                let mut f = f.clone();
                loop {
                    let Func::Lambda {
                        params,
                        body,
                        env,
                        input: captured,
                    } = f.as_ref()
                    else {
                        let r = self.apply_ctx(&f, args, input, pos);
                        self.release_frames(mark);
                        return r;
                    };
                    let frame = self.new_frame(*env);
                    for (i, p) in params.iter().enumerate() {
                        let v = args.get(i).cloned().unwrap_or(Val::Undefined);
                        self.bind(frame, p, v);
                    }
                    let body = body.clone();
                    let captured = captured.clone();
                    match self.eval_tail(&body, &captured, frame) {
                        Ok(Callee::Ready(v)) => {
                            self.release_frames(mark);
                            return Ok(v);
                        }
                        Ok(Callee::Apply(g, vals)) => {
                            self.tick(1, pos)?;
                            self.release_frames(mark);
                            f = g;
                            args = vals;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Func::Builtin(b) => {
                if let Some(t) = b.ctx {
                    let ctx = materialize(match input {
                        Val::Arr(a, fl) if fl.outer_wrapper && !a.is_empty() => a[0].clone(),
                        v => v.clone(),
                    });
                    // JSONata's `-` in signatures: the context stands in for a missing
                    // first argument
                    let first_fits = args
                        .first()
                        .is_some_and(|a| a.is_undef() || functions::type_matches(t, a));
                    let ctx_fits = functions::type_matches(t, &ctx);
                    let use_ctx = if args.len() < b.min_args {
                        if !ctx.is_undef() && !ctx_fits {
                            return Err(Error::at(
                                "T0411",
                                pos,
                                format!("Context value is not a compatible type with argument 1 of function ${}", b.name),
                            ));
                        }
                        args.is_empty() || first_fits || !ctx.is_undef()
                    } else {
                        args.len() < b.max_args && !first_fits && ctx_fits
                    };
                    if use_ctx {
                        args.insert(0, ctx);
                    }
                }
                if args.len() < b.min_args {
                    return Err(Error::at(
                        "T0410",
                        pos,
                        format!(
                            "Argument {} of function {} does not match function signature",
                            args.len() + 1,
                            b.name
                        ),
                    ));
                }
                if args.len() > b.max_args {
                    return Err(Error::at(
                        "T0410",
                        pos,
                        format!(
                            "Argument {} of function {} does not match function signature",
                            b.max_args + 1,
                            b.name
                        ),
                    ));
                }
                self.ctx_input = materialize(input.clone());
                (b.f)(self, args, pos)
            }
            Func::Native(name, nf) => {
                let mut json = Vec::with_capacity(args.len());
                for a in &args {
                    json.push(a.to_json()?);
                }
                let out = (nf.f)(&json).map_err(|mut e| {
                    if e.position.is_none() {
                        e.position = Some(pos);
                    }
                    e
                });
                let out = out.map_err(|e| {
                    if e.message.is_empty() {
                        Error::at(e.code, pos, format!("${name} failed"))
                    } else {
                        e
                    }
                })?;
                Ok(out.as_ref().map(Val::from_json).unwrap_or(Val::Undefined))
            }
            Func::Partial(g, bound) => {
                let mut it = args.into_iter();
                let full: Vec<Val> = bound
                    .iter()
                    .map(|b| match b {
                        Some(v) => v.clone(),
                        None => it.next().unwrap_or(Val::Undefined),
                    })
                    .collect();
                let g = g.clone();
                self.apply_ctx(&g, full, input, pos)
            }
            Func::Chain(a, b) => {
                let (a, b) = (a.clone(), b.clone());
                let mid = self.apply_ctx(&a, args, input, pos)?;
                self.apply_ctx(&b, vec![mid], input, pos)
            }
            Func::Regex(re) => {
                let s = match args.first() {
                    Some(Val::Str(s)) => s.clone(),
                    _ => return Ok(Val::Undefined),
                };
                let re = re.clone();
                Ok(functions::regex_first_match(&re, &s))
            }
            Func::Transform(node, env) => {
                let (node, env) = (node.clone(), *env);
                self.transform(
                    &node,
                    args.into_iter().next().unwrap_or(Val::Undefined),
                    env,
                )
            }
        }
    }

    fn path(&mut self, node: &Node, steps: &[Node], input: &Val, env: usize) -> Result<Val> {
        let first_is_var = matches!(steps.first().map(|s| &s.kind), Some(Kind::Variable(_)));
        let mut seq = match input {
            Val::Arr(..) if !first_is_var => input.clone(),
            v => Val::seq(vec![v.clone()]),
        };
        let mut result = Val::seq(Vec::new());
        let last = steps.len().saturating_sub(1);
        let mut tuples: Option<Vec<Tuple>> = None;
        for (i, step) in steps.iter().enumerate() {
            if step.tuple && tuples.is_none() {
                tuples = Some(
                    seq.items()
                        .into_iter()
                        .map(|at| Tuple {
                            at,
                            vars: Vec::new(),
                        })
                        .collect(),
                );
            }
            if let Some(tb) = tuples.take() {
                tuples = Some(self.tuple_step(step, tb, env)?);
                continue;
            }
            result = if i == 0 && step.cons_array {
                self.eval(step, &seq, env)?
            } else {
                self.step(step, &seq, env, i == last)?
            };
            let empty = match &result {
                Val::Undefined => true,
                Val::Arr(a, _) => a.is_empty(),
                _ => false,
            };
            if empty {
                break;
            }
            seq = result.clone();
        }
        if let Some(tb) = tuples {
            if let Some(g) = &node.group {
                return self.group_tuples(g, tb, env);
            }
            if node.tuple {
                // ancestry for an enclosing tuple step
                return Ok(Val::Tuples(Rc::new(tb)));
            }
            result = Val::seq(tb.into_iter().map(|t| t.at).collect());
        }
        if node.keep_array || steps.iter().any(|s| s.keep_array) {
            result = match result {
                Val::Arr(a, f) if f.cons && !f.sequence => Val::Arr(
                    Rc::new(vec![Val::Arr(a, f)]),
                    Flags {
                        keep_singleton: true,
                        ..Flags::SEQ
                    },
                ),
                Val::Arr(a, mut f) => {
                    f.keep_singleton = true;
                    Val::Arr(a, f)
                }
                other => other,
            };
        }
        if let Some(g) = &node.group {
            result = self.group(g, result, env)?;
        }
        Ok(result)
    }

    fn step(&mut self, step: &Node, seq: &Val, env: usize, last: bool) -> Result<Val> {
        if let Kind::Sort(terms) = &step.kind {
            let mut r = self.sort_by(terms, seq.clone(), env, step.pos)?;
            for s in &step.stages {
                if let Stage::Filter(p) = s {
                    r = self.filter(p, r, env)?;
                }
            }
            return Ok(r);
        }
        let items = match seq {
            Val::Arr(a, _) => a.clone(),
            v => Rc::new(vec![v.clone()]),
        };
        let mut results = Vec::new();
        for item in items.iter() {
            let mut res = self.eval_raw(step, item, env)?;
            for s in &step.stages {
                if let Stage::Filter(p) = s {
                    res = self.filter(p, res, env)?;
                }
            }
            if !res.is_undef() {
                results.push(res);
            }
        }
        if last && results.len() == 1 && matches!(&results[0], Val::Arr(_, f) if !f.sequence) {
            return Ok(results.pop().unwrap_or(Val::Undefined));
        }
        let mut flat = Vec::new();
        for r in results {
            match r {
                Val::Arr(a, f) if !f.cons => flat.extend(a.iter().cloned()),
                v => flat.push(v),
            }
        }
        Ok(Val::seq(flat))
    }

    fn tuple_frame(&mut self, env: usize, t: &Tuple) -> usize {
        let frame = self.new_frame(env);
        for (k, v) in &t.vars {
            self.bind(frame, k, v.clone());
        }
        frame
    }

    /// One step of a path evaluated as a tuple stream (`@`/`#` bindings).
    fn tuple_step(&mut self, step: &Node, input: Vec<Tuple>, env: usize) -> Result<Vec<Tuple>> {
        let mut out = Vec::new();
        if let Kind::Sort(terms) = &step.kind {
            let mut keyed = Vec::with_capacity(input.len());
            for t in input {
                let frame = self.tuple_frame(env, &t);
                keyed.push((t.at.clone(), frame, t));
            }
            out = self.sort_generic(terms, keyed, step.pos)?;
            if let Some(ix) = &step.index {
                for (i, t) in out.iter_mut().enumerate() {
                    t.vars.push((ix.clone(), Val::Num(i as f64)));
                }
            }
        } else {
            for t in input {
                let frame = self.tuple_frame(env, &t);
                let res = self.eval_raw(step, &t.at, frame)?;
                let items = match res {
                    Val::Undefined => continue,
                    Val::Tuples(inner) => {
                        for it in inner.iter() {
                            let mut nt = t.clone();
                            nt.at = it.at.clone();
                            nt.vars.extend(it.vars.iter().cloned());
                            out.push(nt);
                        }
                        continue;
                    }
                    Val::Arr(a, _) => a.as_ref().clone(),
                    v => vec![v],
                };
                for (bb, r) in items.into_iter().enumerate() {
                    let mut nt = t.clone();
                    match &step.focus {
                        Some(f) => nt.vars.push((f.clone(), r)),
                        None => nt.at = r,
                    }
                    if let Some(ix) = &step.index {
                        nt.vars.push((ix.clone(), Val::Num(bb as f64)));
                    }
                    if let Some(a) = step.ancestor {
                        nt.vars.push((format!("!{a}"), t.at.clone()));
                    }
                    out.push(nt);
                }
            }
        }
        for s in &step.stages {
            match s {
                Stage::Filter(p) => out = self.filter_tuples(p, out, env)?,
                Stage::Index(ix) => {
                    for (i, t) in out.iter_mut().enumerate() {
                        t.vars.push((ix.clone(), Val::Num(i as f64)));
                    }
                }
            }
        }
        Ok(out)
    }

    fn filter_tuples(&mut self, pred: &Node, input: Vec<Tuple>, env: usize) -> Result<Vec<Tuple>> {
        if let (Kind::Number(n), true) = (&pred.kind, pred.predicates.is_empty()) {
            let mut idx = n.floor();
            if idx < 0.0 {
                idx += input.len() as f64;
            }
            return Ok(if idx >= 0.0 {
                input.into_iter().nth(idx as usize).into_iter().collect()
            } else {
                Vec::new()
            });
        }
        let len = input.len() as f64;
        let mut out = Vec::new();
        for (index, t) in input.into_iter().enumerate() {
            let frame = self.tuple_frame(env, &t);
            let res = self.eval(pred, &t.at, frame)?;
            let keep = match &res {
                Val::Num(n) => {
                    let i = if n.floor() < 0.0 {
                        n.floor() + len
                    } else {
                        n.floor()
                    };
                    i == index as f64
                }
                Val::Arr(a, _) if !a.is_empty() && a.iter().all(|v| matches!(v, Val::Num(_))) => {
                    a.iter().any(|v| {
                        let Val::Num(n) = v else { return false };
                        let i = if n.floor() < 0.0 {
                            n.floor() + len
                        } else {
                            n.floor()
                        };
                        i == index as f64
                    })
                }
                r => truthy(r),
            };
            if keep {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Grouping over a tuple stream: keys see the tuple's variables; values see each
    /// variable's values appended across the group.
    fn group_tuples(&mut self, g: &Group, input: Vec<Tuple>, env: usize) -> Result<Val> {
        let mut groups: IndexMap<String, (Vec<Tuple>, usize)> = IndexMap::new();
        for t in input {
            let frame = self.tuple_frame(env, &t);
            for (idx, (k, _)) in g.pairs.iter().enumerate() {
                match self.eval(k, &t.at, frame)? {
                    Val::Undefined => {}
                    Val::Str(s) => match groups.get_mut(s.as_ref()) {
                        Some(entry) if entry.1 != idx => {
                            return Err(Error::at(
                                "D1009",
                                g.pos,
                                format!("Multiple key definitions evaluate to same key: {s}"),
                            ))
                        }
                        Some(entry) => entry.0.push(t.clone()),
                        None => {
                            groups.insert(s.to_string(), (vec![t.clone()], idx));
                        }
                    },
                    other => {
                        return Err(Error::at(
                            "T1003",
                            g.pos,
                            format!(
                                "Key in object structure must evaluate to a string; got: {}",
                                other.type_name()
                            ),
                        ))
                    }
                }
            }
        }
        let mut out: Obj = IndexMap::new();
        for (key, (data, idx)) in groups {
            let mut at = Val::Undefined;
            let mut vars: IndexMap<String, Val> = IndexMap::new();
            for t in data {
                at = append(at, t.at);
                for (k, v) in t.vars {
                    let prev = vars.shift_remove(&k).unwrap_or(Val::Undefined);
                    vars.insert(k, append(prev, v));
                }
            }
            let frame = self.new_frame(env);
            for (k, v) in vars {
                self.bind(frame, &k, v);
            }
            let v = self.eval(&g.pairs[idx].1, &at, frame)?;
            if !v.is_undef() {
                out.insert(key, v);
            }
        }
        Ok(Val::Obj(Rc::new(out)))
    }

    fn filter(&mut self, pred: &Node, input: Val, env: usize) -> Result<Val> {
        let items = match &input {
            Val::Undefined => return Ok(Val::seq(Vec::new())),
            Val::Arr(a, _) => a.clone(),
            v => Rc::new(vec![v.clone()]),
        };
        let mut out = Vec::new();
        if let (Kind::Number(n), true) = (&pred.kind, pred.predicates.is_empty()) {
            let mut idx = n.floor();
            if idx < 0.0 {
                idx += items.len() as f64;
            }
            if idx >= 0.0 {
                if let Some(item) = items.get(idx as usize) {
                    if let Val::Arr(..) = item {
                        return Ok(item.clone());
                    }
                    out.push(item.clone());
                }
            }
            return Ok(Val::seq(out));
        }
        let len = items.len() as f64;
        for (index, item) in items.iter().enumerate() {
            let res = self.eval(pred, item, env)?;
            let nums: Option<Vec<f64>> = match &res {
                Val::Num(n) => Some(vec![*n]),
                Val::Arr(a, _) if !a.is_empty() && a.iter().all(|v| matches!(v, Val::Num(_))) => {
                    Some(
                        a.iter()
                            .map(|v| if let Val::Num(n) = v { *n } else { 0.0 })
                            .collect(),
                    )
                }
                _ => None,
            };
            if let Some(nums) = nums {
                for n in nums {
                    let mut ii = n.floor();
                    if ii < 0.0 {
                        ii += len;
                    }
                    if ii == index as f64 {
                        out.push(item.clone());
                    }
                }
            } else if truthy(&res) {
                out.push(item.clone());
            }
        }
        Ok(Val::seq(out))
    }

    fn group(&mut self, g: &Group, input: Val, env: usize) -> Result<Val> {
        let mut items = match input {
            Val::Arr(a, _) => a.as_ref().clone(),
            v => vec![v],
        };
        if items.is_empty() {
            items.push(Val::Undefined);
        }
        let mut groups: IndexMap<String, (Val, usize)> = IndexMap::new();
        for item in items {
            for (idx, (k, _)) in g.pairs.iter().enumerate() {
                let key = self.eval(k, &item, env)?;
                match key {
                    Val::Undefined => {}
                    Val::Str(s) => {
                        if let Some(entry) = groups.get_mut(s.as_ref()) {
                            if entry.1 != idx {
                                return Err(Error::at(
                                    "D1009",
                                    g.pos,
                                    format!("Multiple key definitions evaluate to same key: {s}"),
                                ));
                            }
                            entry.0 = append(
                                std::mem::replace(&mut entry.0, Val::Undefined),
                                item.clone(),
                            );
                        } else {
                            groups.insert(s.to_string(), (item.clone(), idx));
                        }
                    }
                    other => {
                        return Err(Error::at(
                            "T1003",
                            g.pos,
                            format!(
                                "Key in object structure must evaluate to a string; got: {}",
                                other.type_name()
                            ),
                        ))
                    }
                }
            }
        }
        let mut out: Obj = IndexMap::new();
        for (key, (data, idx)) in groups {
            let v = self.eval(&g.pairs[idx].1, &data, env)?;
            if !v.is_undef() {
                out.insert(key, v);
            }
        }
        Ok(Val::Obj(Rc::new(out)))
    }

    fn sort_by(&mut self, terms: &[SortTerm], input: Val, env: usize, pos: usize) -> Result<Val> {
        let items = match input {
            Val::Undefined => return Ok(Val::Undefined),
            Val::Arr(a, _) => a.as_ref().clone(),
            v => vec![v],
        };
        let keyed = items.into_iter().map(|v| (v.clone(), env, v)).collect();
        Ok(Val::seq(self.sort_generic(terms, keyed, pos)?))
    }

    /// Stable sort of `(context, environment, item)` by the order-by terms.
    fn sort_generic<T>(
        &mut self,
        terms: &[SortTerm],
        items: Vec<(Val, usize, T)>,
        pos: usize,
    ) -> Result<Vec<T>> {
        // evaluate the keys once
        let mut keyed = Vec::with_capacity(items.len());
        for (ctx, env, item) in items {
            let mut keys = Vec::with_capacity(terms.len());
            for t in terms {
                let k = self.eval(&t.expr, &ctx, env)?;
                match &k {
                    Val::Undefined | Val::Num(_) | Val::Str(_) => {}
                    _ => {
                        return Err(Error::at(
                            "T2008",
                            pos,
                            "The expressions within an order-by clause must evaluate to numeric or string values",
                        ))
                    }
                }
                keys.push(k);
            }
            keyed.push((keys, item));
        }
        let mut err = None;
        keyed.sort_by(|(a, _), (b, _)| {
            for (i, t) in terms.iter().enumerate() {
                let ord = match (&a[i], &b[i]) {
                    (Val::Undefined, Val::Undefined) => std::cmp::Ordering::Equal,
                    (Val::Undefined, _) => return std::cmp::Ordering::Greater,
                    (_, Val::Undefined) => return std::cmp::Ordering::Less,
                    (Val::Num(x), Val::Num(y)) => {
                        x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal)
                    }
                    (Val::Str(x), Val::Str(y)) => x.cmp(y),
                    _ => {
                        err.get_or_insert_with(|| {
                            Error::at(
                                "T2007",
                                pos,
                                "Type mismatch when comparing values in order-by clause",
                            )
                        });
                        std::cmp::Ordering::Equal
                    }
                };
                let ord = if t.descending { ord.reverse() } else { ord };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            std::cmp::Ordering::Equal
        });
        if let Some(e) = err {
            return Err(e);
        }
        Ok(keyed.into_iter().map(|(_, v)| v).collect())
    }

    fn binary(
        &mut self,
        op: BinOp,
        l: &Node,
        r: &Node,
        input: &Val,
        env: usize,
        pos: usize,
    ) -> Result<Val> {
        match op {
            BinOp::And => {
                let a = self.eval(l, input, env)?;
                if !truthy(&a) {
                    return Ok(Val::Bool(false));
                }
                let b = self.eval(r, input, env)?;
                return Ok(Val::Bool(truthy(&b)));
            }
            BinOp::Or => {
                let a = self.eval(l, input, env)?;
                if truthy(&a) {
                    return Ok(Val::Bool(true));
                }
                let b = self.eval(r, input, env)?;
                return Ok(Val::Bool(truthy(&b)));
            }
            BinOp::Elvis => {
                let a = self.eval(l, input, env)?;
                return if truthy(&a) {
                    Ok(a)
                } else {
                    self.eval(r, input, env)
                };
            }
            BinOp::Coalesce => {
                let a = self.eval(l, input, env)?;
                return if a.is_undef() {
                    self.eval(r, input, env)
                } else {
                    Ok(a)
                };
            }
            _ => {}
        }
        let a = self.eval(l, input, env)?;
        let b = self.eval(r, input, env)?;
        match op {
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => {
                for v in [&a, &b] {
                    if let Val::Num(n) = v {
                        if !n.is_finite() {
                            return Err(Error::at("D1001", pos, "Number out of range"));
                        }
                    }
                }
                let x = match a {
                    Val::Undefined => None,
                    Val::Num(n) => Some(n),
                    _ => {
                        return Err(Error::at(
                            "T2001",
                            pos,
                            format!(
                                "The left side of the {} operator must evaluate to a number",
                                op_str(op)
                            ),
                        ))
                    }
                };
                let y = match b {
                    Val::Undefined => None,
                    Val::Num(n) => Some(n),
                    _ => {
                        return Err(Error::at(
                            "T2002",
                            pos,
                            format!(
                                "The right side of the {} operator must evaluate to a number",
                                op_str(op)
                            ),
                        ))
                    }
                };
                let (Some(x), Some(y)) = (x, y) else {
                    return Ok(Val::Undefined);
                };
                let n = match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div => x / y,
                    _ => x % y,
                };
                Ok(Val::Num(n))
            }
            BinOp::Eq | BinOp::Ne => {
                if a.is_undef() || b.is_undef() {
                    return Ok(Val::Bool(false));
                }
                let eq = deep_equal(&a, &b);
                Ok(Val::Bool(if op == BinOp::Eq { eq } else { !eq }))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let comparable = |v: &Val| matches!(v, Val::Undefined | Val::Num(_) | Val::Str(_));
                if !comparable(&a) || !comparable(&b) {
                    return Err(Error::at(
                        "T2010",
                        pos,
                        format!("The expressions either side of operator {} must evaluate to numeric or string values", op_str(op)),
                    ));
                }
                let ord = match (&a, &b) {
                    (Val::Undefined, _) | (_, Val::Undefined) => return Ok(Val::Undefined),
                    (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
                    (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
                    _ => {
                        return Err(Error::at(
                            "T2009",
                            pos,
                            format!(
                            "The values either side of operator {} must be of the same data type",
                            op_str(op)
                        ),
                        ))
                    }
                };
                let Some(ord) = ord else {
                    return Ok(Val::Bool(false));
                };
                use std::cmp::Ordering::*;
                Ok(Val::Bool(match op {
                    BinOp::Lt => ord == Less,
                    BinOp::Le => ord != Greater,
                    BinOp::Gt => ord == Greater,
                    _ => ord != Less,
                }))
            }
            BinOp::Concat => {
                let mut s = String::new();
                for v in [&a, &b] {
                    if !v.is_undef() {
                        s.push_str(&functions::to_string(v)?);
                    }
                }
                self.tick(s.len() as u64 / 64, pos)?;
                Ok(Val::str(s))
            }
            BinOp::In => {
                if a.is_undef() || b.is_undef() {
                    return Ok(Val::Bool(false));
                }
                let hay = b.items();
                Ok(Val::Bool(hay.iter().any(|v| deep_equal(v, &a))))
            }
            BinOp::Range => {
                let x =
                    match a {
                        Val::Undefined => None,
                        Val::Num(n) if n.fract() == 0.0 => Some(n),
                        _ => return Err(Error::at(
                            "T2003",
                            pos,
                            "The left side of the range operator (..) must evaluate to an integer",
                        )),
                    };
                let y =
                    match b {
                        Val::Undefined => None,
                        Val::Num(n) if n.fract() == 0.0 => Some(n),
                        _ => return Err(Error::at(
                            "T2004",
                            pos,
                            "The right side of the range operator (..) must evaluate to an integer",
                        )),
                    };
                let (Some(x), Some(y)) = (x, y) else {
                    return Ok(Val::Undefined);
                };
                if x > y {
                    return Ok(Val::Undefined);
                }
                let size = y - x + 1.0;
                if size > 1e7 {
                    return Err(Error::at(
                        "D2014",
                        pos,
                        format!("The size of the sequence allocated by the range operator (..) must not exceed 1e7.  Attempted to allocate {size}"),
                    ));
                }
                self.tick(size as u64, pos)?;
                let (x, y) = (x as i64, y as i64);
                Ok(Val::arr((x..=y).map(|i| Val::Num(i as f64)).collect()))
            }
            _ => Ok(Val::Undefined),
        }
    }

    fn transform(&mut self, node: &Node, obj: Val, env: usize) -> Result<Val> {
        let Kind::Transform {
            pattern,
            update,
            delete,
        } = &node.kind
        else {
            return Ok(Val::Undefined);
        };
        if obj.is_undef() {
            return Ok(Val::Undefined);
        }
        if !matches!(obj, Val::Obj(_) | Val::Arr(..)) {
            return Err(Error::at(
                "T2013",
                node.pos,
                "The transform expression clones the input, which must be an object or an array",
            ));
        }
        // deep copy so every object has its own identity
        let result = deep_clone(&obj);
        let matches = self.eval(pattern, &result, env)?;
        let mut edits: HashMap<*const Obj, Obj> = HashMap::new();
        for m in matches.items() {
            let Val::Obj(o) = &m else { continue };
            let mut new = edits
                .get(&Rc::as_ptr(o))
                .cloned()
                .unwrap_or_else(|| o.as_ref().clone());
            let upd = self.eval(update, &m, env)?;
            match upd {
                Val::Undefined => {}
                Val::Obj(u) => {
                    for (k, v) in u.iter() {
                        new.insert(k.clone(), v.clone());
                    }
                }
                _ => return Err(Error::at("T2011", node.pos, "The insert/update clause of the transform expression must evaluate to an object")),
            }
            if let Some(d) = delete {
                let del = self.eval(d, &m, env)?;
                if !del.is_undef() {
                    for k in del.items() {
                        let Val::Str(k) = k else {
                            return Err(Error::at("T2012", node.pos, "The delete clause of the transform expression must evaluate to a string or array of strings"));
                        };
                        new.shift_remove(k.as_ref());
                    }
                }
            }
            edits.insert(Rc::as_ptr(o), new);
        }
        Ok(rebuild(&result, &edits))
    }
}

fn deep_clone(v: &Val) -> Val {
    match v {
        Val::Arr(a, f) => Val::Arr(Rc::new(a.iter().map(deep_clone).collect()), *f),
        Val::Obj(o) => Val::Obj(Rc::new(
            o.iter().map(|(k, v)| (k.clone(), deep_clone(v))).collect(),
        )),
        v => v.clone(),
    }
}

fn rebuild(v: &Val, edits: &HashMap<*const Obj, Obj>) -> Val {
    match v {
        Val::Arr(a, f) => Val::Arr(Rc::new(a.iter().map(|x| rebuild(x, edits)).collect()), *f),
        Val::Obj(o) => {
            let base = edits.get(&Rc::as_ptr(o)).unwrap_or(o.as_ref());
            Val::Obj(Rc::new(
                base.iter()
                    .map(|(k, v)| (k.clone(), rebuild(v, edits)))
                    .collect(),
            ))
        }
        v => v.clone(),
    }
}

fn op_str(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Mod => "%",
        BinOp::Lt => "<",
        BinOp::Le => "<=",
        BinOp::Gt => ">",
        BinOp::Ge => ">=",
        _ => "?",
    }
}

/// Collapses a sequence: empty → undefined, one item → the item (unless kept).
pub(crate) fn collapse(v: Val, keep: bool) -> Val {
    match v {
        Val::Arr(a, mut f) if f.sequence => {
            if keep {
                f.keep_singleton = true;
            }
            if a.is_empty() {
                Val::Undefined
            } else if a.len() == 1 && !f.keep_singleton {
                a[0].clone()
            } else {
                Val::Arr(a, f)
            }
        }
        v => v,
    }
}

/// JSONata's `fn.append`.
pub(crate) fn append(a: Val, b: Val) -> Val {
    match (a, b) {
        (Val::Undefined, b) => b,
        (a, Val::Undefined) => a,
        (a, b) => {
            let mut items = a.items();
            items.extend(b.items());
            Val::seq(items)
        }
    }
}

fn lookup(input: &Val, key: &str) -> Val {
    match input {
        Val::Arr(a, _) => {
            let mut out = Vec::new();
            for item in a.iter() {
                match lookup(item, key) {
                    Val::Undefined => {}
                    Val::Arr(x, _) => out.extend(x.iter().cloned()),
                    v => out.push(v),
                }
            }
            Val::seq(out)
        }
        Val::Obj(o) => o.get(key).cloned().unwrap_or(Val::Undefined),
        Val::Node(r) => r.get(key),
        _ => Val::Undefined,
    }
}

fn flatten_into(v: &Val, out: &mut Vec<Val>) {
    match v {
        Val::Arr(a, _) => a.iter().for_each(|x| flatten_into(x, out)),
        v => out.push(v.clone()),
    }
}

fn wildcard(input: &Val) -> Val {
    let input = match input {
        Val::Arr(a, f) if f.outer_wrapper && !a.is_empty() => &a[0],
        v => v,
    };
    let mut out = Vec::new();
    if let Val::Obj(o) = input {
        for v in o.values() {
            match v {
                Val::Arr(..) => flatten_into(v, &mut out),
                v => out.push(v.clone()),
            }
        }
    }
    Val::seq(out)
}

fn descendants(v: &Val, out: &mut Vec<Val>) {
    match v {
        Val::Arr(a, _) => a.iter().for_each(|x| descendants(x, out)),
        Val::Obj(o) => {
            out.push(v.clone());
            o.values().for_each(|x| descendants(x, out));
        }
        v => out.push(v.clone()),
    }
}

/// Stringifies per `$string` (shared with `&`).
pub(crate) fn string_of(v: &Val) -> Result<String> {
    match v {
        Val::Str(s) => Ok(s.to_string()),
        Val::Func(_) => Ok(String::new()),
        v => stringify(v, false),
    }
}
