//! Evaluation: a [`Node`] to a [`Value`], against one exchange.
//!
//! Variables are read through [`context::read`], the one mapping from an exchange
//! to the context; everything else is the CEL semantics the native evaluator
//! models (operators, `size`, `type`, comprehensions), each answering exactly as
//! the interpreter would or giving up ([`Fail`]).

use std::rc::Rc;

use super::emit::{JSON_CAPACITY, KeyBuf, Out, flatten_value, push_attr, write_json};
use super::lower::{CmpOp, Lit, Node, StrOp};
use super::{Fail, Steps};
use crate::attributes::AttrValue;
use crate::context::{self, Var, View};
use crate::exchange::Exchange;
use crate::value::Value;

type R<'a> = Result<Value<'a>, Fail>;

/// `a == b` as the interpreter decides it; `None` when not modelled.
fn equals(a: &Value, b: &Value) -> Option<bool> {
    use Value::*;
    let scalarish = |v: &Value| {
        matches!(
            v,
            Null | Bool(_) | Int(_) | UInt(_) | Double(_) | Str(_) | Owned(_) | Type(_)
        )
    };
    if matches!(a, Flat(_) | Parsed(_)) || matches!(b, Flat(_) | Parsed(_)) {
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
    view: View,
    locals: Vec<Value<'a>>,
    pub(super) steps: Steps,
}

impl<'a> Eval<'a> {
    pub(crate) fn new(ex: &'a Exchange, view: View) -> Self {
        Eval {
            ex,
            view,
            locals: Vec::new(),
            steps: Steps::new(),
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
                Value::Bool(true) => self.field_node(a, key, out),
                Value::Bool(false) => self.field_node(b, key, out),
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
        if matches!(v, Value::Type(_)) {
            return Err(Fail::Bail);
        }
        Ok(v.into_scalar())
    }

    /// The length of a context variable that is a list or a map (1 otherwise):
    /// what the plan's cost estimate multiplies.
    pub(crate) fn size_of(&self, var: Var) -> usize {
        let v = self.read(var);
        v.list_len().or_else(|| v.map_len()).unwrap_or(1)
    }

    #[inline]
    fn read(&self, var: Var) -> Value<'a> {
        context::read(self.ex, &self.view, var)
    }

    /// Evaluate `n`. The common leaves (literals, variables, a field of a
    /// comprehension variable) are handled here, inline at the call site; the
    /// rest in [`Eval::eval_node`].
    #[inline]
    pub(super) fn eval(&mut self, n: &'a Node) -> R<'a> {
        match n {
            Node::Var(v) => Ok(self.read(*v)),
            Node::Lit(Lit::Str(s)) => Ok(Value::Str(s)),
            Node::Select(x, field) => {
                let found = match &**x {
                    Node::Local(i) => match self.locals.get(*i) {
                        Some(v) => v.map_get_field(field),
                        None => return Err(Fail::Bail),
                    },
                    Node::Var(var) => context::read_field(self.ex, &self.view, *var, field),
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

    pub(super) fn eval_node(&mut self, n: &'a Node) -> R<'a> {
        match n {
            Node::Lit(l) => Ok(lit(l)),
            Node::Var(v) => Ok(self.read(*v)),
            Node::Local(i) => self.locals.get(*i).cloned().ok_or(Fail::Bail),
            Node::Type(t) => Ok(Value::Type(t)),
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
                    Some(found) => Ok(Value::Bool(found.is_some())),
                    None => Err(Fail::Bail),
                }
            }
            Node::Index(x, i) => self.index(x, i),
            Node::Cond(c, a, b) => match self.eval(c)? {
                Value::Bool(true) => self.eval(a),
                Value::Bool(false) => self.eval(b),
                _ => Err(Fail::Error),
            },
            Node::Default(x, fallback) => match self.eval(x) {
                Ok(Value::Null) | Err(Fail::Error) => self.eval(fallback),
                other => other,
            },
            Node::And(a, b) => self.logic(a, b, true),
            Node::Or(a, b) => self.logic(a, b, false),
            Node::Not(x) => match self.eval(x)? {
                Value::Bool(b) => Ok(Value::Bool(!b)),
                _ => Err(Fail::Error),
            },
            Node::Neg(x) => match self.eval(x)? {
                Value::Int(i) => i.checked_neg().map(Value::Int).ok_or(Fail::Error),
                Value::Double(d) => Ok(Value::Double(-d)),
                _ => Err(Fail::Bail),
            },
            Node::NotStrictlyFalse(x) => match self.eval(x) {
                Ok(Value::Bool(b)) => Ok(Value::Bool(b)),
                Err(e @ (Fail::Bail | Fail::Budget)) => Err(e),
                _ => Ok(Value::Bool(true)),
            },
            Node::IsNull(x) => Ok(Value::Bool(matches!(self.eval(x)?, Value::Null))),
            Node::Eq(a, b, negate) => {
                let l = self.eval(a)?;
                // `x == "literal"`, the common test: what `equals` decides for
                // a string on one side, without making a value of the literal.
                if let Node::Lit(Lit::Str(s)) = &**b
                    && !matches!(l, Value::Flat(_) | Value::Parsed(_))
                {
                    return Ok(Value::Bool((l.as_str() == Some(&**s)) != *negate));
                }
                let r = self.eval(b)?;
                match equals(&l, &r) {
                    Some(eq) => Ok(Value::Bool(eq != *negate)),
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
                sub(l, r)
            }
            Node::Div(a, b) => match (self.eval(a)?, self.eval(b)?) {
                (Value::Double(x), Value::Double(y)) => Ok(Value::Double(x / y)),
                _ => Err(Fail::Bail),
            },
            Node::Cmp(a, b, op) => {
                let l = self.eval(a)?;
                let r = self.eval(b)?;
                compare(&l, &r, *op)
            }
            Node::Size(x) => size(&self.eval(x)?),
            Node::ToDouble(x) => match self.eval(x)? {
                Value::Int(i) => Ok(Value::Double(i as f64)),
                Value::UInt(u) => Ok(Value::Double(u as f64)),
                Value::Double(d) => Ok(Value::Double(d)),
                _ => Err(Fail::Bail),
            },
            Node::TypeOf(x) => {
                let v = self.eval(x)?;
                v.type_name().map(Value::Type).ok_or(Fail::Bail)
            }
            Node::ParseJson(x) => {
                let v = self.eval(x)?;
                let Some(text) = v.as_str() else {
                    return Ok(v);
                };
                self.steps.copy(text)?;
                Ok(crate::value::parse_json(text).unwrap_or(v))
            }
            Node::Compact(x) => {
                let v = self.eval(x)?;
                if matches!(v, Value::Parsed(_)) {
                    return Err(Fail::Bail);
                }
                if !v.is_map() {
                    return Ok(v);
                }
                let entries = v.map_entries().ok_or(Fail::Bail)?;
                self.steps.take(entries.len())?;
                let kept = entries
                    .into_iter()
                    .filter(|(_, x)| !matches!(x, Value::Null))
                    .collect();
                Ok(Value::Map(Rc::new(kept)))
            }
            Node::ToJson(_)
            | Node::Flatten(..)
            | Node::StrTest(..)
            | Node::List(_)
            | Node::Map(..)
            | Node::Comp { .. } => self.build(n),
            Node::Bail => Err(Fail::Bail),
        }
    }

    /// `x[i]`: a list by an int, a map by a string.
    fn index(&mut self, x: &'a Node, i: &'a Node) -> R<'a> {
        let v = self.eval(x)?;
        let i = self.eval(i)?;
        if let (Some(len), Value::Int(i)) = (v.list_len(), &i) {
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

    /// `a && b` (`is_and`) or `a || b`, with CEL's error absorption.
    fn logic(&mut self, a: &'a Node, b: &'a Node, is_and: bool) -> R<'a> {
        let left = match self.eval(a) {
            Err(e @ (Fail::Bail | Fail::Budget)) => return Err(e),
            Ok(Value::Bool(b)) => Some(b),
            _ => None,
        };
        // `false && x` is false, `true || x` is true, whatever x is.
        if left == Some(!is_and) {
            return Ok(Value::Bool(!is_and));
        }
        let right = match self.eval(b)? {
            Value::Bool(b) => b,
            _ => return Err(Fail::Error),
        };
        match left {
            Some(_) => Ok(Value::Bool(right)),
            // An error beside the absorbing value is absorbed.
            None if right != is_and => Ok(Value::Bool(right)),
            None => Err(Fail::Error),
        }
    }

    /// The nodes that make a new value: JSON text, flattened entries, string
    /// tests, list and map literals, comprehensions.
    fn build(&mut self, n: &'a Node) -> R<'a> {
        match n {
            Node::ToJson(x) => {
                let v = self.eval(x)?;
                let mut text = Vec::with_capacity(JSON_CAPACITY);
                write_json(&v, 0, &mut text, &self.steps)?;
                // serde_json writes valid UTF-8.
                String::from_utf8(text)
                    .map(Value::Owned)
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
                Ok(Value::Flat(Rc::new(attrs)))
            }
            Node::StrTest(x, arg, op) => {
                let s = self.eval(x)?;
                let a = self.eval(arg)?;
                match (s.as_str(), a.as_str()) {
                    (Some(s), Some(a)) => Ok(Value::Bool(match op {
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
                Ok(Value::List(Rc::new(out)))
            }
            Node::Map(entries, _) => {
                let mut out = Vec::with_capacity(entries.len());
                for e in entries {
                    out.push((&*e.key, self.eval(&e.value)?));
                }
                Ok(Value::Map(Rc::new(out)))
            }
            Node::Comp { range, guard, item } => {
                let range = self.eval(range)?;
                let mut out = Vec::new();
                self.each(&range, guard.as_deref(), |this, _| {
                    out.push(this.eval(item)?);
                    Ok(())
                })?;
                Ok(Value::List(Rc::new(out)))
            }
            _ => Err(Fail::Bail),
        }
    }

    /// Run `body` for each item of `range` that passes `guard`, with the item
    /// bound to the next local slot; `body` gets the item's output index.
    pub(super) fn each(
        &mut self,
        range: &Value<'a>,
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
                    Ok(Value::Bool(true)) => {}
                    Ok(Value::Bool(false)) => continue,
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
}

fn add<'a>(l: Value<'a>, r: Value<'a>) -> R<'a> {
    match (&l, &r) {
        (Value::Int(x), Value::Int(y)) => {
            return x.checked_add(*y).map(Value::Int).ok_or(Fail::Error);
        }
        (Value::UInt(x), Value::UInt(y)) => {
            return x.checked_add(*y).map(Value::UInt).ok_or(Fail::Error);
        }
        (Value::Double(x), Value::Double(y)) => return Ok(Value::Double(x + y)),
        _ => {}
    }
    // A string made by an earlier `+` is appended to in place.
    let l = match l {
        Value::Owned(mut x) => match r.as_str() {
            Some(y) => {
                x.push_str(y);
                return Ok(Value::Owned(x));
            }
            None => Value::Owned(x),
        },
        l => l,
    };
    if let (Some(x), Some(y)) = (l.as_str(), r.as_str()) {
        let mut s = String::with_capacity(x.len() + y.len());
        s.push_str(x);
        s.push_str(y);
        return Ok(Value::Owned(s));
    }
    if let (Some(n), Some(m)) = (l.list_len(), r.list_len()) {
        let mut items = Vec::with_capacity(n + m);
        items.extend((0..n).map(|i| l.list_get(i)));
        items.extend((0..m).map(|i| r.list_get(i)));
        return Ok(Value::List(Rc::new(items)));
    }
    Err(Fail::Bail)
}

fn lit(l: &Lit) -> Value<'_> {
    match l {
        Lit::Null => Value::Null,
        Lit::Bool(b) => Value::Bool(*b),
        Lit::Int(i) => Value::Int(*i),
        Lit::UInt(u) => Value::UInt(*u),
        Lit::Double(d) => Value::Double(*d),
        Lit::Str(s) => Value::Str(s),
    }
}

fn sub<'a>(l: Value<'a>, r: Value<'a>) -> R<'a> {
    match (l, r) {
        (Value::Int(x), Value::Int(y)) => x.checked_sub(y).map(Value::Int).ok_or(Fail::Error),
        (Value::UInt(x), Value::UInt(y)) => x.checked_sub(y).map(Value::UInt).ok_or(Fail::Error),
        (Value::Double(x), Value::Double(y)) => Ok(Value::Double(x - y)),
        _ => Err(Fail::Bail),
    }
}

fn compare<'a>(l: &Value<'a>, r: &Value<'a>, op: CmpOp) -> R<'a> {
    let ord = match (l, r) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::UInt(x), Value::UInt(y)) => x.cmp(y),
        (Value::Double(x), Value::Double(y)) => x.partial_cmp(y).ok_or(Fail::Bail)?,
        _ => match (l.as_str(), r.as_str()) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => return Err(Fail::Bail),
        },
    };
    use std::cmp::Ordering::*;
    Ok(Value::Bool(match op {
        CmpOp::Lt => ord == Less,
        CmpOp::Le => ord != Greater,
        CmpOp::Gt => ord == Greater,
        CmpOp::Ge => ord != Less,
    }))
}

/// `size`: characters of a string, items of a list, entries of a map.
fn size<'a>(v: &Value<'a>) -> R<'a> {
    let n = if let Some(s) = v.as_str() {
        s.chars().count()
    } else if let Some(n) = v.list_len() {
        n
    } else if let Some(n) = v.map_len() {
        n
    } else {
        return Err(Fail::Bail);
    };
    Ok(Value::Int(n as i64))
}
