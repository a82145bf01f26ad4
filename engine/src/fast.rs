//! Native evaluation of the common shapes of expression, without the CEL interpreter.
//!
//! At load, every field's syntax tree (as the `cel` parser produced it, macros
//! expanded) is translated into a [`Node`] tree when it can be: variable paths,
//! literals, `default`, conditionals, comparisons, `+`, `size`, `type`, `toJson`,
//! `flatten*`, list and map literals and `map`/`filter` comprehensions. Per
//! request, [`Eval`] evaluates that tree straight from the [`Exchange`]: the
//! exchange's messages, choices and JSON are read in place (no CEL maps are built,
//! nothing is cloned per element), and `flattenRecursive` at the top of a field
//! writes its attributes straight into the span record.
//!
//! The native evaluator only ever answers when it is sure to answer exactly as the
//! interpreter would. Anything it does not model (an operator on unusual operand
//! types, a function it does not know, an optional value, ...) is a [`Fail::Bail`],
//! and any run-time error is a [`Fail::Error`]: either way the caller discards what
//! this field produced and evaluates the field again with the CEL interpreter,
//! which gives the error its message and the attribute its value. So an error is
//! still reported and counted exactly as before, and the native path can only be
//! faster, never different. `engine/src/fast/tests` (below) and the `expr_eval`
//! fuzz target compare the two paths.
//!
//! One exception: evaluation has a budget of [`MAX_STEPS`] steps per field (a
//! comprehension iteration, a list item copied, a JSON or flattened element
//! written, 64 bytes of string copied). A field past it fails with
//! [`Fail::Budget`] and is not handed to the interpreter: a nested comprehension
//! over a request's messages (`llm.prompt.map(a, llm.prompt.map(b, b))`) is
//! quadratic in the request, and must not hold a proxy worker for seconds.

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use serde_json::Value as Json;
use std::cell::Cell;
use std::fmt::Write as _;
use std::rc::Rc;

use crate::attributes::{AttrValue, MAX_VALUE_DEPTH};
use crate::context::{self, REDACTED, Var, Visibility};
use crate::exchange::{Choice, Exchange, Message, ToolCall};

/// Internal helper the `default` macro expands to (see [`crate::functions`]).
const IS_NULL: &str = "__celgate_is_null";

