//! Evaluating a plan on one exchange: the span record.
//!
//! Each field runs on the native evaluator when it has a native form, and on
//! the CEL interpreter when it has none or the native evaluator gives up (see
//! [`crate::native`]); the interpreter's resolver is made only if some field
//! needs it. A field that is estimated over budget, errors or runs out of steps
//! drops its own attribute and is counted, nothing else. Then the span's name,
//! kind and status, and last removal, de-duplication and limits ([`finish`]).
//!
//! [`finish`]: TracingPlan::finish

use cel::{Context, Value};
use std::cell::OnceCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::attributes::{self, AttrValue};
use crate::context::{ExchangeResolver, Var, View};
use crate::exchange::Exchange;
use crate::functions::Flattened;
use crate::native::{self, Fail};

use super::{CompiledField, MAX_NAME_LENGTH, SpanKind, SpanRecord, SpanStatus, TracingPlan};

/// Most attribute slots a span reserves up front (see `attributes_hint`).
const MAX_ATTRIBUTES_HINT: usize = 256;

/// A field's attributes as the interpreter gives them, pushed under `key`;
/// `Ok(true)` when two of them may share a key.
type InterpretAttrs<'f> =
    dyn Fn(&CompiledField, &str, &mut Vec<(String, AttrValue)>) -> Result<bool, String> + 'f;

impl TracingPlan {
    /// How this plan's expressions see `ex`: its privacy switches, and the
    /// call's cost when some expression reads `llm.cost`.
    fn view(&self, ex: &Exchange) -> View {
        let cost = match self.reads.reads(Var::Cost) {
            true => self.pricing.cost(ex),
            false => Default::default(),
        };
        View::new(self.visibility, cost)
    }

    /// Evaluate every expression on `ex` and build the span's name, kind and
    /// attributes. Never fails: an expression that errors drops only its own
    /// attribute, and is counted.
    pub fn evaluate(&self, ex: &Exchange) -> SpanRecord {
        self.evaluate_with(ex, true)
    }

    /// [`TracingPlan::evaluate`] with the CEL interpreter alone, never the native
    /// evaluator: the reference the native path must match (tests and fuzzing
    /// compare the two).
    #[doc(hidden)]
    pub fn evaluate_interpreted(&self, ex: &Exchange) -> SpanRecord {
        self.evaluate_with(ex, false)
    }

    fn evaluate_with(&self, ex: &Exchange, use_native: bool) -> SpanRecord {
        let view = self.view(ex);
        // The interpreter's resolver and context, made only if a field needs them.
        let resolver: OnceCell<ExchangeResolver> = OnceCell::new();
        let cel_ctx: OnceCell<Context> = OnceCell::new();
        let ctx = || {
            cel_ctx.get_or_init(|| {
                let mut ctx = Context::with_env(Arc::clone(&self.env));
                ctx.set_variable_resolver(
                    resolver.get_or_init(|| ExchangeResolver::with_cost(ex, view.vis, view.cost)),
                );
                ctx
            })
        };
        let scalar = |f: &CompiledField| {
            Value::resolve_val(f.compiled.program.expression(), ctx())
                .map(|v| attributes::scalar(v.as_ref()))
                .map_err(|e| e.to_string())
        };
        let attrs = |f: &CompiledField, key: &str, out: &mut Vec<(String, AttrValue)>| {
            let v = Value::resolve_val(f.compiled.program.expression(), ctx())
                .map_err(|e| e.to_string())?;
            let dup = v
                .downcast_ref::<Flattened>()
                .is_some_and(|flat| flat.entries.len() > 1);
            attributes::push_value(key, v.as_ref(), out);
            Ok(dup)
        };
        let mut native = native::Eval::new(ex, view);
        let mut rec = SpanRecord {
            attributes: Vec::with_capacity(self.attributes_hint.load(Ordering::Relaxed)),
            ..SpanRecord::default()
        };
        let mut maybe_dup = false;
        let mut name = None;
        for (i, f) in self.fields.iter().enumerate() {
            let node = f.compiled.native.as_ref().filter(|_| use_native);
            if let Err(why) = self.affordable(f, &native) {
                self.fail(i, &mut rec, why);
                continue;
            }
            match f.key.as_str() {
                "span.name" | "span.kind" | "span.status" => {
                    let value = match node.map(|n| native.scalar(n)) {
                        Some(Err(Fail::Budget)) => Err(over_budget()),
                        Some(Ok(v)) => Ok(v),
                        Some(Err(_)) | None => scalar(f),
                    };
                    match value {
                        Ok(v) => self.span_field(i, v, &mut rec, &mut name),
                        Err(e) => self.fail(i, &mut rec, e),
                    }
                }
                key => maybe_dup |= self.attribute(i, key, node, &mut native, &attrs, &mut rec),
            }
        }
        rec.name = name.unwrap_or_else(|| default_span_name(ex));
        attributes::truncate_str(&mut rec.name, MAX_NAME_LENGTH);
        // Capped: one huge span must not make every later one reserve as much.
        let seen = rec.attributes.len().min(MAX_ATTRIBUTES_HINT);
        if seen > self.attributes_hint.load(Ordering::Relaxed) {
            self.attributes_hint.store(seen, Ordering::Relaxed);
        }
        self.finish(&mut rec, maybe_dup || self.related_keys);
        rec
    }

