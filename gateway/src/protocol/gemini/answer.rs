//! A Gemini answer merged from its chunks, and written into the exchange.
//!
//! Whole answers, JSON-array streams and SSE streams are all sequences of
//! `GenerateContentResponse` chunks (a whole answer is a sequence of one), so one
//! [`Answer`] reads them all, and a stream and the same answer as one body describe
//! the call alike. Per candidate `index` (absent means 0, as in Google's JSON), text
//! and thought text are appended and function calls added; a `finishReason` and the
//! `usageMetadata` count from the last chunk that has them, `modelVersion` and
//! `responseId` from the first. What is kept is capped by a [`Budget`] (see
//! [`crate::protocol::limits`]). At the end the answer becomes the exchange's
//! response side (choices in the chat vocabulary, token counts as the engine
//! documents them) and, for a stream, is rendered as the equivalent whole answer.

use std::borrow::Cow;

use celgate_engine::exchange::{Choice, Exchange, TokenDetails, ToolCall};
use serde::Serialize;
use serde_json::Value;

use super::super::limits::{Budget, MAX_TRACKED};
use super::super::tokens::{Usage, set_usage};
use super::wire::{RawCandidate, RawChunk, RawFunctionCall, RawUsage};

/// What the chunks read so far say.
#[derive(Debug, Default)]
pub(super) struct Answer {
    /// At least one chunk that is not an error was applied.
    pub saw_chunk: bool,
    response_id: Option<String>,
    model_version: Option<String>,
    candidates: Vec<CandidateState>,
    /// From the last chunk carrying `usageMetadata`.
    usage: Option<Counts>,
    /// `promptFeedback.blockReason`: the prompt was refused, no candidate follows.
    block_reason: Option<String>,
    budget: Budget,
}

#[derive(Debug)]
struct CandidateState {
    index: u32,
    content: Option<String>,
    reasoning: Option<String>,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<String>,
}

/// The `usageMetadata` counts, each a non-negative integer or absent.
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_token_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates_token_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_content_token_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thoughts_token_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_use_prompt_token_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_token_count: Option<i64>,
}

impl Counts {
    fn read(raw: &RawUsage<'_>) -> Self {
        Counts {
            prompt_token_count: raw.prompt.count(),
            candidates_token_count: raw.candidates.count(),
            cached_content_token_count: raw.cached.count(),
            thoughts_token_count: raw.thoughts.count(),
            tool_use_prompt_token_count: raw.tool_use_prompt.count(),
            total_token_count: raw.total.count(),
        }
    }

    /// The counts as the exchange records them (see `llm.inputTokens` and the rest):
    /// input is the prompt (cached content included, as Gemini counts it), output the
    /// candidates plus the thoughts.
    fn usage(self) -> Usage {
        let output = match (self.candidates_token_count, self.thoughts_token_count) {
            (Some(candidates), Some(thoughts)) => candidates.checked_add(thoughts),
            (candidates, thoughts) => candidates.or(thoughts),
        };
        Usage {
            input: self.prompt_token_count,
            output,
            total: self.total_token_count,
            details: TokenDetails {
                cache_read: self.cached_content_token_count,
                reasoning: self.thoughts_token_count,
                ..TokenDetails::default()
            },
        }
    }
}

impl Answer {
    /// Applies one chunk that is not an error.
    pub fn apply(&mut self, chunk: RawChunk<'_>) {
        self.saw_chunk = true;
        set_once(&mut self.response_id, chunk.response_id.0, &mut self.budget);
        set_once(
            &mut self.model_version,
            chunk.model_version.0,
            &mut self.budget,
        );
        if let Some(usage) = &chunk.usage {
            self.usage = Some(Counts::read(usage));
        }
        if let Some(reason) = chunk
            .prompt_feedback
            .and_then(|f| f.block_reason.0)
            .filter(|r| !r.is_empty())
        {
            self.block_reason = Some(self.budget.label(reason));
        }
        self.budget.truncated |= chunk.candidates.dropped;
        for candidate in chunk.candidates.items {
            self.apply_candidate(candidate);
        }
    }

    fn apply_candidate(&mut self, raw: RawCandidate<'_>) {
        let index = raw.index.as_u32().unwrap_or(0);
        let budget = &mut self.budget;
        let Some(state) = candidate_mut(&mut self.candidates, index) else {
            budget.truncated = true;
            return;
        };
        if let Some(content) = raw.content {
            let parts = content.parts;
            append(&mut state.content, parts.text, budget);
            append(&mut state.reasoning, parts.thought, budget);
            budget.truncated |= parts.dropped;
            for call in parts.calls {
                if budget.calls_left == 0 {
                    budget.truncated = true;
                    break;
                }
                budget.calls_left -= 1;
                state.tool_calls.push(tool_call(call, budget));
            }
        }
        if let Some(reason) = raw.finish_reason.0.filter(|r| !r.is_empty()) {
            state.finish_reason = Some(budget.label(reason));
        }
    }

    /// Whether the answer is complete: every candidate has finished, or the prompt
    /// was blocked (the stream then ends without one).
    pub fn complete(&self) -> bool {
        self.block_reason.is_some()
            || (!self.candidates.is_empty()
                && self.candidates.iter().all(|c| c.finish_reason.is_some()))
    }

