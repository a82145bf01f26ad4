//! Compiling one CEL expression, safely, and checking what it refers to.
//!
//! The `cel` parser and interpreter recurse on the expression's structure, so a very
//! long or deeply nested expression can overflow the stack. Three guards: a size
//! cap and a bracket-nesting cap checked before parsing, parsing on a thread with a
//! large stack (see [`crate::plan`]), and an AST depth cap that keeps evaluation on
//! an ordinary request thread safe.
//!
//! Then every variable the expression reads is checked against the context
//! (`llm.requestModle` is a load-time error with a suggestion, not a silently
//! missing attribute), and so is every function it calls.
//!
//! Last, a static cost model: comprehensions (`map`, `filter`, `exists`, ...)
//! nested in one another whose ranges are request data independent of each other
//! (`llm.prompt.map(a, llm.prompt.map(b, b))`) cost the product of those lists'
//! sizes, quadratic in the request. Deeper than [`MAX_INDEPENDENT_NESTING`] is
//! refused at load; the nests that remain are kept in [`Cost`], for the plan to
//! estimate each request's cost from its list sizes before evaluating.

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::{Context, Env, Program};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::context::{self, ROOTS, VarSet};
use crate::functions::FUNCTIONS;
use crate::value::TYPE_NAMES;

/// Longest accepted expression, in bytes.
pub const MAX_EXPR_LEN: usize = 8 * 1024;
/// Deepest accepted bracket nesting (`(`, `[`, `{`).
pub const MAX_NESTING: usize = 32;
/// Deepest accepted syntax tree. Long operator chains (`a + b + c ...`) nest too.
pub const MAX_AST_DEPTH: usize = 64;
/// Most comprehensions over independent request data accepted inside one another:
/// two (quadratic, estimated per request), not three (cubic: 1,000 messages
/// would be a billion iterations).
pub const MAX_INDEPENDENT_NESTING: usize = 2;

/// Why an expression was refused. Positions are 1-based within the expression.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("expression is {len} bytes long; the limit is {MAX_EXPR_LEN}")]
    TooLong { len: usize },
    #[error("expression nests brackets {depth} deep; the limit is {MAX_NESTING}")]
    TooNested {
        depth: usize,
        line: usize,
        column: usize,
    },
    #[error(
        "expression is too deeply structured (syntax tree depth over {MAX_AST_DEPTH}); split it or simplify it"
    )]
    TooDeep,
    #[error(
        "expression nests {depth} comprehensions over request data inside one another (its cost grows as the request's size to the power {depth}); the limit is {MAX_INDEPENDENT_NESTING}"
    )]
    TooCostly { depth: usize },
    #[error("syntax error: {message}")]
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("unknown variable `{name}`{}", suggest(.suggestion))]
    UnknownVariable {
        name: String,
        suggestion: Option<String>,
        line: usize,
        column: usize,
    },
    #[error("unknown function `{name}`{}", suggest(.suggestion))]
    UnknownFunction {
        name: String,
        suggestion: Option<String>,
        line: usize,
        column: usize,
    },
}

fn suggest(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

impl ExprError {
    /// Where in the expression the problem is, if known.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ExprError::TooNested { line, column, .. }
            | ExprError::Syntax { line, column, .. }
            | ExprError::UnknownVariable { line, column, .. }
            | ExprError::UnknownFunction { line, column, .. } => Some((*line, *column)),
            ExprError::TooLong { .. } | ExprError::TooDeep | ExprError::TooCostly { .. } => None,
        }
    }
}

/// A compiled expression and the variables it reads.
#[derive(Debug)]
pub struct Compiled {
    pub program: Program,
    /// The variables read (`llm.prompt`), or a root (`llm`) when the
    /// expression reads the root as a whole.
    pub(crate) reads: VarSet,
    /// The expression for the native evaluator, if it has a shape it models.
    pub(crate) native: Option<crate::native::Node>,
    /// Its nested comprehensions over request data.
    pub(crate) cost: Cost,
}

/// The comprehensions of an expression that nest over independent request data.
#[derive(Debug, Default)]
pub(crate) struct Cost {
    /// Each nest of two or more comprehensions, outermost first, as the context
    /// variables each one's range reads: one iteration of the outer runs the inner
    /// in full, so the work is the product of the ranges' sizes.
    pub(crate) nests: Vec<Vec<Vec<context::Var>>>,
}

impl Cost {
    fn of(e: &IdedExpr) -> (Cost, usize) {
        let mut walk = CostWalk {
            scope: Vec::new(),
            chain: Vec::new(),
            cost: Cost::default(),
            depth: 0,
        };
        walk.walk(e);
        (walk.cost, walk.depth)
    }