/// A compiled expression, for native evaluation.
#[derive(Debug)]
pub(crate) enum Node {
    Lit(Lit),
    /// A context variable.
    Var(Var),
    /// A comprehension variable, by its slot on the locals stack.
    Local(usize),
    /// A type name used as a value (`string` in `type(x) == string`).
    Type(&'static str),
    Select(Box<Node>, Field),
    /// `has(x.field)`.
    Has(Box<Node>, Field),
    Index(Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    /// `default(x, fallback)`, recognised in its macro expansion.
    Default(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    NotStrictlyFalse(Box<Node>),
    IsNull(Box<Node>),
    /// `==` (or `!=` when the flag is set).
    Eq(Box<Node>, Box<Node>, bool),
    Add(Box<Node>, Box<Node>),
    Sub(Box<Node>, Box<Node>),
    Cmp(Box<Node>, Box<Node>, CmpOp),
    Size(Box<Node>),
    /// `double(x)` of a number; anything else (a string to parse) is the
    /// interpreter's.
    ToDouble(Box<Node>),
    TypeOf(Box<Node>),
    ToJson(Box<Node>),
    /// `flatten` (1 level) or `flattenRecursive` ([`MAX_VALUE_DEPTH`] levels).
    Flatten(Box<Node>, usize),
    StrTest(Box<Node>, Box<Node>, StrOp),
    List(Vec<Node>),
    /// A map literal with distinct string-literal keys, in source order, and the
    /// entry indices in key order.
    Map(Vec<MapEntry>, Vec<usize>),
    /// A `map`/`filter` comprehension: for each item of `range` bound to a new
    /// local, append `item` when `guard` (if any) holds.
    Comp {
        range: Box<Node>,
        guard: Option<Box<Node>>,
        item: Box<Node>,
    },
    /// Something the native evaluator does not model: evaluating it bails out.
    Bail,
}

/// A field name, with the fields of the exchange's own maps (messages, choices,
/// tool calls) resolved once at load.
#[derive(Debug)]
pub(crate) struct Field {
    name: Box<str>,
    id: FieldId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldId {
    Role,
    Content,
    Name,
    ToolCalls,
    ToolCallId,
    Id,
    Arguments,
    Index,
    FinishReason,
    Other,
}

impl Field {
    fn new(name: &str) -> Field {
        let id = match name {
            "role" => FieldId::Role,
            "content" => FieldId::Content,
            "name" => FieldId::Name,
            "tool_calls" => FieldId::ToolCalls,
            "tool_call_id" => FieldId::ToolCallId,
            "id" => FieldId::Id,
            "arguments" => FieldId::Arguments,
            "index" => FieldId::Index,
            "finish_reason" => FieldId::FinishReason,
            _ => FieldId::Other,
        };
        Field {
            name: name.into(),
            id,
        }
    }
}

#[derive(Debug)]
pub(crate) struct MapEntry {
    key: Box<str>,
    /// Empty or dotted: joined into a flattened key, it may collide.
    odd_key: bool,
    value: Node,
}

#[derive(Debug)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Box<str>),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum StrOp {
    StartsWith,
    EndsWith,
    Contains,
}

/// Type names usable as values, and the name `type()` gives values of that type.
const TYPE_NAMES: &[&str] = &[
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "list",
    "map",
    "null_type",
];

/// Translate a checked expression. `None` when the whole expression is something
/// the native evaluator does not model (there is no point trying it per request).
pub(crate) fn compile(e: &IdedExpr) -> Option<Node> {
    let node = Compiler { scope: Vec::new() }.node(e);
    match node {
        Node::Bail => None,
        n => Some(n),
    }
}

struct Compiler<'e> {
    /// Comprehension variables in scope, outermost first: a variable's index is
    /// its slot on the locals stack.
    scope: Vec<&'e str>,
}

fn boxed(n: Node) -> Box<Node> {
    Box::new(n)
}

impl<'e> Compiler<'e> {
    fn local(&self, name: &str) -> Option<usize> {
        self.scope.iter().rposition(|s| *s == name)
    }

    fn node(&mut self, e: &'e IdedExpr) -> Node {
        match &e.expr {
            Expr::Literal(l) => match l {
                LiteralValue::Null => Node::Lit(Lit::Null),
                LiteralValue::Boolean(b) => Node::Lit(Lit::Bool(*b.inner())),
                LiteralValue::Int(i) => Node::Lit(Lit::Int(*i.inner())),
                LiteralValue::UInt(u) => Node::Lit(Lit::UInt(*u.inner())),
                LiteralValue::Double(d) => Node::Lit(Lit::Double(*d.inner())),
                LiteralValue::String(s) => Node::Lit(Lit::Str(s.inner().into())),
                LiteralValue::Bytes(_) => Node::Bail,
            },
            Expr::Ident(name) => self.path(name, &[]),
            Expr::Select(sel) => {
                if sel.test {
                    // has(a.b.c): resolve `a.b`, then test for `c`.
                    if let Expr::Ident(root) = &sel.operand.expr
                        && self.local(root).is_none()
                        && context::ROOTS.contains(&root.as_str())
                    {
                        // A whole root holds exactly its known fields, and the
                        // checker has made sure this one is known.
                        return if context::is_known(root, &sel.field) {
                            Node::Lit(Lit::Bool(true))
                        } else {
                            Node::Bail
                        };
                    }
                    let operand = self.node(&sel.operand);
                    return Node::Has(boxed(operand), Field::new(&sel.field));
                }
                let mut fields = Vec::new();
                let mut cur = e;
                loop {
                    match &cur.expr {
                        Expr::Select(s) if !s.test => {
                            fields.push(s.field.as_str());
                            cur = &s.operand;
                        }
                        Expr::Ident(root) => {
                            fields.reverse();
                            return self.path(root, &fields);
                        }
                        _ => break,
                    }
                }
                let operand = self.node(&sel.operand);
                Node::Select(boxed(operand), Field::new(&sel.field))
            }
            Expr::Call(call) => self.call(call),
            Expr::List(list) => {
                if !list.optional_indices.is_empty() {
                    return Node::Bail;
                }
                Node::List(list.elements.iter().map(|x| self.node(x)).collect())
            }
            Expr::Map(map) => {
                let mut entries: Vec<MapEntry> = Vec::with_capacity(map.entries.len());
                for entry in &map.entries {
                    let EntryExpr::MapEntry(m) = &entry.expr else {
                        return Node::Bail;
                    };
                    let Expr::Literal(LiteralValue::String(k)) = &m.key.expr else {
                        return Node::Bail;
                    };
                    let key = k.inner();
                    if m.optional || entries.iter().any(|e| *e.key == *key) {
                        return Node::Bail;
                    }
                    let value = self.node(&m.value);
                    entries.push(MapEntry {
                        key: key.into(),
                        odd_key: key.is_empty() || key.contains('.'),
                        value,
                    });
                }
                let mut order: Vec<usize> = (0..entries.len()).collect();
                order.sort_by(|a, b| entries[*a].key.cmp(&entries[*b].key));
                Node::Map(entries, order)
            }
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Struct(_) | Expr::Unspecified => Node::Bail,
        }
    }

    /// `root.f1.f2...`, resolved the way the interpreter resolves qualified names:
    /// the innermost comprehension variable named `root`, else the longest prefix
    /// that names a context variable.
    fn path(&mut self, root: &str, fields: &[&'e str]) -> Node {
        let (mut node, rest) = if let Some(slot) = self.local(root) {
            (Node::Local(slot), fields)
        } else if context::ROOTS.contains(&root) {
            // Context variables are `root.field`: a bare root (the whole `llm` map)
            // is left to the interpreter.
            let Some((first, rest)) = fields.split_first() else {
                return Node::Bail;
            };
            match context::lookup(&format!("{root}.{first}")) {
                Some(var) => (Node::Var(var), rest),
                None => return Node::Bail,
            }
        } else if fields.is_empty()
            && let Some(t) = TYPE_NAMES.iter().find(|t| **t == root)
        {
            (Node::Type(t), fields)
        } else {
            return Node::Bail;
        };
        for f in rest {
            node = Node::Select(boxed(node), Field::new(f));
        }
        node
    }

    fn call(&mut self, call: &'e cel::common::ast::CallExpr) -> Node {
        let name = call.func_name.as_str();
        let args = &call.args;
        if let Some(target) = &call.target {
            // Member calls: only on a value whose name cannot be a function
            // namespace (`optional.of(...)`): a local or a context path.
            let root_ok = match target_root(target) {
                Some(root) => self.local(root).is_some() || context::ROOTS.contains(&root),
                None => true,
            };
            if !root_ok {
                return Node::Bail;
            }
            return match (name, args.len()) {
                ("size", 0) => Node::Size(boxed(self.node(target))),
                ("startsWith", 1) => self.str_test(target, &args[0], StrOp::StartsWith),
                ("endsWith", 1) => self.str_test(target, &args[0], StrOp::EndsWith),
                ("contains", 1) => self.str_test(target, &args[0], StrOp::Contains),
                _ => Node::Bail,
            };
        }
        if name == operators::CONDITIONAL
            && args.len() == 3
            && let Some(n) = self.default_macro(args)
        {
            return n;
        }
        let mut arg = |i: usize| boxed(self.node(&args[i]));
        match (name, args.len()) {
            (operators::CONDITIONAL, 3) => Node::Cond(arg(0), arg(1), arg(2)),
            (operators::LOGICAL_AND, 2) => Node::And(arg(0), arg(1)),
            (operators::LOGICAL_OR, 2) => Node::Or(arg(0), arg(1)),
            (operators::LOGICAL_NOT, 1) => Node::Not(arg(0)),
            (operators::NEGATE, 1) => Node::Neg(arg(0)),
            (operators::NOT_STRICTLY_FALSE, 1) => Node::NotStrictlyFalse(arg(0)),
            (operators::EQUALS, 2) => Node::Eq(arg(0), arg(1), false),
            (operators::NOT_EQUALS, 2) => Node::Eq(arg(0), arg(1), true),
            (operators::INDEX, 2) => Node::Index(arg(0), arg(1)),
            (operators::ADD, 2) => Node::Add(arg(0), arg(1)),
            (operators::SUBSTRACT, 2) => Node::Sub(arg(0), arg(1)),
            (operators::LESS, 2) => Node::Cmp(arg(0), arg(1), CmpOp::Lt),
            (operators::LESS_EQUALS, 2) => Node::Cmp(arg(0), arg(1), CmpOp::Le),
            (operators::GREATER, 2) => Node::Cmp(arg(0), arg(1), CmpOp::Gt),
            (operators::GREATER_EQUALS, 2) => Node::Cmp(arg(0), arg(1), CmpOp::Ge),
            ("size", 1) => Node::Size(arg(0)),
            ("double", 1) => Node::ToDouble(arg(0)),
            ("type", 1) => Node::TypeOf(arg(0)),
            ("toJson" | "to_json", 1) => Node::ToJson(arg(0)),
            ("flatten", 1) => Node::Flatten(arg(0), 1),
            ("flattenRecursive" | "flatten_recursive", 1) => Node::Flatten(arg(0), MAX_VALUE_DEPTH),
            (IS_NULL, 1) => Node::IsNull(arg(0)),
            _ => Node::Bail,
        }
    }

    fn str_test(&mut self, target: &'e IdedExpr, arg: &'e IdedExpr, op: StrOp) -> Node {
        Node::StrTest(boxed(self.node(target)), boxed(self.node(arg)), op)
    }

    /// `@not_strictly_false(__celgate_is_null(x)) ? fallback : x`, what
    /// `default(x, fallback)` expands to: evaluated with `x` once.
    fn default_macro(&mut self, args: &'e [IdedExpr]) -> Option<Node> {
        let Expr::Call(nsf) = &args[0].expr else {
            return None;
        };
        if nsf.func_name != operators::NOT_STRICTLY_FALSE
            || nsf.target.is_some()
            || nsf.args.len() != 1
        {
            return None;
        }
        let Expr::Call(is_null) = &nsf.args[0].expr else {
            return None;
        };
        if is_null.func_name != IS_NULL
            || is_null.target.is_some()
            || is_null.args.len() != 1
            || is_null.args[0] != args[2]
        {
            return None;
        }
        let x = self.node(&args[2]);
        let fallback = self.node(&args[1]);
        Some(Node::Default(boxed(x), boxed(fallback)))
    }

    /// The `map`/`filter` macro shapes (the interpreter's "append step"):
    /// `[]` accumulator, `true` loop condition, the accumulator as result, and a
    /// step `@acc + [item]` or `guard ? @acc + [item] : @acc`.
    fn comprehension(&mut self, c: &'e cel::common::ast::ComprehensionExpr) -> Node {
        let accu = c.accu_var.as_str();
        let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if n == accu);
        let empty_init = matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty() && l.optional_indices.is_empty());
        let true_cond =
            matches!(&c.loop_cond.expr, Expr::Literal(LiteralValue::Boolean(b)) if *b.inner());
        if c.iter_var2.is_some() || !empty_init || !true_cond || !is_accu(&c.result) {
            return Node::Bail;
        }
        // `@acc + [item]`: the item expression.
        let appended = |e: &'e IdedExpr| -> Option<&'e IdedExpr> {
            let Expr::Call(call) = &e.expr else {
                return None;
            };
            if call.func_name != operators::ADD || call.target.is_some() {
                return None;
            }
            match call.args.as_slice() {
                [lhs, rhs] if is_accu(lhs) => match &rhs.expr {
                    Expr::List(l) if l.elements.len() == 1 && l.optional_indices.is_empty() => {
                        Some(&l.elements[0])
                    }
                    _ => None,
                },
                _ => None,
            }
        };
        let (guard, item) = match &c.loop_step.expr {
            Expr::Call(call)
                if call.func_name == operators::CONDITIONAL && call.target.is_none() =>
            {
                match call.args.as_slice() {
                    [guard, step, otherwise] if is_accu(otherwise) => match appended(step) {
                        Some(item) => (Some(guard), item),
                        None => return Node::Bail,
                    },
                    _ => return Node::Bail,
                }
            }
            _ => match appended(&c.loop_step) {
                Some(item) => (None, item),
                None => return Node::Bail,
            },
        };
        let range = self.node(&c.iter_range);
        self.scope.push(c.iter_var.as_str());
        let guard = guard.map(|g| boxed(self.node(g)));
        let item = self.node(item);
        self.scope.pop();
        Node::Comp {
            range: boxed(range),
            guard,
            item: boxed(item),
        }
    }
}

/// The first identifier of a qualified-name target (`a` of `a.b.c`).
fn target_root(e: &IdedExpr) -> Option<&str> {
    let mut cur = e;
    loop {
        match &cur.expr {
            Expr::Ident(name) => return Some(name),
            Expr::Select(s) if !s.test => cur = &s.operand,
            _ => return None,
        }
    }
}

/// Why native evaluation gave up on a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fail {
    /// The interpreter would fail here too (its message is not modelled).
    Error,
    /// Not modelled: the interpreter must decide.
    Bail,
    /// Over [`MAX_STEPS`]: the field has no value, and the interpreter is not
    /// asked (it would take longer still).
    Budget,
}