    /// Attribute field `i`: natively if it can, else by the interpreter. Returns
    /// whether two of its attributes may share a key.
    fn attribute<'a>(
        &self,
        i: usize,
        key: &str,
        node: Option<&'a native::Node>,
        native: &mut native::Eval<'a>,
        interpret: &InterpretAttrs,
        rec: &mut SpanRecord,
    ) -> bool {
        let start = rec.attributes.len();
        if let Some(n) = node {
            let mut out = native::Out {
                attrs: &mut rec.attributes,
                maybe_dup: false,
                max_len: self.max_value_length,
            };
            match native.field(n, key, &mut out) {
                Ok(()) => return out.maybe_dup,
                Err(Fail::Budget) => {
                    rec.attributes.truncate(start);
                    self.fail(i, rec, over_budget());
                    return false;
                }
                // Not modelled, or an error: the interpreter decides.
                Err(_) => rec.attributes.truncate(start),
            }
        }
        match interpret(&self.fields[i], key, &mut rec.attributes) {
            Ok(dup) => dup,
            Err(e) => {
                self.fail(i, rec, e);
                false
            }
        }
    }

    /// `span.name`, `span.kind` or `span.status` (field `i`) set to `value`.
    fn span_field(
        &self,
        i: usize,
        value: Option<AttrValue>,
        rec: &mut SpanRecord,
        name: &mut Option<String>,
    ) {
        match self.fields[i].key.as_str() {
            "span.name" => match value {
                Some(AttrValue::String(s)) => *name = Some(s),
                Some(other) => *name = Some(other.to_string()),
                None => {}
            },
            "span.status" => {
                let parsed = match &value {
                    None => Some(SpanStatus::Unset),
                    Some(AttrValue::String(s)) => SpanStatus::parse(s),
                    Some(_) => None,
                };
                match (parsed, value) {
                    (Some(status), _) => rec.status = status,
                    (None, other) => self.fail(
                        i,
                        rec,
                        format!(
                            "`{}` is not a span status (ok, error, unset)",
                            other.map(|v| v.to_string()).unwrap_or_default()
                        ),
                    ),
                }
            }
            _ => {
                if let Some(AttrValue::String(s)) = value {
                    match SpanKind::parse(&s) {
                        Some(k) => rec.kind = k,
                        None => self.fail(i, rec, format!("`{s}` is not a span kind (client, server, internal, producer, consumer)")),
                    }
                }
            }
        }
    }

    /// Whether field `f` may run on this exchange: a field with nested
    /// comprehensions over request data ([`crate::compile::Cost`]) is estimated
    /// from the lists' sizes first, and skipped when the estimate is over the
    /// budget (the interpreter, which has no budget of its own, never starts it).
    fn affordable(&self, f: &CompiledField, native: &native::Eval<'_>) -> Result<(), String> {
        let cost = &f.compiled.cost;
        if cost.nests.is_empty() {
            return Ok(());
        }
        let estimate = cost.estimate(|var| native.size_of(var));
        if estimate > native::MAX_STEPS as usize {
            return Err(format!(
                "not evaluated: its nested comprehensions would take about {estimate} iterations on this request, over the budget of {} per expression",
                native::MAX_STEPS
            ));
        }
        Ok(())
    }

    /// Field `i` failed on this exchange: no attribute, and counted.
    fn fail(&self, i: usize, rec: &mut SpanRecord, why: String) {
        self.errors_by_field[i].fetch_add(1, Ordering::Relaxed);
        rec.errors.push((self.fields[i].key.clone(), why));
    }

    /// Removal, de-duplication (the last value of a key wins, at its first
    /// position) and limits, applied last. `dedup` is false when no two
    /// attributes can share a key.
    fn finish(&self, rec: &mut SpanRecord, dedup: bool) {
        // Keys first: two keys cut to the same prefix are then de-duplicated.
        let mut dedup = dedup;
        for (key, _) in rec.attributes.iter_mut() {
            if key.len() > MAX_NAME_LENGTH {
                attributes::truncate_str(key, MAX_NAME_LENGTH);
                dedup = true;
            }
        }
        if !self.remove.is_empty() {
            rec.attributes.retain(|(k, _)| !self.removed(k));
        }
        if dedup {
            rec.attributes = last_value_wins(std::mem::take(&mut rec.attributes));
        }
        let out = &mut rec.attributes;
        if out.len() > self.max_attributes {
            rec.dropped_attributes = out.len() - self.max_attributes;
            out.truncate(self.max_attributes);
        }
        for (_, v) in out.iter_mut() {
            v.truncate(self.max_value_length);
        }
    }

    fn removed(&self, key: &str) -> bool {
        self.remove.iter().any(|r| match r.strip_suffix(".*") {
            Some(prefix) => {
                key == prefix || (key.starts_with(prefix) && key[prefix.len()..].starts_with('.'))
            }
            None => r == key,
        })
    }

    /// Per field: whether the native evaluator settles it on `ex` (`None`: the
    /// field has no native form).
    pub(crate) fn native_outcomes(&self, ex: &Exchange) -> Vec<(String, Option<bool>)> {
        let mut native = native::Eval::new(ex, self.view(ex));
        self.fields
            .iter()
            .map(|f| {
                let ok = f.compiled.native.as_ref().map(|n| {
                    let mut attrs = Vec::new();
                    let mut out = native::Out {
                        attrs: &mut attrs,
                        maybe_dup: false,
                        max_len: self.max_value_length,
                    };
                    native.field(n, &f.key, &mut out).is_ok()
                });
                (f.key.clone(), ok)
            })
            .collect()
    }
}

