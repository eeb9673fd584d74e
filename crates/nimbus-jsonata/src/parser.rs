//! A Pratt (top-down operator precedence) parser producing the processed AST: location
//! paths are flattened into steps, predicates attached as stages or predicates, and
//! groupings and order-by steps attached, as JSONata's reference parser does.

use std::sync::Arc;

use crate::ast::{BinOp, Group, Kind, Node, SortTerm, Stage};
use crate::error::{Error, Result};
use crate::lexer::{tokenize, Tok};

/// Maximum nesting of the parser's recursion.
const MAX_PARSE_DEPTH: usize = 200;

/// Parses a JSONata expression.
pub(crate) fn parse(src: &str) -> Result<Node> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        toks,
        i: 0,
        depth: 0,
        slots: Vec::new(),
    };
    let mut node = p.expression(0)?;
    if p.peek() != &Tok::End {
        let (t, pos) = p.toks[p.i].clone();
        return Err(
            Error::at("S0201", pos, format!("Syntax error: {}", describe(&t)))
                .with_token(describe(&t)),
        );
    }
    if !node.seeking.is_empty() || matches!(node.kind, Kind::Parent(_)) {
        return Err(Error::at(
            "S0217",
            node.pos,
            "The object representing the 'parent' cannot be derived from this expression",
        ));
    }
    let labels: Vec<usize> = p.slots.iter().map(|s| s.label).collect();
    relabel(&mut node, &labels);
    Ok(node)
}

/// A `%` slot while parsing: the label its ancestor binds and how many steps up it is.
struct Slot {
    label: usize,
    level: i32,
}

/// Replaces slot numbers by their final labels.
fn relabel(node: &mut Node, labels: &[usize]) {
    let l = |s: &mut usize| *s = labels.get(*s).copied().unwrap_or(*s);
    if let Some(a) = node.ancestor.as_mut() {
        l(a);
    }
    node.seeking.clear();
    for p in node.predicates.iter_mut() {
        relabel(p, labels);
    }
    for s in node.stages.iter_mut() {
        if let Stage::Filter(p) = s {
            relabel(p, labels);
        }
    }
    if let Some(g) = node.group.as_mut() {
        for (k, v) in g.pairs.iter_mut() {
            relabel(k, labels);
            relabel(v, labels);
        }
    }
    match &mut node.kind {
        Kind::Parent(s) => l(s),
        Kind::Path(items) | Kind::Array(items) | Kind::Block(items) => {
            items.iter_mut().for_each(|n| relabel(n, labels))
        }
        Kind::Binary(_, a, b) | Kind::Apply(a, b) => {
            relabel(a, labels);
            relabel(b, labels);
        }
        Kind::Neg(a) | Kind::Bind(_, a) => relabel(a, labels),
        Kind::Object(g) => {
            for (k, v) in g.pairs.iter_mut() {
                relabel(k, labels);
                relabel(v, labels);
            }
        }
        Kind::Condition(c, t, e) => {
            relabel(c, labels);
            relabel(t, labels);
            if let Some(e) = e {
                relabel(e, labels);
            }
        }
        Kind::Call {
            procedure, args, ..
        } => {
            relabel(procedure, labels);
            args.iter_mut().for_each(|n| relabel(n, labels));
        }
        Kind::Lambda { body, .. } => {
            if let Some(b) = Arc::get_mut(body) {
                relabel(b, labels);
            }
        }
        Kind::Sort(terms) => terms.iter_mut().for_each(|t| relabel(&mut t.expr, labels)),
        Kind::Transform {
            pattern,
            update,
            delete,
        } => {
            relabel(pattern, labels);
            relabel(update, labels);
            if let Some(d) = delete {
                relabel(d, labels);
            }
        }
        _ => {}
    }
}

/// Adds the unresolved parent slots of `value` to `result`.
fn push_ancestry(result: &mut Node, value: &Node) {
    result.seeking.extend(value.seeking.iter().copied());
    if let Kind::Parent(s) = value.kind {
        result.seeking.push(s);
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
    depth: usize,
    slots: Vec<Slot>,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Op(o) => (*o).to_string(),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::Num(n) => n.to_string(),
        Tok::Name(n) => n.clone(),
        Tok::Var(v) => format!("${v}"),
        Tok::Bool(b) => b.to_string(),
        Tok::Null => "null".into(),
        Tok::Regex(p, _) => format!("/{p}/"),
        Tok::End => "(end)".into(),
    }
}