/// Steps one field's evaluation may take. A linear pass over a 10 MiB request
/// (every message, every 64 bytes of text) stays well within it; the quadratic
/// `llm.prompt.map(a, llm.prompt.map(b, b))` on 6,000 messages (36 M steps) is
/// stopped after about a 36th of its work.
pub const MAX_STEPS: u64 = 1_000_000;

/// The steps left to the field being evaluated.
#[derive(Debug)]
struct Steps(Cell<u64>);

impl Steps {
    /// Spends `n` steps, or fails once the budget is spent.
    #[inline]
    fn take(&self, n: usize) -> Result<(), Fail> {
        let left = self.0.get();
        match left.checked_sub(n as u64) {
            Some(rest) => {
                self.0.set(rest);
                Ok(())
            }
            None => Err(Fail::Budget),
        }
    }

    /// A string of `s.len()` bytes copied: a step per 64 bytes.
    #[inline]
    fn copy(&self, s: &str) -> Result<(), Fail> {
        self.take(1 + s.len() / 64)
    }

    fn reset(&self) {
        self.0.set(MAX_STEPS);
    }
}

type R<'a> = Result<V<'a>, Fail>;

/// A value during native evaluation. Exchange data is viewed in place.
#[derive(Clone, Debug)]
enum V<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(&'a str),
    /// A string made during evaluation (`+`, `toJson`).
    Owned(String),
    Type(&'static str),
    List(Rc<Vec<V<'a>>>),
    /// Distinct string keys, in insertion order.
    Map(Rc<Vec<(&'a str, V<'a>)>>),
    Messages(&'a [Message]),
    Message(&'a Message),
    Choices(&'a [Choice]),
    Choice(&'a Choice),
    ToolCalls(&'a [ToolCall]),
    ToolCall(&'a ToolCall),
    /// `llm.completion`: each choice's content, `""` when absent.
    Contents(&'a [Choice]),
    /// `llm.finishReasons`: each choice's finish reason, `""` when absent.
    FinishReasons(&'a [Choice]),
    /// `llm.toolCalls`: the tool calls of every choice.
    AllToolCalls(&'a [Choice]),
    /// `llm.tools`: JSON values at depth 0.
    JsonList(&'a [Json]),
    /// A JSON array or object at a depth (see [`json`]).
    Json(&'a Json, usize),
    /// `llm.params`: a map, the last of duplicate keys winning.
    Params(&'a [(String, Json)]),
    /// Headers: a map, the last of duplicate names winning.
    Headers(&'a [(String, String)]),
    /// What `flatten*` returns.
    Flat(Rc<Vec<(String, AttrValue)>>),
}

/// JSON as the resolver presents it: nesting beyond [`MAX_VALUE_DEPTH`] is the
/// string `"…"`, numbers are ints when they fit, else doubles.
fn json(j: &Json, depth: usize) -> V<'_> {
    if depth > MAX_VALUE_DEPTH {
        return V::Str("…");
    }
    match j {
        Json::Null => V::Null,
        Json::Bool(b) => V::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => V::Int(i),
            None => V::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => V::Str(s),
        Json::Array(_) | Json::Object(_) => V::Json(j, depth),
    }
}

fn opt_str(s: Option<&str>) -> V<'_> {
    match s {
        Some(s) => V::Str(s),
        None => V::Null,
    }
}

fn opt_int<'a>(i: Option<i64>) -> V<'a> {
    match i {
        Some(i) => V::Int(i),
        None => V::Null,
    }
}

/// Fields of the resolver's message map, in key order.
const MESSAGE_KEYS: [&str; 5] = ["content", "name", "role", "tool_call_id", "tool_calls"];
const CHOICE_KEYS: [&str; 5] = ["content", "finish_reason", "index", "role", "tool_calls"];
const TOOL_CALL_KEYS: [&str; 3] = ["arguments", "id", "name"];

impl<'a> V<'a> {
    fn as_str(&self) -> Option<&str> {
        match self {
            V::Str(s) => Some(s),
            V::Owned(s) => Some(s),
            _ => None,
        }
    }

    fn is_list(&self) -> bool {
        self.list_len().is_some()
    }

    fn is_map(&self) -> bool {
        matches!(
            self,
            V::Map(_)
                | V::Message(_)
                | V::Choice(_)
                | V::ToolCall(_)
                | V::Params(_)
                | V::Headers(_)
        ) || matches!(self, V::Json(Json::Object(_), _))
    }

    fn list_len(&self) -> Option<usize> {
        Some(match self {
            V::List(l) => l.len(),
            V::Messages(m) => m.len(),
            V::Choices(c) | V::Contents(c) | V::FinishReasons(c) => c.len(),
            V::ToolCalls(t) => t.len(),
            V::AllToolCalls(c) => c.iter().map(|c| c.tool_calls.len()).sum(),
            V::JsonList(j) => j.len(),
            V::Json(Json::Array(a), _) => a.len(),
            _ => return None,
        })
    }

    /// Item `i` of a list; `i` is in range.
    fn list_get(&self, i: usize) -> V<'a> {
        match self {
            V::List(l) => l[i].clone(),
            V::Messages(m) => V::Message(&m[i]),
            V::Choices(c) => V::Choice(&c[i]),
            V::Contents(c) => V::Str(c[i].content.as_deref().unwrap_or("")),
            V::FinishReasons(c) => V::Str(c[i].finish_reason.as_deref().unwrap_or("")),
            V::ToolCalls(t) => V::ToolCall(&t[i]),
            V::AllToolCalls(c) => {
                let mut i = i;
                for choice in c.iter() {
                    if i < choice.tool_calls.len() {
                        return V::ToolCall(&choice.tool_calls[i]);
                    }
                    i -= choice.tool_calls.len();
                }
                unreachable!("index checked against list_len")
            }
            V::JsonList(j) => json(&j[i], 0),
            V::Json(Json::Array(a), d) => json(&a[i], d + 1),
            _ => unreachable!("list_get on a list"),
        }
    }

    /// `None` when this is not a map; `Some(None)` when the key is absent.
    fn map_get(&self, key: &str) -> Option<Option<V<'a>>> {
        Some(match self {
            V::Map(m) => m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()),
            V::Message(m) => Some(match key {
                "role" => V::Str(&m.role),
                "content" => opt_str(m.content.as_deref()),
                "name" => opt_str(m.name.as_deref()),
                "tool_calls" => V::ToolCalls(&m.tool_calls),
                "tool_call_id" => opt_str(m.tool_call_id.as_deref()),
                _ => return Some(None),
            }),
            V::Choice(c) => Some(match key {
                "index" => V::Int(i64::from(c.index)),
                "role" => V::Str(&c.role),
                "content" => opt_str(c.content.as_deref()),
                "tool_calls" => V::ToolCalls(&c.tool_calls),
                "finish_reason" => opt_str(c.finish_reason.as_deref()),
                _ => return Some(None),
            }),
            V::ToolCall(t) => Some(match key {
                "id" => V::Str(&t.id),
                "name" => V::Str(&t.name),
                "arguments" => V::Str(&t.arguments),
                _ => return Some(None),
            }),
            V::Params(p) => p
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| json(v, 0)),
            V::Headers(h) => h
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| V::Str(v)),
            V::Json(Json::Object(o), d) => o.get(key).map(|v| json(v, d + 1)),
            _ => return None,
        })
    }

    /// [`V::map_get`] with the field resolved at load.
    fn map_get_field(&self, f: &Field) -> Option<Option<V<'a>>> {
        let id = f.id;
        Some(Some(match (self, id) {
            (V::Message(m), FieldId::Role) => V::Str(&m.role),
            (V::Message(m), FieldId::Content) => opt_str(m.content.as_deref()),
            (V::Message(m), FieldId::Name) => opt_str(m.name.as_deref()),
            (V::Message(m), FieldId::ToolCalls) => V::ToolCalls(&m.tool_calls),
            (V::Message(m), FieldId::ToolCallId) => opt_str(m.tool_call_id.as_deref()),
            (V::Message(_), _) => return Some(None),
            (V::Choice(c), FieldId::Index) => V::Int(i64::from(c.index)),
            (V::Choice(c), FieldId::Role) => V::Str(&c.role),
            (V::Choice(c), FieldId::Content) => opt_str(c.content.as_deref()),
            (V::Choice(c), FieldId::ToolCalls) => V::ToolCalls(&c.tool_calls),
            (V::Choice(c), FieldId::FinishReason) => opt_str(c.finish_reason.as_deref()),
            (V::Choice(_), _) => return Some(None),
            (V::ToolCall(t), FieldId::Id) => V::Str(&t.id),
            (V::ToolCall(t), FieldId::Name) => V::Str(&t.name),
            (V::ToolCall(t), FieldId::Arguments) => V::Str(&t.arguments),
            (V::ToolCall(_), _) => return Some(None),
            _ => return self.map_get(&f.name),
        }))
    }

    /// A map's entries in key order (byte order), duplicates resolved.
    fn map_entries(&self) -> Option<Vec<(&'a str, V<'a>)>> {
        let fixed = |keys: &[&'static str]| -> Vec<(&'a str, V<'a>)> {
            keys.iter()
                .map(|k| (*k, self.map_get(k).flatten().unwrap_or(V::Null)))
                .collect()
        };
        Some(match self {
            V::Map(m) => {
                let mut e: Vec<_> = m.iter().map(|(k, v)| (*k, v.clone())).collect();
                e.sort_by(|a, b| a.0.cmp(b.0));
                e
            }
            V::Message(_) => fixed(&MESSAGE_KEYS),
            V::Choice(_) => fixed(&CHOICE_KEYS),
            V::ToolCall(_) => fixed(&TOOL_CALL_KEYS),
            V::Params(p) => last_wins(p.iter().map(|(k, v)| (k.as_str(), json(v, 0)))),
            V::Headers(h) => last_wins(h.iter().map(|(k, v)| (k.as_str(), V::Str(v)))),
            V::Json(Json::Object(o), d) => {
                let mut e: Vec<_> = o
                    .iter()
                    .map(|(k, v)| (k.as_str(), json(v, d + 1)))
                    .collect();
                e.sort_by(|a, b| a.0.cmp(b.0));
                e
            }
            _ => return None,
        })
    }

    fn map_len(&self) -> Option<usize> {
        Some(match self {
            V::Map(m) => m.len(),
            V::Message(_) => MESSAGE_KEYS.len(),
            V::Choice(_) => CHOICE_KEYS.len(),
            V::ToolCall(_) => TOOL_CALL_KEYS.len(),
            V::Params(_) | V::Headers(_) => self.map_entries()?.len(),
            V::Json(Json::Object(o), _) => o.len(),
            _ => return None,
        })
    }

    /// [`V::scalar`], moving a string made during evaluation.
    fn into_scalar(self) -> Option<AttrValue> {
        match self {
            V::Owned(s) => Some(AttrValue::String(s)),
            v => v.scalar(),
        }
    }

    /// The value as a scalar attribute, as [`crate::attributes::scalar`] does.
    fn scalar(&self) -> Option<AttrValue> {
        Some(match self {
            V::Str(s) => AttrValue::String((*s).to_owned()),
            V::Owned(s) => AttrValue::String(s.clone()),
            V::Int(i) => AttrValue::Int(*i),
            V::Double(d) => AttrValue::Double(*d),
            V::Bool(b) => AttrValue::Bool(*b),
            V::UInt(u) => match i64::try_from(*u) {
                Ok(i) => AttrValue::Int(i),
                Err(_) => AttrValue::String(u.to_string()),
            },
            _ => return None,
        })
    }

    fn type_name(&self) -> Option<&'static str> {
        Some(match self {
            V::Null => "null_type",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::UInt(_) => "uint",
            V::Double(_) => "double",
            V::Str(_) | V::Owned(_) => "string",
            V::Type(_) | V::Flat(_) => return None,
            v if v.is_list() => "list",
            v if v.is_map() => "map",
            _ => return None,
        })
    }
}

/// Sorted by key, the last value of a duplicate key kept (as collecting into a
/// `HashMap` does).
fn last_wins<'a>(
    entries: impl DoubleEndedIterator<Item = (&'a str, V<'a>)>,
) -> Vec<(&'a str, V<'a>)> {
    // Reversed, then sorted stably: the first of each run of equal keys is the
    // last given, and `dedup_by` keeps the first.
    let mut e: Vec<(&'a str, V<'a>)> = entries.rev().collect();
    e.sort_by(|a, b| a.0.cmp(b.0));
    e.dedup_by(|later, first| later.0 == first.0);
    e
}

/// `a == b` as the interpreter decides it; `None` when not modelled.
fn equals(a: &V, b: &V) -> Option<bool> {
    use V::*;
    let scalarish = |v: &V| {
        matches!(
            v,
            Null | Bool(_) | Int(_) | UInt(_) | Double(_) | Str(_) | Owned(_) | Type(_)
        )
    };
    if matches!(a, Flat(_)) || matches!(b, Flat(_)) {
        return None;
    }
    Some(match (a, b) {
        (Null, Null) => true,
        (Null, _) | (_, Null) => false,
        (Bool(x), Bool(y)) => x == y,
        (Int(x), Int(y)) => x == y,
        (UInt(x), UInt(y)) => x == y,
        (Double(x), Double(y)) => x == y,
        (Int(_) | UInt(_) | Double(_), Int(_) | UInt(_) | Double(_)) => return None,
        (Type(x), Type(y)) => x == y,
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x == y,
            // Different kinds of value: unequal, except list == list and
            // map == map, which are not modelled.
            _ if scalarish(a) || scalarish(b) => false,
            _ if a.is_list() != b.is_list() || a.is_map() != b.is_map() => false,
            _ => return None,
        },
    })
}

/// Evaluates nodes against one exchange.
pub(crate) struct Eval<'a> {
    ex: &'a Exchange,
    vis: Visibility,
    locals: Vec<V<'a>>,
    steps: Steps,
}

/// Where a field's attributes go.
pub(crate) struct Out<'o> {
    pub attrs: &'o mut Vec<(String, AttrValue)>,
    /// Set when two of the attributes pushed may share a key.
    pub maybe_dup: bool,
    /// `limits.maxValueLength`: a borrowed string longer than this is cut before
    /// it is copied (the plan truncates every value again at the end), so a
    /// 10 MiB body read by `output.value` costs the limit, not another 10 MiB.
    pub max_len: usize,
}

/// A borrowed string cut to `max` bytes (at a char boundary); anything else as is.
fn capped(v: V<'_>, max: usize) -> V<'_> {
    match v {
        V::Str(s) if s.len() > max => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            V::Str(&s[..end])
        }
        v => v,
    }
}

/// A key being built while flattening: the field key, then `.segment`s.
struct KeyBuf {
    buf: String,
    /// Length of the field key: the suffix is empty while `buf` is this long.
    base: usize,
    /// No field key (the value of `flatten` itself): keys are bare suffixes,
    /// without the `.` that joins them to a field key.
    bare: bool,
}

impl KeyBuf {
    fn field(key: &str) -> KeyBuf {
        let mut buf = String::with_capacity(key.len() + 48);
        buf.push_str(key);
        KeyBuf {
            buf,
            base: key.len(),
            bare: false,
        }
    }

    fn bare() -> KeyBuf {
        KeyBuf {
            buf: String::new(),
            base: 0,
            bare: true,
        }
    }

    /// The key of an attribute at the current position.
    fn key(&self) -> String {
        if self.bare && !self.buf.is_empty() {
            self.buf[1..].to_owned()
        } else {
            self.buf.clone()
        }
    }

    /// Append a segment the way `flatten` joins them (an empty suffix plus `s`
    /// is just `s`). Returns the length to restore.
    fn push(&mut self, seg: &str, dup: &mut bool) -> usize {
        if seg.is_empty() || seg.contains('.') {
            // `a` + `b.c` and `a.b` + `c` give the same key.
            *dup = true;
        }
        self.push_plain(seg)
    }

    /// [`KeyBuf::push`] for a segment already checked.
    fn push_plain(&mut self, seg: &str) -> usize {
        let saved = self.buf.len();
        if self.buf.len() != self.base || !seg.is_empty() {
            self.buf.push('.');
            self.buf.push_str(seg);
        }
        saved
    }

    fn push_index(&mut self, i: usize) -> usize {
        let saved = self.buf.len();
        self.buf.push('.');
        if i < 10 {
            self.buf.push(char::from(b'0' + i as u8));
        } else {
            let _ = write!(self.buf, "{i}");
        }
        saved
    }

    fn pop(&mut self, saved: usize) {
        self.buf.truncate(saved);
    }
}

impl<'a> Eval<'a> {
    pub(crate) fn new(ex: &'a Exchange, vis: Visibility) -> Self {
        Eval {
            ex,
            vis,
            locals: Vec::new(),
            steps: Steps(Cell::new(MAX_STEPS)),
        }
    }

    /// Evaluate a field and push its attributes under `key`. On `Err`, whatever
    /// was pushed must be discarded by the caller.
    pub(crate) fn field(&mut self, n: &'a Node, key: &str, out: &mut Out) -> Result<(), Fail> {
        self.locals.clear();
        self.steps.reset();
        self.field_node(n, key, out)
    }

    fn field_node(&mut self, n: &'a Node, key: &str, out: &mut Out) -> Result<(), Fail> {
        match n {
            Node::Flatten(x, levels) => {
                let mut kb = KeyBuf::field(key);
                self.sink(x, &mut kb, 0, *levels, out)
            }
            Node::Cond(c, a, b) => match self.eval(c)? {
                V::Bool(true) => self.field_node(a, key, out),
                V::Bool(false) => self.field_node(b, key, out),
                _ => Err(Fail::Error),
            },
            _ => {
                let v = self.eval(n)?;
                push_attr(key, v, out, &self.steps)
            }
        }
    }

    /// Evaluate a field whose value is used as one scalar (`span.name`): `None`
    /// when it is not a scalar.
    pub(crate) fn scalar(&mut self, n: &'a Node) -> Result<Option<AttrValue>, Fail> {
        self.locals.clear();
        self.steps.reset();
        let v = self.eval(n)?;
        if matches!(v, V::Type(_)) {
            return Err(Fail::Bail);
        }
        Ok(v.into_scalar())
    }

    /// The length of a context variable that is a list or a map (1 otherwise):
    /// what the plan's cost estimate multiplies.
    pub(crate) fn size_of(&self, var: Var) -> usize {
        let v = self.var(var);
        v.list_len().or_else(|| v.map_len()).unwrap_or(1)
    }

    fn var(&self, var: Var) -> V<'a> {
        let ex = self.ex;
        let hide_in = self.vis.hide_inputs;
        let hide_out = self.vis.hide_outputs;
        match var {
            Var::Provider => V::Str(&ex.provider),
            Var::Operation => V::Str(ex.operation.as_str()),
            Var::RequestModel => opt_str(ex.request_model.as_deref()),
            Var::ResponseModel => opt_str(ex.response_model.as_deref()),
            Var::ResponseId => opt_str(ex.response_id.as_deref()),
            Var::Streaming => V::Bool(ex.streaming),
            Var::Prompt => V::Messages(if hide_in { &[] } else { &ex.prompt }),
            Var::Completion => V::Contents(if hide_out { &[] } else { &ex.choices }),
            Var::Choices => V::Choices(if hide_out { &[] } else { &ex.choices }),
            Var::ToolCalls => V::AllToolCalls(if hide_out { &[] } else { &ex.choices }),
            Var::Tools => V::JsonList(&ex.tools),
            Var::InputTokens => opt_int(ex.input_tokens),
            Var::OutputTokens => opt_int(ex.output_tokens),
            Var::TotalTokens => opt_int(ex.total_tokens),
            Var::CacheReadTokens => opt_int(ex.token_details.cache_read),
            Var::CacheWriteTokens => opt_int(ex.token_details.cache_write),
            Var::InputAudioTokens => opt_int(ex.token_details.input_audio),
            Var::ReasoningTokens => opt_int(ex.token_details.reasoning),
            Var::OutputAudioTokens => opt_int(ex.token_details.output_audio),
            Var::Params => V::Params(&ex.params),
            Var::FinishReasons => V::FinishReasons(&ex.choices),
            Var::RequestBody => redactable(ex.request_body.as_deref(), hide_in),
            Var::ResponseBody => redactable(ex.response_body.as_deref(), hide_out),
            Var::ResponseTruncated => V::Bool(ex.response_truncated),
            Var::ReqMethod => V::Str(&ex.request.method),
            Var::ReqPath => V::Str(&ex.request.path),
            Var::ReqHeaders => V::Headers(&ex.request.headers),
            Var::RespStatus => opt_int(ex.response.status.map(i64::from)),
            Var::RespDuration => match ex.response.duration_ms {
                Some(d) => V::Double(d),
                None => V::Null,
            },
            Var::RespHeaders => V::Headers(&ex.response.headers),
            Var::RespError => opt_str(ex.error_type.as_deref()),
            Var::SourceAddress => opt_str(ex.source_address.as_deref()),
            Var::BackendName => opt_str(ex.backend_name.as_deref()),
            Var::BackendAddress => opt_str(ex.backend_host.as_deref()),
            Var::BackendPort => opt_int(ex.backend_port.map(i64::from)),
            Var::ClientName => opt_str(ex.client.as_deref().map(|c| c.name.as_str())),
            Var::ClientTeam => opt_str(ex.client.as_deref().and_then(|c| c.team.as_deref())),
            Var::ClientMetadata => V::Headers(ex.client.as_deref().map_or(&[], |c| &c.metadata)),
            // Whole roots are never compiled to a `Var` node.
            Var::Llm | Var::Request | Var::Response | Var::Source | Var::Backend | Var::Client => {
                V::Null
            }
        }
    }

    /// Evaluate `n`. The common leaves (literals, variables, a field of a
    /// comprehension variable) are handled here, inline at the call site; the
    /// rest in [`Eval::eval_node`].
    #[inline]
    fn eval(&mut self, n: &'a Node) -> R<'a> {
        match n {
            Node::Var(v) => Ok(self.var(*v)),
            Node::Lit(Lit::Str(s)) => Ok(V::Str(s)),
            Node::Select(x, field) => {
                let found = match &**x {
                    Node::Local(i) => match self.locals.get(*i) {
                        Some(v) => v.map_get_field(field),
                        None => return Err(Fail::Bail),
                    },
                    Node::Var(var) => self.var(*var).map_get_field(field),
                    _ => self.eval_node(x)?.map_get_field(field),
                };
                match found {
                    Some(Some(v)) => Ok(v),
                    // A missing key, or a value with no fields at all.
                    Some(None) | None => Err(Fail::Error),
                }
            }
            _ => self.eval_node(n),
        }
    }

    fn eval_node(&mut self, n: &'a Node) -> R<'a> {
        match n {
            Node::Lit(l) => Ok(match l {
                Lit::Null => V::Null,
                Lit::Bool(b) => V::Bool(*b),
                Lit::Int(i) => V::Int(*i),
                Lit::UInt(u) => V::UInt(*u),
                Lit::Double(d) => V::Double(*d),
                Lit::Str(s) => V::Str(s),
            }),
            Node::Var(v) => Ok(self.var(*v)),
            Node::Local(i) => self.locals.get(*i).cloned().ok_or(Fail::Bail),
            Node::Type(t) => Ok(V::Type(t)),
            Node::Select(x, field) => {
                let v = self.eval(x)?;
                match v.map_get_field(field) {
                    Some(Some(v)) => Ok(v),
                    // A missing key, or a value with no fields at all.
                    Some(None) | None => Err(Fail::Error),
                }
            }
            Node::Has(x, field) => {
                let v = self.eval(x)?;
                match v.map_get_field(field) {
                    Some(found) => Ok(V::Bool(found.is_some())),
                    None => Err(Fail::Bail),
                }
            }
            Node::Index(x, i) => {
                let v = self.eval(x)?;
                let i = self.eval(i)?;
                if let (Some(len), V::Int(i)) = (v.list_len(), &i) {
                    return match usize::try_from(*i) {
                        Ok(i) if i < len => Ok(v.list_get(i)),
                        _ => Err(Fail::Error),
                    };
                }
                match (v.map_get(i.as_str().unwrap_or_default()), i.as_str()) {
                    (Some(Some(found)), Some(_)) => Ok(found),
                    (Some(None), Some(_)) => Err(Fail::Error),
                    _ => Err(Fail::Bail),
                }
            }
            Node::Cond(c, a, b) => match self.eval(c)? {
                V::Bool(true) => self.eval(a),
                V::Bool(false) => self.eval(b),
                _ => Err(Fail::Error),
            },
            Node::Default(x, fallback) => match self.eval(x) {
                Ok(V::Null) | Err(Fail::Error) => self.eval(fallback),
                other => other,
            },
            Node::And(a, b) | Node::Or(a, b) => {
                let is_and = matches!(n, Node::And(..));
                let left = match self.eval(a) {
                    Err(e @ (Fail::Bail | Fail::Budget)) => return Err(e),
                    Ok(V::Bool(b)) => Some(b),
                    _ => None,
                };
                // `false && x` is false, `true || x` is true, whatever x is.
                if left == Some(!is_and) {
                    return Ok(V::Bool(!is_and));
                }
                let right = match self.eval(b)? {
                    V::Bool(b) => b,
                    _ => return Err(Fail::Error),
                };
                match left {
                    Some(_) => Ok(V::Bool(right)),
                    // An error beside the absorbing value is absorbed.
                    None if right != is_and => Ok(V::Bool(right)),
                    None => Err(Fail::Error),
                }
            }
            Node::Not(x) => match self.eval(x)? {
                V::Bool(b) => Ok(V::Bool(!b)),
                _ => Err(Fail::Error),
            },
            Node::Neg(x) => match self.eval(x)? {
                V::Int(i) => i.checked_neg().map(V::Int).ok_or(Fail::Error),
                V::Double(d) => Ok(V::Double(-d)),
                _ => Err(Fail::Bail),
            },
            Node::NotStrictlyFalse(x) => match self.eval(x) {
                Ok(V::Bool(b)) => Ok(V::Bool(b)),
                Err(e @ (Fail::Bail | Fail::Budget)) => Err(e),
                _ => Ok(V::Bool(true)),
            },
            Node::IsNull(x) => Ok(V::Bool(matches!(self.eval(x)?, V::Null))),
            Node::Eq(a, b, negate) => {
                let l = self.eval(a)?;
                let r = self.eval(b)?;
                match equals(&l, &r) {
                    Some(eq) => Ok(V::Bool(eq != *negate)),
                    None => Err(Fail::Bail),
                }
            }
            Node::Add(a, b) => {
                let l = self.eval(a)?;
                let r = self.eval(b)?;
                if let (Some(n), Some(m)) = (l.list_len(), r.list_len()) {
                    self.steps.take(n + m)?;
                }
                add(l, r)
            }
            Node::Sub(a, b) => {
                let l = self.eval(a)?;
                let r = self.eval(b)?;
                match (l, r) {
                    (V::Int(x), V::Int(y)) => x.checked_sub(y).map(V::Int).ok_or(Fail::Error),
                    (V::UInt(x), V::UInt(y)) => x.checked_sub(y).map(V::UInt).ok_or(Fail::Error),
                    (V::Double(x), V::Double(y)) => Ok(V::Double(x - y)),
                    _ => Err(Fail::Bail),
                }
            }
            Node::Cmp(a, b, op) => {
                let l = self.eval(a)?;
                let r = self.eval(b)?;
                let ord = match (&l, &r) {
                    (V::Int(x), V::Int(y)) => x.cmp(y),
                    (V::UInt(x), V::UInt(y)) => x.cmp(y),
                    (V::Double(x), V::Double(y)) => x.partial_cmp(y).ok_or(Fail::Bail)?,
                    _ => match (l.as_str(), r.as_str()) {
                        (Some(x), Some(y)) => x.cmp(y),
                        _ => return Err(Fail::Bail),
                    },
                };
                use std::cmp::Ordering::*;
                Ok(V::Bool(match op {
                    CmpOp::Lt => ord == Less,
                    CmpOp::Le => ord != Greater,
                    CmpOp::Gt => ord == Greater,
                    CmpOp::Ge => ord != Less,
                }))
            }
            Node::Size(x) => {
                let v = self.eval(x)?;
                let n = if let Some(s) = v.as_str() {
                    s.chars().count()
                } else if let Some(n) = v.list_len() {
                    n
                } else if let Some(n) = v.map_len() {
                    n
                } else {
                    return Err(Fail::Bail);
                };
                Ok(V::Int(n as i64))
            }
            Node::ToDouble(x) => match self.eval(x)? {
                V::Int(i) => Ok(V::Double(i as f64)),
                V::UInt(u) => Ok(V::Double(u as f64)),
                V::Double(d) => Ok(V::Double(d)),
                _ => Err(Fail::Bail),
            },
            Node::TypeOf(x) => {
                let v = self.eval(x)?;
                v.type_name().map(V::Type).ok_or(Fail::Bail)
            }
            Node::ToJson(x) => {
                let v = self.eval(x)?;
                let mut text = Vec::new();
                write_json(&v, 0, &mut text, &self.steps)?;
                // serde_json writes valid UTF-8.
                String::from_utf8(text)
                    .map(V::Owned)
                    .map_err(|_| Fail::Bail)
            }
            Node::Flatten(x, levels) => {
                let v = self.eval(x)?;
                let mut attrs = Vec::new();
                let mut kb = KeyBuf::bare();
                // A value, not yet attributes: nothing is cut here.
                let mut out = Out {
                    attrs: &mut attrs,
                    maybe_dup: false,
                    max_len: usize::MAX,
                };
                flatten_value(v, &mut kb, 0, *levels, &mut out, &self.steps)?;
                Ok(V::Flat(Rc::new(attrs)))
            }
            Node::StrTest(x, arg, op) => {
                let s = self.eval(x)?;
                let a = self.eval(arg)?;
                match (s.as_str(), a.as_str()) {
                    (Some(s), Some(a)) => Ok(V::Bool(match op {
                        StrOp::StartsWith => s.starts_with(a),
                        StrOp::EndsWith => s.ends_with(a),
                        StrOp::Contains => s.contains(a),
                    })),
                    _ => Err(Fail::Bail),
                }
            }
            Node::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.eval(item)?);
                }
                Ok(V::List(Rc::new(out)))
            }
            Node::Map(entries, _) => {
                let mut out = Vec::with_capacity(entries.len());
                for e in entries {
                    out.push((&*e.key, self.eval(&e.value)?));
                }
                Ok(V::Map(Rc::new(out)))
            }
            Node::Comp { range, guard, item } => {
                let range = self.eval(range)?;
                let mut out = Vec::new();
                self.each(&range, guard.as_deref(), |this, _| {
                    out.push(this.eval(item)?);
                    Ok(())
                })?;
                Ok(V::List(Rc::new(out)))
            }
            Node::Bail => Err(Fail::Bail),
        }
    }

    /// Run `body` for each item of `range` that passes `guard`, with the item
    /// bound to the next local slot; `body` gets the item's output index.
    fn each(
        &mut self,
        range: &V<'a>,
        guard: Option<&'a Node>,
        mut body: impl FnMut(&mut Self, usize) -> Result<(), Fail>,
    ) -> Result<(), Fail> {
        // Iterating anything but a list (a map's keys, say) is not modelled.
        let Some(len) = range.list_len() else {
            return Err(Fail::Bail);
        };
        let slot = self.locals.len();
        let mut index = 0;
        let mut result = Ok(());
        for i in 0..len {
            if let Err(e) = self.steps.take(1) {
                result = Err(e);
                break;
            }
            self.locals.truncate(slot);
            self.locals.push(range.list_get(i));
            if let Some(g) = guard {
                match self.eval(g) {
                    Ok(V::Bool(true)) => {}
                    Ok(V::Bool(false)) => continue,
                    Ok(_) => {
                        result = Err(Fail::Error);
                        break;
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if let Err(e) = body(self, index) {
                result = Err(e);
                break;
            }
            index += 1;
        }
        self.locals.truncate(slot);
        result
    }

    /// Flatten the value of `n` into attributes under `kb`, without building the
    /// intermediate value where `n` is a map or list literal, a comprehension or a
    /// conditional: what `flatten*` would make of the value, directly.
    fn sink(
        &mut self,
        n: &'a Node,
        kb: &mut KeyBuf,
        depth: usize,
        levels: usize,
        out: &mut Out,
    ) -> Result<(), Fail> {
        if depth < levels {
            match n {
                Node::Map(entries, order) => {
                    for &i in order {
                        let e = &entries[i];
                        out.maybe_dup |= e.odd_key;
                        let saved = kb.push_plain(&e.key);
                        let r = self.sink(&e.value, kb, depth + 1, levels, out);
                        kb.pop(saved);
                        r?;
                    }
                    return Ok(());
                }
                Node::List(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let saved = kb.push_index(i);
                        let r = self.sink(item, kb, depth + 1, levels, out);
                        kb.pop(saved);
                        r?;
                    }
                    return Ok(());
                }
                Node::Comp { range, guard, item } => {
                    let range = self.eval(range)?;
                    return self.each(&range, guard.as_deref(), |this, i| {
                        let saved = kb.push_index(i);
                        let r = this.sink(item, kb, depth + 1, levels, out);
                        kb.pop(saved);
                        r
                    });
                }
                Node::Cond(c, a, b) => {
                    return match self.eval(c)? {
                        V::Bool(true) => self.sink(a, kb, depth, levels, out),
                        V::Bool(false) => self.sink(b, kb, depth, levels, out),
                        _ => Err(Fail::Error),
                    };
                }
                _ => {}
            }
        }
        let v = self.eval(n)?;
        flatten_value(v, kb, depth, levels, out, &self.steps)
    }
}

fn redactable(s: Option<&str>, hidden: bool) -> V<'_> {
    match (s, hidden) {
        (Some(_), true) => V::Str(REDACTED),
        (s, _) => opt_str(s),
    }
}

fn add<'a>(l: V<'a>, r: V<'a>) -> R<'a> {
    match (&l, &r) {
        (V::Int(x), V::Int(y)) => return x.checked_add(*y).map(V::Int).ok_or(Fail::Error),
        (V::UInt(x), V::UInt(y)) => return x.checked_add(*y).map(V::UInt).ok_or(Fail::Error),
        (V::Double(x), V::Double(y)) => return Ok(V::Double(x + y)),
        _ => {}
    }
    // A string made by an earlier `+` is appended to in place.
    let l = match l {
        V::Owned(mut x) => match r.as_str() {
            Some(y) => {
                x.push_str(y);
                return Ok(V::Owned(x));
            }
            None => V::Owned(x),
        },
        l => l,
    };
    if let (Some(x), Some(y)) = (l.as_str(), r.as_str()) {
        let mut s = String::with_capacity(x.len() + y.len());
        s.push_str(x);
        s.push_str(y);
        return Ok(V::Owned(s));
    }
    if let (Some(n), Some(m)) = (l.list_len(), r.list_len()) {
        let mut items = Vec::with_capacity(n + m);
        items.extend((0..n).map(|i| l.list_get(i)));
        items.extend((0..m).map(|i| r.list_get(i)));
        return Ok(V::List(Rc::new(items)));
    }
    Err(Fail::Bail)
}

/// Push the attributes of a field's value, as [`crate::attributes::push_value`].
fn push_attr(key: &str, v: V, out: &mut Out, steps: &Steps) -> Result<(), Fail> {
    if let V::Flat(entries) = &v {
        if entries.len() > 1 {
            out.maybe_dup = true;
        }
        steps.take(entries.len())?;
        for (suffix, x) in entries.iter() {
            let full = if suffix.is_empty() {
                key.to_owned()
            } else {
                format!("{key}.{suffix}")
            };
            out.attrs.push((full, x.clone()));
        }
        return Ok(());
    }
    if let Some(leaf) = leaf(capped(v, out.max_len), steps)? {
        out.attrs.push((key.to_owned(), leaf));
    }
    Ok(())
}

/// A value as one attribute (null: none), as `push_value` renders anything but a
/// flattened value.
fn leaf(v: V, steps: &Steps) -> Result<Option<AttrValue>, Fail> {
    if let V::Owned(s) = v {
        return Ok(Some(AttrValue::String(s)));
    }
    if let Some(s) = v.scalar() {
        return Ok(Some(s));
    }
    match v {
        V::Null => return Ok(None),
        V::Type(_) | V::Flat(_) => return Err(Fail::Bail),
        _ => {}
    }
    if let Some(len) = v.list_len()
        && let Some(array) = homogeneous_array(&v, len, steps)?
    {
        return Ok(Some(array));
    }
    let mut text = Vec::new();
    write_json(&v, 0, &mut text, steps)?;
    String::from_utf8(text)
        .map(|s| Some(AttrValue::String(s)))
        .map_err(|_| Fail::Bail)
}

/// A list of scalars of one type as an OTel array; an empty list is an empty
/// string array.
fn homogeneous_array(v: &V, len: usize, steps: &Steps) -> Result<Option<AttrValue>, Fail> {
    steps.take(len)?;
    Ok(homogeneous_items(v, len))
}

fn homogeneous_items(v: &V, len: usize) -> Option<AttrValue> {
    if len == 0 {
        return Some(AttrValue::StringArray(Vec::new()));
    }
    let first = v.list_get(0).scalar()?;
    macro_rules! collect {
        ($variant:ident, $array:ident, $first:expr) => {{
            let mut out = Vec::with_capacity(len);
            out.push($first);
            for i in 1..len {
                match v.list_get(i).scalar()? {
                    AttrValue::$variant(x) => out.push(x),
                    _ => return None,
                }
            }
            Some(AttrValue::$array(out))
        }};
    }
    match first {
        AttrValue::String(s) => collect!(String, StringArray, s),
        AttrValue::Int(i) => collect!(Int, IntArray, i),
        AttrValue::Double(d) => collect!(Double, DoubleArray, d),
        AttrValue::Bool(b) => collect!(Bool, BoolArray, b),
        _ => None,
    }
}

/// What `flatten_into` in [`crate::functions`] makes of a value.
fn flatten_value(
    v: V,
    kb: &mut KeyBuf,
    depth: usize,
    levels: usize,
    out: &mut Out,
    steps: &Steps,
) -> Result<(), Fail> {
    // The common leaves first.
    match v {
        V::Null => return Ok(()),
        V::Str(s) => {
            // Cut before the copy, as `push_attr` does (the plan cuts again).
            let Some(s) = capped(V::Str(s), out.max_len).as_str().map(str::to_owned) else {
                return Err(Fail::Bail);
            };
            steps.copy(&s)?;
            out.attrs.push((kb.key(), AttrValue::String(s)));
            return Ok(());
        }
        _ => {}
    }
    if depth < levels {
        if let Some(len) = v.list_len() {
            steps.take(len)?;
            for i in 0..len {
                let saved = kb.push_index(i);
                let r = flatten_value(v.list_get(i), kb, depth + 1, levels, out, steps);
                kb.pop(saved);
                r?;
            }
            return Ok(());
        }
        if let Some(entries) = v.map_entries() {
            steps.take(entries.len())?;
            for (k, x) in entries {
                let saved = kb.push(k, &mut out.maybe_dup);
                let r = flatten_value(x, kb, depth + 1, levels, out, steps);
                kb.pop(saved);
                r?;
            }
            return Ok(());
        }
        if let V::Flat(entries) = &v {
            steps.take(entries.len())?;
            for (k, x) in entries.iter() {
                let saved = kb.push(k, &mut out.maybe_dup);
                out.attrs.push((kb.key(), x.clone()));
                kb.pop(saved);
            }
            return Ok(());
        }
    }
    if let Some(leaf) = leaf(capped(v, out.max_len), steps)? {
        out.attrs.push((kb.key(), leaf));
    }
    Ok(())
}

/// A value as JSON text, exactly as `attributes::to_json(v).to_string()` renders
/// it, written directly.
fn write_json(v: &V, depth: usize, out: &mut Vec<u8>, steps: &Steps) -> Result<(), Fail> {
    let io = |_: serde_json::Error| Fail::Bail;
    if depth > MAX_VALUE_DEPTH {
        return serde_json::to_writer(&mut *out, "…").map_err(io);
    }
    match v {
        V::Null => out.extend_from_slice(b"null"),
        V::Bool(true) => out.extend_from_slice(b"true"),
        V::Bool(false) => out.extend_from_slice(b"false"),
        V::Int(i) => serde_json::to_writer(&mut *out, i).map_err(io)?,
        V::UInt(u) => match i64::try_from(*u) {
            Ok(i) => serde_json::to_writer(&mut *out, &i).map_err(io)?,
            Err(_) => serde_json::to_writer(&mut *out, &u.to_string()).map_err(io)?,
        },
        // Non-finite doubles are `null`, as `Json::from(f64)` makes them.
        V::Double(d) => serde_json::to_writer(&mut *out, d).map_err(io)?,
        V::Str(s) => {
            steps.copy(s)?;
            serde_json::to_writer(&mut *out, s).map_err(io)?
        }
        V::Owned(s) => {
            steps.copy(s)?;
            serde_json::to_writer(&mut *out, s).map_err(io)?
        }
        V::Type(_) => return Err(Fail::Bail),
        // Flattened keys need not be sorted or distinct: build the object.
        V::Flat(_) => serde_json::to_writer(&mut *out, &to_json(v, depth, steps)?).map_err(io)?,
        _ => {
            if let Some(len) = v.list_len() {
                steps.take(len)?;
                out.push(b'[');
                for i in 0..len {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json(&v.list_get(i), depth + 1, out, steps)?;
                }
                out.push(b']');
            } else if let Some(entries) = v.map_entries() {
                // Sorted and distinct, as in a `serde_json::Map`.
                steps.take(entries.len())?;
                out.push(b'{');
                for (i, (k, x)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, k).map_err(io)?;
                    out.push(b':');
                    write_json(x, depth + 1, out, steps)?;
                }
                out.push(b'}');
            } else {
                return Err(Fail::Bail);
            }
        }
    }
    Ok(())
}

/// A value as JSON, as [`crate::attributes::to_json`].
fn to_json(v: &V, depth: usize, steps: &Steps) -> Result<Json, Fail> {
    if depth > MAX_VALUE_DEPTH {
        return Ok(Json::from("…"));
    }
    if let V::Flat(entries) = v {
        steps.take(entries.len())?;
        return Ok(Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        ));
    }
    if let Some(s) = v.scalar() {
        return Ok(s.to_json());
    }
    match v {
        V::Null => return Ok(Json::Null),
        V::Type(_) => return Err(Fail::Bail),
        _ => {}
    }
    if let Some(len) = v.list_len() {
        steps.take(len)?;
        let mut items = Vec::with_capacity(len);
        for i in 0..len {
            items.push(to_json(&v.list_get(i), depth + 1, steps)?);
        }
        return Ok(Json::Array(items));
    }
    if let Some(entries) = v.map_entries() {
        steps.take(entries.len())?;
        let mut obj = serde_json::Map::new();
        for (k, x) in entries {
            obj.insert(k.to_owned(), to_json(&x, depth + 1, steps)?);
        }
        return Ok(Json::Object(obj));
    }
    Err(Fail::Bail)
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