    /// The iterations a request costs, by the nests' range sizes (`size` of a
    /// variable: its length as a list or map). Saturating.
    pub(crate) fn estimate(&self, size: impl Fn(context::Var) -> usize) -> usize {
        self.nests
            .iter()
            .map(|nest| {
                nest.iter()
                    .map(|vars| vars.iter().map(|v| size(*v)).sum::<usize>().max(1))
                    .fold(1usize, usize::saturating_mul)
            })
            .fold(0usize, usize::saturating_add)
    }
}

/// Where a comprehension's range comes from.
enum RangeSource {
    /// Request data: these context variables.
    Request(Vec<context::Var>),
    /// An enclosing comprehension's variable (`m.tool_calls`): the inner loop runs
    /// over part of the outer's item, so the two together stay linear.
    Dependent,
    /// Literals.
    Constant,
}

struct CostWalk<'e> {
    /// Comprehension variables in scope.
    scope: Vec<&'e str>,
    /// The enclosing comprehensions over request data.
    chain: Vec<Vec<context::Var>>,
    cost: Cost,
    /// Longest chain seen.
    depth: usize,
}

impl<'e> CostWalk<'e> {
    fn walk(&mut self, e: &'e IdedExpr) {
        let Expr::Comprehension(c) = &e.expr else {
            children(e, |child| self.walk(child));
            return;
        };
        // The range is evaluated once per enclosing iteration.
        self.walk(&c.iter_range);
        self.walk(&c.accu_init);
        let pushed = match self.source(&c.iter_range) {
            RangeSource::Request(vars) => {
                self.chain.push(vars);
                self.depth = self.depth.max(self.chain.len());
                if self.chain.len() >= 2 {
                    self.cost.nests.push(self.chain.clone());
                }
                true
            }
            RangeSource::Dependent | RangeSource::Constant => false,
        };
        let scoped = self.scope.len();
        self.scope.push(&c.iter_var);
        self.scope.push(&c.accu_var);
        if let Some(v) = &c.iter_var2 {
            self.scope.push(v);
        }
        self.walk(&c.loop_cond);
        self.walk(&c.loop_step);
        self.walk(&c.result);
        self.scope.truncate(scoped);
        if pushed {
            self.chain.pop();
        }
    }

    /// Where the values a range iterates over come from: follows the data (the
    /// range of a comprehension, the operand of a selection, the arguments of a
    /// call), not conditions.
    fn source(&self, e: &IdedExpr) -> RangeSource {
        let mut vars = Vec::new();
        let mut dependent = false;
        self.sources(e, &mut vars, &mut dependent);
        match (vars.is_empty(), dependent) {
            (false, _) => RangeSource::Request(vars),
            (true, true) => RangeSource::Dependent,
            (true, false) => RangeSource::Constant,
        }
    }

    fn sources(&self, e: &IdedExpr, vars: &mut Vec<context::Var>, dependent: &mut bool) {
        if let Some((_, root, field)) = qualified(e)
            && !self.scope.contains(&root)
        {
            if let Some(var) = context::lookup(&canonical(root, field)) {
                vars.push(var);
            }
            return;
        }
        match &e.expr {
            Expr::Ident(name) => *dependent |= self.scope.iter().any(|s| s == name),
            Expr::Comprehension(c) => self.sources(&c.iter_range, vars, dependent),
            _ => children(e, |child| self.sources(child, vars, dependent)),
        }
    }
}

