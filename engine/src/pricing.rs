//! What a call cost: the `pricing:` table and the arithmetic behind `llm.cost`.
//!
//! A config's `pricing` (its own entries, the shipped `pricing/default.yaml`, or
//! both) becomes a [`Table`] at load, every price checked there. Per call, the
//! first entry whose pattern matches the model the upstream reported (else the
//! model asked for) prices the exchange's token counts by the semantics
//! `schema/cel-context.md` gives them: input tokens include the cache reads and
//! writes, which are priced at their own rates and the rest at the input rate;
//! output tokens include reasoning, likewise. The [`Cost`] keeps every part, so a
//! preset can write the whole (`llm.cost.input`) or a backend's own split
//! (Langfuse prices the net input apart from the cached tokens) without
//! subtracting doubles.

use serde_saphyr::Spanned;

use crate::config::{Pos, PriceEntry, Pricing, PricingItem, wildcard_match};
use crate::diagnostics::{ConfigError, Diagnostic};
use crate::exchange::Exchange;

/// The shipped price table (see its header for sources and date).
pub const DEFAULT_SOURCE: &str = include_str!("../../pricing/default.yaml");
/// Its name in diagnostics.
pub const DEFAULT_FILE: &str = "pricing/default.yaml";

/// Rates of one model pattern, USD per million tokens, defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Rates {
    pub model: String,
    pub input: f64,
    pub cached_input: f64,
    pub cache_write: f64,
    pub output: f64,
    pub reasoning: f64,
}

/// The prices in effect, first match wins. Empty: nothing is priced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    entries: Vec<Rates>,
}

/// The cost of one call in USD, by part. A part whose tokens were not reported
/// is `None`; so is everything when no entry matches the model.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    /// Every input token: `uncached_input + cache_read + cache_write`.
    pub input: Option<f64>,
    /// Input tokens neither read from nor written to the cache.
    pub uncached_input: Option<f64>,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
    /// Every output token: `non_reasoning_output + reasoning`.
    pub output: Option<f64>,
    pub non_reasoning_output: Option<f64>,
    pub reasoning: Option<f64>,
    /// `input + output` (either alone when only one is known).
    pub total: Option<f64>,
}

impl Table {
    /// The table `pricing` says, every entry checked; `None` gives an empty one.
    pub fn load(pricing: Option<&Pricing>) -> Result<Table, ConfigError> {
        let mut table = Table::default();
        let mut diagnostics = Vec::new();
        match pricing {
            None => {}
            Some(Pricing::Default) => table.push_default()?,
            Some(Pricing::Entries(items)) => {
                for item in items {
                    match &item.value {
                        PricingItem::Default => table.push_default()?,
                        PricingItem::Price(entry) => {
                            table.push(entry, item.referenced.into(), "", &mut diagnostics)
                        }
                    }
                }
            }
        }
        if diagnostics.is_empty() {
            Ok(table)
        } else {
            Err(ConfigError { diagnostics })
        }
    }

    /// The entries of the shipped table, appended.
    fn push_default(&mut self) -> Result<(), ConfigError> {
        let in_file = |mut e: ConfigError| {
            for d in &mut e.diagnostics {
                d.message = format!("in {DEFAULT_FILE}: {}", d.message);
            }
            e
        };
        let items: Vec<Spanned<PricingItem>> =
            crate::plan::parse_yaml(DEFAULT_SOURCE).map_err(in_file)?;
        let mut diagnostics = Vec::new();
        for item in &items {
            let prefix = format!("in {DEFAULT_FILE}: ");
            match &item.value {
                PricingItem::Price(entry) => {
                    self.push(entry, item.referenced.into(), &prefix, &mut diagnostics)
                }
                PricingItem::Default => diagnostics.push(Diagnostic::new(
                    item.referenced.into(),
                    format!("{prefix}the default table cannot include itself"),
                )),
            }
        }
        match diagnostics.is_empty() {
            true => Ok(()),
            false => Err(ConfigError { diagnostics }),
        }
    }

