//! The abstract syntax tree produced by the parser, after JSONata's path processing.

use std::sync::Arc;

/// A node with its position (character offset) in the expression.
#[derive(Debug, Clone)]
pub struct Node {
    /// What the node is.
    pub kind: Kind,
    /// Character offset of the node's token.
    pub pos: usize,
    /// Predicates applied to the node's whole result (`(expr)[p]`, `[1,2][0]`).
    pub predicates: Vec<Node>,
    /// Per-step filters (`a.b[p]` applies `p` to each `b` result of each input item) and
    /// positional bindings (`a.b[p]#$i`).
    pub stages: Vec<Stage>,
    /// `step@$v`: binds each result to `$v`, keeping the context (joins).
    pub focus: Option<String>,
    /// `step#$i`: binds each result's position to `$i`.
    pub index: Option<String>,
    /// The step binds variables: its path is evaluated as a tuple stream.
    pub tuple: bool,
    /// A step that a parent operator `%` refers to: each result binds the step's input
    /// under this ancestor label.
    pub ancestor: Option<usize>,
    /// Parent slots not yet resolved to a step (parse time only).
    pub seeking: Vec<usize>,
    /// A grouping object constructor following the node (`expr{k: v}`).
    pub group: Option<Box<Group>>,
    /// `expr[]`: keep singleton arrays.
    pub keep_array: bool,
    /// Array constructor flagged by path processing so that it is not flattened.
    pub cons_array: bool,
}

/// A grouping or object constructor: key/value expression pairs.
#[derive(Debug, Clone)]
pub struct Group {
    /// The `(key, value)` expressions.
    pub pairs: Vec<(Node, Node)>,
    /// Position of the `{`.
    pub pos: usize,
}

/// A per-step stage.
#[derive(Debug, Clone)]
pub enum Stage {
    /// A predicate `[…]`.
    Filter(Node),
    /// A positional binding `#$name` after predicates.
    Index(String),
}

/// One order-by term of `^(…)`.
#[derive(Debug, Clone)]
pub struct SortTerm {
    /// `>`: descending.
    pub descending: bool,
    /// The sort key expression.
    pub expr: Node,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `&`
    Concat,
    /// `and`
    And,
    /// `or`
    Or,
    /// `in`
    In,
    /// `..`
    Range,
    /// `?:`
    Elvis,
    /// `??`
    Coalesce,
}

/// The node kinds.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A string literal.
    String(String),
    /// A number literal.
    Number(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// A regular expression literal.
    Regex(Arc<regex::Regex>, String),
    /// A field name (path step).
    Name(String),
    /// `$name`; `$` is the empty name (context) and `$$` is `"$"` (root).
    Variable(String),
    /// `*`
    Wildcard,
    /// `**`
    Descendant,
    /// A location path: its steps.
    Path(Vec<Node>),
    /// A binary operator.
    Binary(BinOp, Box<Node>, Box<Node>),
    /// Unary minus.
    Neg(Box<Node>),
    /// `[a, b, …]`
    Array(Vec<Node>),
    /// `{k: v, …}` standalone.
    Object(Group),
    /// `( a; b; … )`
    Block(Vec<Node>),
    /// `cond ? then : else`
    Condition(Box<Node>, Box<Node>, Option<Box<Node>>),
    /// `$x := value`
    Bind(String, Box<Node>),
    /// A function call; `partial` when an argument is `?`.
    Call {
        /// The function expression.
        procedure: Box<Node>,
        /// The arguments.
        args: Vec<Node>,
        /// Partial application.
        partial: bool,
    },
    /// `?` argument placeholder of a partial application.
    Placeholder,
    /// `function($a, $b){ body }`
    Lambda {
        /// Parameter names without `$`.
        params: Vec<String>,
        /// The body, shared with the closures made from it.
        body: Arc<Node>,
    },
    /// `lhs ~> rhs`
    Apply(Box<Node>, Box<Node>),
    /// The order-by step `^(…)`.
    Sort(Vec<SortTerm>),
    /// `| pattern | update, delete |`
    Transform {
        /// Which objects to update.
        pattern: Box<Node>,
        /// The object to merge into each.
        update: Box<Node>,
        /// Keys to delete.
        delete: Option<Box<Node>>,
    },
    /// `%` (parent): the ancestor label it reads.
    Parent(usize),
}

impl Node {
    /// A node of a kind at a position with no predicates.
    pub fn new(kind: Kind, pos: usize) -> Self {
        Node {
            kind,
            pos,
            predicates: Vec::new(),
            stages: Vec::new(),
            focus: None,
            index: None,
            tuple: false,
            ancestor: None,
            seeking: Vec::new(),
            group: None,
            keep_array: false,
            cons_array: false,
        }
    }
}