    /// Writes the response side into `ex` (choices, model, id, token counts,
    /// `response_truncated`); returns whether a cap left something out.
    pub fn write(self, ex: &mut Exchange) -> bool {
        let truncated = self.budget.truncated;
        if let Some(id) = self.response_id {
            ex.response_id = Some(id);
        }
        if let Some(model) = self.model_version {
            ex.response_model = Some(model);
        }
        if let Some(counts) = self.usage {
            set_usage(ex, counts.usage());
        }
        let mut candidates = self.candidates;
        candidates.sort_by_key(|c| c.index);
        ex.choices = candidates
            .into_iter()
            .map(CandidateState::into_choice)
            .collect();
        ex.response_truncated |= truncated;
        truncated
    }

    /// The answer as the whole (non-streamed) `GenerateContentResponse` it amounts to.
    pub fn render(&self) -> Option<String> {
        let mut candidates: Vec<&CandidateState> = self.candidates.iter().collect();
        candidates.sort_by_key(|c| c.index);
        let rendered = RenderedAnswer {
            candidates: candidates.into_iter().map(render_candidate).collect(),
            prompt_feedback: self
                .block_reason
                .as_deref()
                .map(|block_reason| RenderedFeedback { block_reason }),
            usage_metadata: self.usage,
            model_version: self.model_version.as_deref(),
            response_id: self.response_id.as_deref(),
        };
        serde_json::to_string(&rendered).ok()
    }
}

/// Sets `slot` from the first non-empty value.
fn set_once(slot: &mut Option<String>, value: Option<Cow<'_, str>>, budget: &mut Budget) {
    if slot.is_none()
        && let Some(v) = value.filter(|v| !v.is_empty())
    {
        *slot = Some(budget.label(v));
    }
}

/// Appends what of `fragment` the budget still allows.
fn append(slot: &mut Option<String>, fragment: Option<Cow<'_, str>>, budget: &mut Budget) {
    if let Some(fragment) = fragment {
        let kept = budget.text(&fragment);
        match slot {
            Some(s) => s.push_str(kept),
            None => *slot = Some(kept.to_owned()),
        }
    }
}

fn candidate_mut(candidates: &mut Vec<CandidateState>, index: u32) -> Option<&mut CandidateState> {
    let pos = match candidates.iter().position(|c| c.index == index) {
        Some(pos) => pos,
        None if candidates.len() < MAX_TRACKED => {
            candidates.push(CandidateState {
                index,
                content: None,
                reasoning: None,
                tool_calls: Vec::new(),
                finish_reason: None,
            });
            candidates.len() - 1
        }
        None => return None,
    };
    candidates.get_mut(pos)
}

/// A `functionCall` part as a tool call: its `args` as compact JSON text (empty when
/// it has none), its id or `""`.
fn tool_call(call: RawFunctionCall<'_>, budget: &mut Budget) -> ToolCall {
    let arguments = match call.args {
        None => String::new(),
        Some(args) => budget.text(&args.to_string()).to_owned(),
    };
    ToolCall {
        id: call.id.0.map(|id| budget.label(id)).unwrap_or_default(),
        name: call.name.0.map(|n| budget.label(n)).unwrap_or_default(),
        arguments,
    }
}

impl CandidateState {
    fn into_choice(self) -> Choice {
        Choice {
            index: self.index,
            role: "assistant".to_owned(),
            content: self.content,
            tool_calls: self.tool_calls,
            finish_reason: self.finish_reason,
            reasoning: self.reasoning,
        }
    }
}

// ---------------------------------------------------------------------------------
// Rendering the equivalent whole answer.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RenderedAnswer<'a> {
    candidates: Vec<RenderedCandidate<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_feedback: Option<RenderedFeedback<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_metadata: Option<Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RenderedFeedback<'a> {
    block_reason: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RenderedCandidate<'a> {
    content: RenderedContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'a str>,
    index: u32,
}

#[derive(Serialize)]
struct RenderedContent<'a> {
    role: &'static str,
    parts: Vec<RenderedPart<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum RenderedPart<'a> {
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        thought: bool,
    },
    Call {
        #[serde(rename = "functionCall")]
        function_call: RenderedCall<'a>,
    },
}

#[derive(Serialize)]
struct RenderedCall<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<Value>,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
}

/// A candidate as one content: its thoughts, its text, then its function calls.
fn render_candidate(c: &CandidateState) -> RenderedCandidate<'_> {
    let texts = [(&c.reasoning, true), (&c.content, false)];
    let mut parts: Vec<RenderedPart<'_>> = texts
        .into_iter()
        .filter_map(|(text, thought)| Some((text.as_deref()?, thought)))
        .map(|(text, thought)| RenderedPart::Text { text, thought })
        .collect();
    parts.extend(c.tool_calls.iter().map(|call| RenderedPart::Call {
        function_call: RenderedCall {
            name: &call.name,
            // Compact JSON as read; text that no longer parses (cut by a cap) is kept
            // as a string.
            args: (!call.arguments.is_empty()).then(|| {
                serde_json::from_str(&call.arguments)
                    .unwrap_or_else(|_| Value::String(call.arguments.clone()))
            }),
            id: &call.id,
        },
    }));
    RenderedCandidate {
        content: RenderedContent {
            role: "model",
            parts,
        },
        finish_reason: c.finish_reason.as_deref(),
        index: c.index,
    }
}
