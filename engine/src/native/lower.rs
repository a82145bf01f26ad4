//! Lowering: a checked CEL syntax tree to the [`Node`] tree the native evaluator
//! runs, once per expression at load.
//!
//! Only shapes that evaluate exactly as the interpreter would are lowered; the
//! rest become [`Node::Bail`] (a whole expression that is nothing but that is not
//! lowered at all). Names are resolved here, not per request: context variables
//! to [`Var`]s, comprehension variables to slots, field names of the exchange's
//! maps to [`Field`]s.

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators};

use crate::attributes::MAX_VALUE_DEPTH;
use crate::context::{self, Var};
use crate::value::{Field, TYPE_NAMES, VALUE_TYPES};

/// Internal helper the `default` macro expands to (see [`crate::functions`]).
pub(crate) const IS_NULL: &str = "__celgate_is_null";

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
    /// `a / b` on doubles (anything else is the interpreter's).
    Div(Box<Node>, Box<Node>),
    Cmp(Box<Node>, Box<Node>, CmpOp),
    Size(Box<Node>),
    /// `double(x)` of a number; anything else (a string to parse) is the
    /// interpreter's.
    ToDouble(Box<Node>),
    TypeOf(Box<Node>),
    ToJson(Box<Node>),
    /// `parseJson(x)`.
    ParseJson(Box<Node>),
    /// `compact(x)`.
    Compact(Box<Node>),
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

#[derive(Debug)]
pub(crate) struct MapEntry {
    pub(crate) key: Box<str>,
    /// Empty or dotted: joined into a flattened key, it may collide.
    pub(crate) odd_key: bool,
    pub(crate) value: Node,
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
            && let Some(t) = TYPE_NAMES[..VALUE_TYPES].iter().find(|t| **t == root)
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
            (operators::DIVIDE, 2) => Node::Div(arg(0), arg(1)),
            (operators::LESS, 2) => Node::Cmp(arg(0), arg(1), CmpOp::Lt),
            (operators::LESS_EQUALS, 2) => Node::Cmp(arg(0), arg(1), CmpOp::Le),
            (operators::GREATER, 2) => Node::Cmp(arg(0), arg(1), CmpOp::Gt),
            (operators::GREATER_EQUALS, 2) => Node::Cmp(arg(0), arg(1), CmpOp::Ge),
            ("size", 1) => Node::Size(arg(0)),
            ("double", 1) => Node::ToDouble(arg(0)),
            ("type", 1) => Node::TypeOf(arg(0)),
            ("toJson" | "to_json", 1) => Node::ToJson(arg(0)),
            ("parseJson" | "parse_json", 1) => Node::ParseJson(arg(0)),
            ("compact", 1) => Node::Compact(arg(0)),
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