/// The direct sub-expressions of `e`, but a comprehension's.
fn children<'e>(e: &'e IdedExpr, mut f: impl FnMut(&'e IdedExpr)) {
    match &e.expr {
        Expr::Select(sel) => f(&sel.operand),
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                f(t);
            }
            call.args.iter().for_each(f);
        }
        Expr::List(list) => list.elements.iter().for_each(f),
        Expr::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(m) => {
                        f(&m.key);
                        f(&m.value);
                    }
                    EntryExpr::StructField(s) => f(&s.value),
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(field) = &entry.expr {
                    f(&field.value);
                }
            }
        }
        Expr::Comprehension(c) => {
            for x in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                f(x);
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Most expressions [`compile_shared`] keeps. When full, the cache starts over,
/// so configs with ever-changing expressions cannot grow it without bound.
const CACHE_CAPACITY: usize = 512;

type Cache = HashMap<Box<str>, Arc<Compiled>>;

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// [`compile`] in the process-wide environment ([`crate::plan::cel_env`]),
/// remembering what compiled: a config reload (or a preset loaded again) parses
/// only the expressions that changed. The `cel` parser takes 5-50 µs per
/// expression, far more than everything else in a load. Compiling is a pure
/// function of the text in that one environment, so a remembered result is
/// the same result. Failures are not remembered.
pub(crate) fn compile_shared(env: &Arc<Env>, src: &str) -> Result<Arc<Compiled>, ExprError> {
    let lock = || {
        CACHE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    if let Some(hit) = lock().as_ref().and_then(|c| c.get(src)) {
        return Ok(Arc::clone(hit));
    }
    let compiled = Arc::new(compile(env, src)?);
    let mut cache = lock();
    let cache = cache.get_or_insert_with(HashMap::new);
    if cache.len() >= CACHE_CAPACITY {
        cache.clear();
    }
    cache.insert(src.into(), Arc::clone(&compiled));
    Ok(compiled)
}

/// Forget every remembered compilation (benchmarks measure cold compiles).
#[doc(hidden)]
pub fn clear_cache() {
    *CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
}

/// Compile `src` in `env`. Call on a thread with a large stack: the parser recurses.
pub fn compile(env: &Arc<Env>, src: &str) -> Result<Compiled, ExprError> {
    if src.len() > MAX_EXPR_LEN {
        return Err(ExprError::TooLong { len: src.len() });
    }
    check_nesting(src)?;
    let program = env.compile(src).map_err(|errs| {
        let first = errs.errors.first();
        let (line, column) = first
            .map(|e| (e.pos.0.max(1) as usize, e.pos.1.max(0) as usize + 1))
            .unwrap_or((1, 1));
        ExprError::Syntax {
            message: first
                .map(|e| e.msg.trim_start_matches("Syntax error: ").to_owned())
                .unwrap_or_else(|| "invalid expression".into()),
            line,
            column,
        }
    })?;
    let mut check = Checker {
        src,
        program: &program,
        env,
        scope: Vec::new(),
        reads: VarSet::default(),
        error: None,
    };
    check.walk(program.expression(), 0);
    if let Some(e) = check.error {
        return Err(e);
    }
    let reads = check.reads;
    let (cost, depth) = Cost::of(program.expression());
    if depth > MAX_INDEPENDENT_NESTING {
        return Err(ExprError::TooCostly { depth });
    }
    let native = crate::native::compile(program.expression());
    Ok(Compiled {
        program,
        reads,
        native,
        cost,
    })
}

/// Bracket nesting outside string literals, checked before the parser sees it.
fn check_nesting(src: &str) -> Result<(), ExprError> {
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in src.chars() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ExprError::TooNested {
                        depth,
                        line,
                        column: col,
                    });
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

struct Checker<'a> {
    src: &'a str,
    program: &'a Program,
    env: &'a Arc<Env>,
    /// Comprehension variables in scope.
    scope: Vec<String>,
    reads: VarSet,
    error: Option<ExprError>,
}

impl Checker<'_> {
    /// 1-based (line, column) of a node.
    fn pos(&self, e: &IdedExpr) -> (usize, usize) {
        let offset = self
            .program
            .source_info()
            .offset_for(e.id)
            .map(|(start, _)| start as usize)
            .unwrap_or(0);
        // Select and call nodes sit on their `.` or `(`: point at the name instead.
        let chars: Vec<char> = self.src.chars().collect();
        let mut offset = offset.min(chars.len());
        match chars.get(offset) {
            Some('.') => offset += 1,
            Some('(') => {
                while offset > 0
                    && chars
                        .get(offset - 1)
                        .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    offset -= 1;
                }
            }
            _ => {}
        }
        let before: String = chars[..offset].iter().collect();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn fail(&mut self, e: ExprError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn walk(&mut self, e: &IdedExpr, depth: usize) {
        if self.error.is_some() {
            return;
        }
        if depth > MAX_AST_DEPTH {
            self.fail(ExprError::TooDeep);
            return;
        }
        let d = depth + 1;
        match &e.expr {
            Expr::Ident(name) => self.variable(e, name, None),
            Expr::Select(sel) => {
                if let Some((root_expr, root, field)) = qualified(e)
                    && !self.scope.iter().any(|s| s == root)
                {
                    self.variable(root_expr, root, Some((e, field)));
                    return;
                }
                self.walk(&sel.operand, d);
            }
            Expr::Call(call) => {
                self.function(e, &call.func_name);
                if let Some(t) = &call.target {
                    self.walk(t, d);
                }
                for a in &call.args {
                    self.walk(a, d);
                }
            }
            Expr::List(list) => list.elements.iter().for_each(|x| self.walk(x, d)),
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(m) => {
                            self.walk(&m.key, d);
                            self.walk(&m.value, d);
                        }
                        EntryExpr::StructField(f) => self.walk(&f.value, d),
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.walk(&f.value, d);
                    }
                }
            }
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range, d);
                self.walk(&c.accu_init, d);
                let pushed = 2 + usize::from(c.iter_var2.is_some());
                self.scope.push(c.iter_var.clone());
                self.scope.push(c.accu_var.clone());
                if let Some(v) = &c.iter_var2 {
                    self.scope.push(v.clone());
                }
                self.walk(&c.loop_cond, d);
                self.walk(&c.loop_step, d);
                self.walk(&c.result, d);
                self.scope.truncate(self.scope.len() - pushed);
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    /// A free identifier `root`, optionally selected into as `root.field`.
    fn variable(&mut self, e: &IdedExpr, root: &str, field: Option<(&IdedExpr, &str)>) {
        if self.scope.iter().any(|s| s == root) {
            return;
        }
        if field.is_none() && TYPE_NAMES.contains(&root) {
            return;
        }
        if !ROOTS.contains(&root) {
            let (line, column) = self.pos(e);
            self.fail(ExprError::UnknownVariable {
                name: root.to_owned(),
                suggestion: closest(root, ROOTS.iter().copied()),
                line,
                column,
            });
            return;
        }
        match field {
            None => {
                if let Some(var) = context::lookup(root) {
                    self.reads.insert(var);
                }
            }
            Some((sel, field)) => {
                if let Some(var) = context::lookup(&format!("{root}.{field}")) {
                    self.reads.insert(var);
                } else {
                    let (line, column) = self.pos(sel);
                    self.fail(ExprError::UnknownVariable {
                        name: format!("{root}.{field}"),
                        suggestion: closest(field, context::fields_of(root))
                            .map(|f| format!("{root}.{f}")),
                        line,
                        column,
                    });
                }
            }
        }
    }

    fn function(&mut self, e: &IdedExpr, name: &str) {
        // Operators (`_+_`, `@in`, `!_`) and celgate's own functions.
        if !name.chars().next().is_some_and(|c| c.is_alphabetic())
            || name.starts_with("__celgate")
            || FUNCTIONS.contains(&name)
        {
            return;
        }
        // The standard library declares its functions as overloads of the Env;
        // adding a function of the same name is refused exactly when one exists.
        let mut probe = Context::with_env(Arc::clone(self.env));
        if probe.add_function(name, |x: i64| x).is_err() {
            return;
        }
        let (line, column) = self.pos(e);
        self.fail(ExprError::UnknownFunction {
            name: name.to_owned(),
            suggestion: closest(
                name,
                FUNCTIONS
                    .iter()
                    .copied()
                    .chain(STDLIB_NAMES.iter().copied()),
            ),
            line,
            column,
        });
    }
}