    fn push(&mut self, e: &PriceEntry, pos: Pos, prefix: &str, out: &mut Vec<Diagnostic>) {
        let mut bad = |what: &str| {
            out.push(Diagnostic::new(
                pos,
                format!("{prefix}pricing entry `{}`: {what}", e.model),
            ))
        };
        if e.model.trim().is_empty() {
            bad("`model` must name a model or a `*` pattern");
            return;
        }
        let prices = [
            ("input", Some(e.input)),
            ("cachedInput", e.cached_input),
            ("cacheWrite", e.cache_write),
            ("output", Some(e.output)),
            ("reasoning", e.reasoning),
        ];
        let mut ok = true;
        for (key, price) in prices {
            if let Some(p) = price.filter(|p| !p.is_finite() || *p < 0.0) {
                bad(&format!(
                    "`{key}` is {p}: a price is USD per million tokens, a finite number of 0 or more"
                ));
                ok = false;
            }
        }
        if ok {
            self.entries.push(Rates {
                model: e.model.clone(),
                input: e.input,
                cached_input: e.cached_input.unwrap_or(e.input),
                cache_write: e.cache_write.unwrap_or(e.input),
                output: e.output,
                reasoning: e.reasoning.unwrap_or(e.output),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Rates] {
        &self.entries
    }

    /// The rates for a call: the first entry matching the model the upstream
    /// reported, else the first matching the model asked for.
    pub fn rates_for(
        &self,
        response_model: Option<&str>,
        request_model: Option<&str>,
    ) -> Option<&Rates> {
        let first = |model: &str| {
            self.entries
                .iter()
                .find(|r| wildcard_match(&r.model, model))
        };
        response_model
            .and_then(first)
            .or_else(|| request_model.and_then(first))
    }

    /// What `ex` cost; every part `None` when no entry prices its model.
    pub fn cost(&self, ex: &Exchange) -> Cost {
        match self.rates_for(ex.response_model.as_deref(), ex.request_model.as_deref()) {
            Some(rates) => rates.cost(ex),
            None => Cost::default(),
        }
    }
}

impl Rates {
    /// `ex`'s token counts at these rates. A part the counts contradict (more
    /// cached than input tokens, negative counts from a hostile upstream) is
    /// clamped, so the parts always add up to the whole.
    pub fn cost(&self, ex: &Exchange) -> Cost {
        let d = &ex.token_details;
        let (input, uncached_input, cache_read, cache_write) = match ex.input_tokens {
            Some(all) => {
                let all = all.max(0);
                let read = d.cache_read.map(|n| n.clamp(0, all));
                let write = d.cache_write.map(|n| n.clamp(0, all - read.unwrap_or(0)));
                let rest = all - read.unwrap_or(0) - write.unwrap_or(0);
                let uncached = usd(rest, self.input);
                let read = read.map(|n| usd(n, self.cached_input));
                let write = write.map(|n| usd(n, self.cache_write));
                let whole = uncached + read.unwrap_or(0.0) + write.unwrap_or(0.0);
                (Some(whole), Some(uncached), read, write)
            }
            None => (None, None, None, None),
        };
        let (output, non_reasoning_output, reasoning) = match ex.output_tokens {
            Some(all) => {
                let all = all.max(0);
                let thinking = d.reasoning.map(|n| n.clamp(0, all));
                let rest = usd(all - thinking.unwrap_or(0), self.output);
                let thinking = thinking.map(|n| usd(n, self.reasoning));
                (Some(rest + thinking.unwrap_or(0.0)), Some(rest), thinking)
            }
            None => (None, None, None),
        };
        let total = match (input, output) {
            (None, None) => None,
            (i, o) => Some(i.unwrap_or(0.0) + o.unwrap_or(0.0)),
        };
        Cost {
            input: input.map(round),
            uncached_input: uncached_input.map(round),
            cache_read: cache_read.map(round),
            cache_write: cache_write.map(round),
            output: output.map(round),
            non_reasoning_output: non_reasoning_output.map(round),
            reasoning: reasoning.map(round),
            total: total.map(round),
        }
    }
}

/// `tokens` at `per_million` USD per million.
fn usd(tokens: i64, per_million: f64) -> f64 {
    tokens as f64 * per_million / 1e6
}

/// To a millionth of a micro-dollar: sums of doubles read as the decimals they
/// are (`0.0035`, not `0.0034999999999999996`).
fn round(usd: f64) -> f64 {
    (usd * 1e12).round() / 1e12
}

#[cfg(test)]
mod tests;