fn lbp(t: &Tok) -> u32 {
    match t {
        Tok::Op(op) => match *op {
            "." => 75,
            "[" | "(" | "@" | "#" => 80,
            "{" => 70,
            "*" | "/" | "%" => 60,
            "+" | "-" | "&" => 50,
            "=" | "<" | ">" | "!=" | "<=" | ">=" | "~>" | "?:" | "??" | "in" | "^" => 40,
            "and" => 30,
            "or" => 25,
            "?" | ".." => 20,
            ":=" => 10,
            _ => 0,
        },
        _ => 0,
    }
}

impl Parser {
    /// Ties a parent slot to the step it refers to, walking back `level` steps.
    fn seek_parent(&mut self, node: &mut Node, slot: usize) -> Result<()> {
        match &node.kind {
            Kind::Parent(_) => {
                self.slots[slot].level += 1;
                return Ok(());
            }
            Kind::Name(_) | Kind::Wildcard => {
                self.slots[slot].level -= 1;
                if self.slots[slot].level == 0 {
                    if let Some(a) = node.ancestor {
                        self.slots[slot].label = self.slots[a].label;
                    }
                    node.ancestor = Some(slot);
                    node.tuple = true;
                }
                return Ok(());
            }
            Kind::Path(_) | Kind::Block(_) => {}
            _ => {
                return Err(Error::at(
                    "S0217",
                    node.pos,
                    "The object representing the 'parent' cannot be derived from this expression",
                ))
            }
        }
        node.tuple = true;
        match &mut node.kind {
            Kind::Block(items) => {
                if let Some(last) = items.last_mut() {
                    self.seek_parent(last, slot)?;
                }
            }
            Kind::Path(steps) => {
                let mut index = steps.len() as isize - 1;
                if index >= 0 {
                    self.seek_parent(&mut steps[index as usize], slot)?;
                    index -= 1;
                }
                while self.slots[slot].level > 0 && index >= 0 {
                    self.seek_parent(&mut steps[index as usize], slot)?;
                    index -= 1;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Resolves the parent slots the last step of a path seeks within the path.
    fn resolve_ancestry(&mut self, path: &mut Node) -> Result<()> {
        let Kind::Path(steps) = &mut path.kind else {
            return Ok(());
        };
        let Some(last) = steps.last() else {
            return Ok(());
        };
        let mut slots = last.seeking.clone();
        if let Kind::Parent(s) = last.kind {
            slots.push(s);
        }
        let mut unresolved = Vec::new();
        for slot in slots {
            let mut index = steps.len() as isize - 2;
            while self.slots[slot].level > 0 {
                if index < 0 {
                    unresolved.push(slot);
                    break;
                }
                let mut step_i = index as usize;
                index -= 1;
                // contiguous steps binding a focus count as one
                while index >= 0
                    && steps[step_i].focus.is_some()
                    && steps[index as usize].focus.is_some()
                {
                    step_i = index as usize;
                    index -= 1;
                }
                self.seek_parent(&mut steps[step_i], slot)?;
            }
        }
        path.seeking.extend(unresolved);
        Ok(())
    }

    /// A predicate's parent slots: level 1 refers to the predicated step itself.
    fn predicate_ancestry(&mut self, step: &mut Node, pred: &Node) -> Result<()> {
        if pred.seeking.is_empty() {
            return Ok(());
        }
        for &slot in &pred.seeking {
            if self.slots[slot].level == 1 {
                self.seek_parent(step, slot)?;
            } else {
                self.slots[slot].level -= 1;
            }
        }
        push_ancestry(step, pred);
        Ok(())
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.i].0
    }

    fn pos(&self) -> usize {
        self.toks[self.i].1
    }

    fn next(&mut self) -> (Tok, usize) {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }

    fn expect(&mut self, op: &'static str) -> Result<()> {
        if self.is_op(op) {
            self.next();
            return Ok(());
        }
        let (t, pos) = self.toks[self.i].clone();
        if t == Tok::End {
            return Err(Error::at(
                "S0203",
                pos,
                format!("Expected {op} before end of expression"),
            )
            .with_token(op));
        }
        Err(
            Error::at("S0202", pos, format!("Expected {op}, got {}", describe(&t)))
                .with_token(describe(&t)),
        )
    }

    fn expression(&mut self, rbp: u32) -> Result<Node> {
        self.depth += 1;
        if self.depth > MAX_PARSE_DEPTH {
            return Err(Error::at(
                "U1001",
                self.pos(),
                "Expression is nested too deeply",
            ));
        }
        let r = stacker::maybe_grow(64 * 1024, 1024 * 1024, || self.expression_inner(rbp));
        self.depth -= 1;
        r
    }

    fn expression_inner(&mut self, rbp: u32) -> Result<Node> {
        let (t, pos) = self.next();
        let mut left = self.nud(t, pos)?;
        while rbp < lbp(self.peek()) {
            let (t, pos) = self.next();
            left = self.led(t, pos, left)?;
        }
        Ok(left)
    }

    fn nud(&mut self, t: Tok, pos: usize) -> Result<Node> {
        Ok(match t {
            Tok::Str(s) => Node::new(Kind::String(s), pos),
            Tok::Num(n) => Node::new(Kind::Number(n), pos),
            Tok::Bool(b) => Node::new(Kind::Bool(b), pos),
            Tok::Null => Node::new(Kind::Null, pos),
            Tok::Var(v) => Node::new(Kind::Variable(v), pos),
            Tok::Regex(p, flags) => {
                let mut b = regex::RegexBuilder::new(&p);
                b.case_insensitive(flags.contains('i'))
                    .multi_line(flags.contains('m'))
                    .dot_matches_new_line(flags.contains('s'))
                    .size_limit(1 << 20);
                let re = b.build().map_err(|e| {
                    Error::at("S0303", pos, format!("Unsupported regular expression: {e}"))
                })?;
                Node::new(Kind::Regex(Arc::new(re), p), pos)
            }
            Tok::Name(n) if (n == "function" || n == "λ") && self.is_op("(") => {
                self.lambda(pos)?
            }
            Tok::Name(n) => path_of(Node::new(Kind::Name(n), pos)),
            Tok::Op("and") | Tok::Op("or") | Tok::Op("in") => {
                let Tok::Op(o) = t else { unreachable!() };
                path_of(Node::new(Kind::Name(o.to_string()), pos))
            }
            Tok::Op("-") => {
                let e = self.expression(70)?;
                if let Kind::Number(n) = e.kind {
                    Node::new(Kind::Number(-n), pos)
                } else {
                    let mut n = Node::new(Kind::Null, pos);
                    push_ancestry(&mut n, &e);
                    n.kind = Kind::Neg(Box::new(e));
                    n
                }
            }
            Tok::Op("*") => Node::new(Kind::Wildcard, pos),
            Tok::Op("**") => Node::new(Kind::Descendant, pos),
            Tok::Op("%") => {
                let label = self.slots.len();
                self.slots.push(Slot { label, level: 1 });
                Node::new(Kind::Parent(label), pos)
            }
            Tok::Op("?") => Node::new(Kind::Placeholder, pos),
            Tok::Op("(") => {
                let mut items = Vec::new();
                while !self.is_op(")") {
                    items.push(self.expression(0)?);
                    if !self.is_op(";") {
                        break;
                    }
                    self.next();
                }
                self.expect(")")?;
                let mut n = Node::new(Kind::Null, pos);
                items.iter().for_each(|i| push_ancestry(&mut n, i));
                n.kind = Kind::Block(items);
                n
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                if !self.is_op("]") {
                    loop {
                        items.push(self.expression(0)?);
                        if !self.is_op(",") {
                            break;
                        }
                        self.next();
                    }
                }
                self.expect("]")?;
                let mut n = Node::new(Kind::Null, pos);
                items.iter().for_each(|i| push_ancestry(&mut n, i));
                n.kind = Kind::Array(items);
                n
            }
            Tok::Op("{") => {
                let g = self.object(pos)?;
                let mut n = Node::new(Kind::Null, pos);
                for (k, v) in &g.pairs {
                    push_ancestry(&mut n, k);
                    push_ancestry(&mut n, v);
                }
                n.kind = Kind::Object(g);
                n
            }
            Tok::Op("|") => {
                let pattern = self.expression(0)?;
                self.expect("|")?;
                let update = self.expression(0)?;
                let delete = if self.is_op(",") {
                    self.next();
                    Some(Box::new(self.expression(0)?))
                } else {
                    None
                };
                self.expect("|")?;
                Node::new(
                    Kind::Transform {
                        pattern: Box::new(pattern),
                        update: Box::new(update),
                        delete,
                    },
                    pos,
                )
            }
            Tok::End => return Err(Error::at("S0207", pos, "Unexpected end of expression")),
            other => {
                let d = describe(&other);
                return Err(Error::at(
                    "S0211",
                    pos,
                    format!("The symbol {d} cannot be used as a unary operator"),
                )
                .with_token(d));
            }
        })
    }

    fn object(&mut self, pos: usize) -> Result<Group> {
        let mut pairs = Vec::new();
        if !self.is_op("}") {
            loop {
                let k = self.expression(0)?;
                self.expect(":")?;
                let v = self.expression(0)?;
                pairs.push((k, v));
                if !self.is_op(",") {
                    break;
                }
                self.next();
            }
        }
        self.expect("}")?;
        Ok(Group { pairs, pos })
    }

    fn lambda(&mut self, pos: usize) -> Result<Node> {
        self.expect("(")?;
        let mut params = Vec::new();
        if !self.is_op(")") {
            loop {
                let (t, p) = self.next();
                match t {
                    Tok::Var(v) => params.push(v),
                    other => {
                        return Err(Error::at("S0208", p, format!("Parameter {} of function definition must be a variable name (start with $)", describe(&other))))
                    }
                }
                if !self.is_op(",") {
                    break;
                }
                self.next();
            }
        }
        self.expect(")")?;
        // an optional signature `<…>`: accepted and not enforced
        if self.is_op("<") {
            let mut depth = 0usize;
            loop {
                let (t, p) = self.next();
                match t {
                    Tok::Op("<") => depth += 1,
                    Tok::Op(">") => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::End => {
                        return Err(Error::at(
                            "S0401",
                            p,
                            "Function signature is not terminated",
                        ))
                    }
                    _ => {}
                }
            }
        }
        self.expect("{")?;
        let body = self.expression(0)?;
        self.expect("}")?;
        Ok(Node::new(
            Kind::Lambda {
                params,
                body: Arc::new(body),
            },
            pos,
        ))
    }

    fn led(&mut self, t: Tok, pos: usize, left: Node) -> Result<Node> {
        let Tok::Op(op) = t else {
            return Err(Error::at(
                "S0201",
                pos,
                format!("Syntax error: {}", describe(&t)),
            ));
        };
        let bin =
            |o: BinOp, l: Node, r: Node| Node::new(Kind::Binary(o, Box::new(l), Box::new(r)), pos);
        Ok(match op {
            "." => {
                let rhs = self.expression(75)?;
                let left_parent = match left.kind {
                    Kind::Parent(s) => Some(s),
                    _ => None,
                };
                let mut path = join_path(left, rhs)?;
                if let Some(s) = left_parent {
                    path.seeking = vec![s];
                }
                self.resolve_ancestry(&mut path)?;
                path
            }
            "[" => {
                if self.is_op("]") {
                    self.next();
                    let mut left = left;
                    if let Kind::Path(steps) = &mut left.kind {
                        if let Some(last) = steps.last_mut() {
                            last.keep_array = true;
                        }
                    }
                    left.keep_array = true;
                    return Ok(left);
                }
                let pred = self.expression(0)?;
                self.expect("]")?;
                let mut left = left;
                match &mut left.kind {
                    Kind::Path(steps) => {
                        let last = steps.last_mut().expect("paths have steps");
                        if last.group.is_some() || left.group.is_some() {
                            return Err(Error::at(
                                "S0209",
                                pos,
                                "A predicate cannot follow a grouping expression in a step",
                            ));
                        }
                        self.predicate_ancestry(last, &pred)?;
                        last.stages.push(Stage::Filter(pred));
                    }
                    _ => {
                        if left.group.is_some() {
                            return Err(Error::at(
                                "S0209",
                                pos,
                                "A predicate cannot follow a grouping expression in a step",
                            ));
                        }
                        self.predicate_ancestry(&mut left, &pred)?;
                        left.predicates.push(pred)
                    }
                }
                left
            }
            "{" => {
                let g = self.object(pos)?;
                let mut left = left;
                if left.group.is_some() {
                    return Err(Error::at(
                        "S0210",
                        pos,
                        "Each step can only have one grouping expression",
                    ));
                }
                left.group = Some(Box::new(g));
                left
            }
            "(" => {
                let mut args = Vec::new();
                let mut partial = false;
                if !self.is_op(")") {
                    loop {
                        if self.is_op("?")
                            && matches!(
                                self.toks.get(self.i + 1).map(|t| &t.0),
                                Some(Tok::Op(",")) | Some(Tok::Op(")"))
                            )
                        {
                            let (_, p) = self.next();
                            args.push(Node::new(Kind::Placeholder, p));
                            partial = true;
                        } else {
                            args.push(self.expression(0)?);
                        }
                        if !self.is_op(",") {
                            break;
                        }
                        self.next();
                    }
                }
                self.expect(")")?;
                let mut n = Node::new(Kind::Null, pos);
                args.iter().for_each(|a| push_ancestry(&mut n, a));
                n.kind = Kind::Call {
                    procedure: Box::new(left),
                    args,
                    partial,
                };
                n
            }
            "^" => {
                self.expect("(")?;
                let mut terms = Vec::new();
                loop {
                    let mut descending = false;
                    if self.is_op("<") {
                        self.next();
                    } else if self.is_op(">") {
                        self.next();
                        descending = true;
                    }
                    let expr = self.expression(0)?;
                    terms.push(SortTerm { descending, expr });
                    if !self.is_op(",") {
                        break;
                    }
                    self.next();
                }
                self.expect(")")?;
                let mut path = if matches!(left.kind, Kind::Path(_)) {
                    left
                } else {
                    Node::new(Kind::Path(vec![left]), pos)
                };
                if let Kind::Path(steps) = &mut path.kind {
                    let mut sort = Node::new(Kind::Null, pos);
                    terms.iter().for_each(|t| push_ancestry(&mut sort, &t.expr));
                    sort.kind = Kind::Sort(terms);
                    steps.push(sort);
                }
                self.resolve_ancestry(&mut path)?;
                path
            }
            "?" => {
                let then = self.expression(0)?;
                let otherwise = if self.is_op(":") {
                    self.next();
                    Some(Box::new(self.expression(0)?))
                } else {
                    None
                };
                let mut n = Node::new(Kind::Null, pos);
                push_ancestry(&mut n, &left);
                push_ancestry(&mut n, &then);
                if let Some(o) = &otherwise {
                    push_ancestry(&mut n, o);
                }
                n.kind = Kind::Condition(Box::new(left), Box::new(then), otherwise);
                n
            }
            ":=" => {
                let rhs = self.expression(9)?;
                match left.kind {
                    Kind::Variable(name) if left.predicates.is_empty() && left.group.is_none() => {
                        let mut n = Node::new(Kind::Null, pos);
                        push_ancestry(&mut n, &rhs);
                        n.kind = Kind::Bind(name, Box::new(rhs));
                        n
                    }
                    _ => {
                        return Err(Error::at(
                            "S0212",
                            pos,
                            "The left side of := must be a variable name (start with $)",
                        ))
                    }
                }
            }
            "~>" => {
                let rhs = self.expression(40)?;
                let mut n = Node::new(Kind::Null, pos);
                push_ancestry(&mut n, &left);
                push_ancestry(&mut n, &rhs);
                n.kind = Kind::Apply(Box::new(left), Box::new(rhs));
                n
            }
            "@" | "#" => {
                let rhs = self.expression(80)?;
                let Kind::Variable(var) = rhs.kind else {
                    return Err(Error::at(
                        "S0214",
                        rhs.pos,
                        format!("The right side of {op} must be a variable name (start with $)"),
                    ));
                };
                bind_step(left, op, var, pos)?
            }
            _ => {
                let (o, bp) = match op {
                    "+" => (BinOp::Add, 50),
                    "-" => (BinOp::Sub, 50),
                    "*" => (BinOp::Mul, 60),
                    "/" => (BinOp::Div, 60),
                    "%" => (BinOp::Mod, 60),
                    "=" => (BinOp::Eq, 40),
                    "!=" => (BinOp::Ne, 40),
                    "<" => (BinOp::Lt, 40),
                    "<=" => (BinOp::Le, 40),
                    ">" => (BinOp::Gt, 40),
                    ">=" => (BinOp::Ge, 40),
                    "&" => (BinOp::Concat, 50),
                    "and" => (BinOp::And, 30),
                    "or" => (BinOp::Or, 25),
                    "in" => (BinOp::In, 40),
                    ".." => (BinOp::Range, 20),
                    "?:" => (BinOp::Elvis, 40),
                    "??" => (BinOp::Coalesce, 40),
                    other => {
                        return Err(Error::at("S0201", pos, format!("Syntax error: {other}"))
                            .with_token(other))
                    }
                };
                let rhs = self.expression(bp)?;
                let mut n = Node::new(Kind::Null, pos);
                push_ancestry(&mut n, &left);
                push_ancestry(&mut n, &rhs);
                n.kind = bin(o, left, rhs).kind;
                n
            }
        })
    }
}

/// Processes `step@$var` and `step#$var`.
fn bind_step(left: Node, op: &str, var: String, pos: usize) -> Result<Node> {
    let mut result = left;
    if op == "@" {
        let step = match &mut result.kind {
            Kind::Path(steps) => steps.last_mut().expect("paths have steps"),
            _ => &mut result,
        };
        if !step.stages.is_empty() || !step.predicates.is_empty() {
            return Err(Error::at(
                "S0215",
                pos,
                "A context variable binding must precede any predicates on a step",
            ));
        }
        if matches!(step.kind, Kind::Sort(_)) {
            return Err(Error::at(
                "S0216",
                pos,
                "A context variable binding must precede the 'order-by' clause on a step",
            ));
        }
        step.focus = Some(var);
        step.tuple = true;
        return Ok(result);
    }
    if !matches!(result.kind, Kind::Path(_)) {
        let mut step = result;
        let preds = std::mem::take(&mut step.predicates);
        step.stages.extend(preds.into_iter().map(Stage::Filter));
        let p = step.pos;
        result = Node::new(Kind::Path(vec![step]), p);
    }
    let Kind::Path(steps) = &mut result.kind else {
        unreachable!()
    };
    let step = steps.last_mut().expect("paths have steps");
    if step.stages.is_empty() {
        step.index = Some(var);
    } else {
        step.stages.push(Stage::Index(var));
    }
    step.tuple = true;
    Ok(result)
}

fn path_of(step: Node) -> Node {
    let pos = step.pos;
    Node::new(Kind::Path(vec![step]), pos)
}

fn join_path(left: Node, rhs: Node) -> Result<Node> {
    let mut path =
        if matches!(left.kind, Kind::Path(_)) && left.group.is_none() && left.predicates.is_empty()
        {
            left
        } else {
            let pos = left.pos;
            Node::new(Kind::Path(vec![left]), pos)
        };
    let Kind::Path(steps) = &mut path.kind else {
        unreachable!()
    };
    let mut rest_steps = match rhs.kind {
        Kind::Path(s) if rhs.group.is_none() && rhs.predicates.is_empty() => {
            path.keep_array |= rhs.keep_array;
            s
        }
        _ => {
            let mut r = rhs;
            let preds = std::mem::take(&mut r.predicates);
            r.stages.extend(preds.into_iter().map(Stage::Filter));
            vec![r]
        }
    };
    for step in rest_steps.iter_mut() {
        match &step.kind {
            Kind::Number(_) | Kind::Bool(_) | Kind::Null => {
                return Err(Error::at(
                    "S0213",
                    step.pos,
                    "The literal value cannot be used as a step within a path expression",
                ))
            }
            Kind::String(s) => step.kind = Kind::Name(s.clone()),
            _ => {}
        }
    }
    steps.extend(rest_steps);
    if let Some(first) = steps.first_mut() {
        if let Kind::String(s) = &first.kind {
            first.kind = Kind::Name(s.clone());
        }
    }
    if let Some(first) = steps.first_mut() {
        if matches!(first.kind, Kind::Array(_)) {
            first.cons_array = true;
        }
    }
    if let Some(last) = steps.last_mut() {
        if matches!(last.kind, Kind::Array(_)) {
            last.cons_array = true;
        }
    }
    Ok(path)
}
