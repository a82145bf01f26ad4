//! What of a request the gateway must capture for a plan.
//!
//! Capturing costs: headers are copied, a request's messages, tools and body are
//! kept while the response streams, and a streamed response is rendered back
//! into one JSON body. [`Needs`] says which of those the plan's expressions (its
//! fields and its sampling rules) read, from the variables each compiled
//! expression reads, a whole root (`llm["prompt"]`) counting as every variable
//! under it. The gateway captures the rest not at all.

use crate::context::{Var, VarSet};
use crate::exchange::Exchange;
use crate::plan::TracingPlan;

/// Which parts of an exchange a plan reads: headers nobody reads are not copied,
/// and request parts nobody reads are not kept while the response streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// `request.headers`.
    pub request_headers: bool,
    /// `response.headers`.
    pub response_headers: bool,
    /// `llm.systemInstructions`.
    pub system: bool,
    /// `llm.prompt`.
    pub prompt: bool,
    /// `llm.tools`.
    pub tools: bool,
    /// `llm.params`.
    pub params: bool,
    /// `llm.requestBody`.
    pub request_body: bool,
    /// `llm.responseBody`.
    pub response_body: bool,
}

impl Needs {
    /// What `plan` reads.
    pub fn of(plan: &TracingPlan) -> Needs {
        plan.needs()
    }

    pub(crate) fn of_reads(reads: VarSet) -> Needs {
        Needs {
            request_headers: reads.reads(Var::ReqHeaders),
            response_headers: reads.reads(Var::RespHeaders),
            system: reads.reads(Var::System),
            prompt: reads.reads(Var::Prompt),
            tools: reads.reads(Var::Tools),
            params: reads.reads(Var::Params),
            request_body: reads.reads(Var::RequestBody),
            response_body: reads.reads(Var::ResponseBody),
        }
    }

    /// Drops from `ex` the request parts nothing reads.
    pub fn trim(&self, ex: &mut Exchange) {
        if !self.system {
            ex.system = Vec::new();
        }
        if !self.prompt {
            ex.prompt = Vec::new();
        }
        if !self.tools {
            ex.tools = Vec::new();
        }
        if !self.params {
            ex.params = Vec::new();
        }
        if !self.request_body {
            ex.request_body = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LoadOptions, load};

    fn needs(fields: &str) -> Needs {
        let yaml = format!("config:\n  tracing:\n    fields:\n      add:\n{fields}");
        Needs::of(&load(&yaml, &LoadOptions::default()).unwrap().plan)
    }

    #[test]
    fn needs_are_the_variables_read_either_spelling_or_through_the_root() {
        let n = needs("        a: llm.response_body\n        b: size(request.headers)\n");
        assert_eq!(
            n,
            Needs {
                response_body: true,
                request_headers: true,
                ..Needs::default()
            }
        );
        let n = needs("        a: 'llm[\"prompt\"]'\n");
        assert!(n.prompt && n.tools && n.params && n.request_body && n.response_body);
        assert!(n.system);
        assert!(!n.request_headers && !n.response_headers);
        let yaml = "config:\n  tracing:\n    clientSampling: 'has(request.headers.x)'\n";
        let n = Needs::of(&load(yaml, &LoadOptions::default()).unwrap().plan);
        assert!(n.request_headers && !n.prompt);
    }
}
