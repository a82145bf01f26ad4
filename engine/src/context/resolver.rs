//! The context as the CEL interpreter reads it: [`read`]'s values, as CEL values.
//!
//! Nothing is serialised up front. When an expression reads `llm.requestModel`, the
//! interpreter asks the resolver for that qualified name and gets just that value,
//! borrowing the exchange's strings. Values are built at most once per exchange and
//! shared by every expression that reads them. The resolver decides nothing about
//! what a variable holds: that is [`read`]'s, for both evaluators.

use cel::common::types::{CelMap, CelMapKey};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use std::collections::HashMap;
use std::sync::OnceLock;

use super::{ROOT_VARS, SLOTS, VARIABLES, Var, View, Visibility, lookup, read};
use crate::exchange::Exchange;
use crate::pricing::Cost;

/// Serves the variables of one exchange to the interpreter.
pub struct ExchangeResolver<'a> {
    ex: &'a Exchange,
    view: View,
    slots: [OnceLock<Box<dyn Val + 'a>>; SLOTS],
}

impl<'a> ExchangeResolver<'a> {
    /// The variables of `ex` as `vis` shows them, with no cost (`llm.cost`'s
    /// parts all null): at load, and for sampling, before any answer.
    pub fn new(ex: &'a Exchange, vis: Visibility) -> Self {
        Self::with_cost(ex, vis, Cost::default())
    }

    /// The same, `llm.cost` being `cost`.
    pub fn with_cost(ex: &'a Exchange, vis: Visibility, cost: Cost) -> Self {
        ExchangeResolver {
            ex,
            view: View::new(vis, cost),
            slots: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn get(&self, var: Var) -> &(dyn Val + 'a) {
        self.slots[var as usize]
            .get_or_init(|| self.build(var))
            .as_ref()
    }

    fn build(&self, var: Var) -> Box<dyn Val + 'a> {
        match ROOT_VARS.iter().find(|(_, v)| *v == var) {
            Some((root, _)) => self.root(root),
            None => read(self.ex, &self.view, var).to_cel(),
        }
    }

    /// A whole root (`llm`, for `llm["x"]` and `has(llm.x)`): a map of its
    /// variables, under both spellings.
    fn root(&self, root: &str) -> Box<dyn Val + 'a> {
        let mut entries: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::new();
        for spec in VARIABLES {
            for name in std::iter::once(spec.name).chain(spec.alias) {
                if let Some((r, field)) = name.split_once('.')
                    && r == root
                {
                    entries.insert(CelMapKey::from(field), self.get(spec.var).clone_as_boxed());
                }
            }
        }
        Box::new(CelMap::from(entries))
    }
}

impl VariableResolver for ExchangeResolver<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let var = lookup(variable)?;
        Some(CowVal::Borrowed(self.get(var)))
    }
}

#[cfg(test)]
mod tests {
    use crate::attributes::AttrValue;
    use crate::exchange::{Choice, Exchange, Message};
    use crate::{LoadOptions, load};

    fn interpreted(ex: &Exchange, opts: &LoadOptions) -> Vec<(String, AttrValue)> {
        let yaml = "config:\n  tracing:\n    fields:\n      add:\n        p: toJson(llm.prompt)\n        c: llm.completion\n        in: llm.requestBody\n        out: llm.responseBody\n        root: 'size(llm[\"prompt\"])'\n";
        let plan = load(yaml, opts).unwrap().plan;
        let rec = plan.evaluate_interpreted(ex);
        assert!(rec.errors.is_empty(), "{:?}", rec.errors);
        rec.attributes
    }

    #[test]
    fn the_interpreter_reads_the_one_mapping_privacy_included() {
        let ex = Exchange {
            prompt: vec![Message {
                role: "user".into(),
                content: Some("hi".into()),
                ..Default::default()
            }],
            choices: vec![Choice {
                content: Some("yo".into()),
                ..Default::default()
            }],
            request_body: Some("{\"a\":1}".into()),
            response_body: Some("{\"b\":2}".into()),
            ..Default::default()
        };
        let s = |v: &str| AttrValue::String(v.into());
        let shown = interpreted(&ex, &LoadOptions::default());
        let message =
            r#"[{"content":"hi","name":null,"role":"user","tool_call_id":null,"tool_calls":[]}]"#;
        assert_eq!(
            shown,
            vec![
                ("p".into(), s(message)),
                ("c".into(), AttrValue::StringArray(vec!["yo".into()])),
                ("in".into(), s("{\"a\":1}")),
                ("out".into(), s("{\"b\":2}")),
                ("root".into(), AttrValue::Int(1)),
            ]
        );
        let hidden = LoadOptions {
            hide_inputs: Some(true),
            hide_outputs: Some(true),
            ..LoadOptions::default()
        };
        assert_eq!(
            interpreted(&ex, &hidden),
            vec![
                ("p".into(), s("[]")),
                ("c".into(), AttrValue::StringArray(vec![])),
                ("in".into(), s(crate::context::REDACTED)),
                ("out".into(), s(crate::context::REDACTED)),
                ("root".into(), AttrValue::Int(0)),
            ]
        );
    }
}