/// Each key once, at its first position, with its last value.
fn last_value_wins(attrs: Vec<(String, AttrValue)>) -> Vec<(String, AttrValue)> {
    let mut out: Vec<(String, AttrValue)> = Vec::with_capacity(attrs.len());
    let mut index: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(attrs.len());
    for (k, v) in attrs {
        match index.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                index.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    out
}

/// Whether two of `keys` are equal, or one is the other plus `.suffix`: only then
/// can attributes of different fields share a key. `span.name`, `span.kind` and
/// `span.status` set the span's name, kind and status, not attributes.
pub(crate) fn related_keys<'k>(keys: impl Iterator<Item = &'k str>) -> bool {
    let mut keys: Vec<&str> = keys
        .filter(|k| !matches!(*k, "span.name" | "span.kind" | "span.status"))
        .collect();
    keys.sort_unstable();
    // Sorted, a key's `.`-extensions follow it, before anything else that
    // does not start with it; so checking each key against the next ones that
    // start with it is enough.
    keys.iter().enumerate().any(|(i, a)| {
        keys[i + 1..]
            .iter()
            .take_while(|b| b.starts_with(a))
            .any(|b| b.len() == a.len() || b.as_bytes()[a.len()] == b'.')
    })
}

/// The message of a field stopped by the native evaluator's step budget.
fn over_budget() -> String {
    format!(
        "evaluation stopped after {} steps, the budget per expression (nested comprehensions over request data?)",
        native::MAX_STEPS
    )
}

/// OTel GenAI's default: `{operation} {model}`, the model cut so that the name
/// stays within [`MAX_NAME_LENGTH`] (a client can send a megabyte-long model).
fn default_span_name(ex: &Exchange) -> String {
    let op = ex.operation.as_str();
    match ex.request_model.as_deref() {
        Some(m) if !m.is_empty() => {
            let m = crate::attributes::cut_str(m, MAX_NAME_LENGTH);
            let mut name = String::with_capacity(op.len() + 1 + m.len());
            name.push_str(op);
            name.push(' ');
            name.push_str(m);
            name
        }
        _ => op.to_owned(),
    }
}