/// Common standard-library names, for suggestions only.
const STDLIB_NAMES: &[&str] = &[
    "size",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "type",
    "dyn",
    "matches",
    "contains",
    "startsWith",
    "endsWith",
    "max",
    "min",
    "has",
    "map",
    "filter",
    "all",
    "exists",
    "exists_one",
    "duration",
    "timestamp",
];

/// `root.field...` spelled by `e`: the root identifier's node, its name, and the
/// first field selected on it.
fn qualified(e: &IdedExpr) -> Option<(&IdedExpr, &str, &str)> {
    let mut cur = e;
    let mut first_field = None;
    loop {
        match &cur.expr {
            // A presence test `has(a.b)` names `a.b` just the same.
            Expr::Select(sel) => {
                first_field = Some(sel.field.as_str());
                cur = &sel.operand;
            }
            Expr::Ident(name) => return Some((cur, name.as_str(), first_field?)),
            _ => return None,
        }
    }
}

/// The canonical spelling of `root.field` (`llm.request_model` -> `llm.requestModel`).
fn canonical(root: &str, field: &str) -> String {
    let name = format!("{root}.{field}");
    context::VARIABLES
        .iter()
        .find(|v| v.name == name || v.alias == Some(name.as_str()))
        .map(|v| v.name.to_owned())
        .unwrap_or(name)
}

/// The candidate closest to `name`, if any is close enough to be a likely typo.
pub(crate) fn closest<'c>(name: &str, candidates: impl Iterator<Item = &'c str>) -> Option<String> {
    let lower = name.to_lowercase();
    candidates
        .map(|c| {
            let distance = strsim::damerau_levenshtein(&lower, &c.to_lowercase());
            (
                distance,
                std::cmp::Reverse((strsim::jaro_winkler(name, c) * 1000.0) as u64),
                c,
            )
        })
        .filter(|(d, _, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, _, c)| c.to_owned())
}
