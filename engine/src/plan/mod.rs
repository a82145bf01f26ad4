//! A [`TracingPlan`]: a config compiled once, then evaluated per request.
//!
//! The plan's jobs, one module each, in the order a config goes through them:
//! [`load`] (the YAML document, or the ConfigMap manifest holding it),
//! [`backends`] (the backends' own checks), [`merge`] (the preset's fields and
//! the user's, the privacy switches), [`compile`] (every expression, on a thread
//! with the parser's stack; resources evaluated once), [`sample`] (the sampling
//! rules) and, per request, [`evaluate`] (the span record). This file holds what
//! they share: the plan, the span record and their small types.

use cel::Env;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use crate::attributes::AttrValue;
use crate::config::{ConfigFile, Limits, OtlpProtocol, Pos, PresetName, Tracing};
use crate::context::{VarSet, Visibility, lookup};
use crate::diagnostics::ConfigError;
use crate::needs::Needs;
use crate::pricing::Table;
use crate::{compile as expr, functions};

mod backends;
mod compile;
mod evaluate;
mod load;
mod merge;
mod sample;

#[doc(hidden)]
pub use compile::spawn_with_compile_stack;
pub(crate) use evaluate::related_keys;
pub use load::{load, load_document, parse_yaml};
pub use sample::Sampler;

/// Default cap on attributes per span.
pub const DEFAULT_MAX_ATTRIBUTES: usize = 128;
/// Default cap on one string value, in bytes.
pub const DEFAULT_MAX_VALUE_LENGTH: usize = 32 * 1024;
/// Cap on a span name and on an attribute key, in bytes. Both can carry client
/// text (the default name is `{operation} {model}`; `flatten` makes keys of a
/// request's JSON keys) and a megabyte-long one would make the span too large
/// for a collector to take.
pub const MAX_NAME_LENGTH: usize = 1024;
/// Stack a thread needs to evaluate any accepted expression, with a wide margin.
/// Evaluation recurses on the syntax tree: measured ~2 KiB per level in release
/// builds and ~40 KiB in debug builds, and trees are capped at
/// [`expr::MAX_AST_DEPTH`] levels. Callers that evaluate (the gateway's runtime
/// threads) should run on stacks at least this large.
pub const EVAL_STACK_SIZE: usize = 8 * 1024 * 1024;

/// Settings that come from the process environment rather than the file. The
/// engine reads no environment itself: the caller hands these over.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// `OPENINFERENCE_HIDE_INPUTS`.
    pub hide_inputs: Option<bool>,
    /// `OPENINFERENCE_HIDE_OUTPUTS`.
    pub hide_outputs: Option<bool>,
    /// `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` (OTel's GenAI switch):
    /// whether message content belongs on spans. It replaces the privacy default
    /// of the preset that follows the OTel GenAI conventions (`jaeger`); the
    /// config's `privacy` and `OPENINFERENCE_HIDE_*` still win over it.
    pub capture_message_content: Option<bool>,
}

/// A parsed and compiled config.
#[derive(Debug)]
pub struct Loaded {
    pub file: ConfigFile,
    pub plan: TracingPlan,
    /// Lines before, and indentation of, the config inside the document it was
    /// loaded from (a ConfigMap manifest); zero for a plain config.
    offset: Pos,
}

impl Loaded {
    /// A position in [`file`](Self::file) as a position in the document loaded.
    pub fn document_pos(&self, pos: Pos) -> Pos {
        Pos {
            line: pos.line + self.offset.line,
            column: pos.column + self.offset.column,
        }
    }
}

/// Where a field came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Preset(PresetName),
    User,
}

/// OTel span kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpanKind {
    #[default]
    Client,
    Server,
    Internal,
    Producer,
    Consumer,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Client => "CLIENT",
            SpanKind::Server => "SERVER",
            SpanKind::Internal => "INTERNAL",
            SpanKind::Producer => "PRODUCER",
            SpanKind::Consumer => "CONSUMER",
        }
    }

    fn parse(s: &str) -> Option<SpanKind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "client" => SpanKind::Client,
            "server" => SpanKind::Server,
            "internal" => SpanKind::Internal,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            _ => return None,
        })
    }
}

/// The OTel status a span's `span.status` field asks for. The gateway's own
/// verdict wins: a failed call is always `ERROR`, whatever the expression says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpanStatus {
    /// No `span.status` field, or it evaluated to `unset`/null.
    #[default]
    Unset,
    /// `ok`: OpenInference instrumentations mark successful calls this way.
    Ok,
    /// `error`: the expression judged the call failed though the HTTP exchange
    /// succeeded (a content filter, say).
    Error,
}

impl SpanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanStatus::Unset => "UNSET",
            SpanStatus::Ok => "OK",
            SpanStatus::Error => "ERROR",
        }
    }

    fn parse(s: &str) -> Option<SpanStatus> {
        Some(match s.to_ascii_lowercase().as_str() {
            "unset" => SpanStatus::Unset,
            "ok" => SpanStatus::Ok,
            "error" => SpanStatus::Error,
            _ => return None,
        })
    }
}

#[derive(Debug)]
struct CompiledField {
    key: String,
    expr: String,
    origin: Origin,
    /// The program, and the same expression for native evaluation when it has a
    /// shape the native evaluator models (see [`crate::native`]). The program is
    /// the reference: the native path defers to it for anything it does not
    /// model and on any error. Shared with the compile cache.
    compiled: Arc<expr::Compiled>,
}

/// What one evaluation produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanRecord {
    pub name: String,
    pub kind: SpanKind,
    /// From the `span.status` field; the gateway overrides it with `ERROR` when the
    /// call failed.
    pub status: SpanStatus,
    /// In expression order; keys are unique (a later expression wins).
    pub attributes: Vec<(String, AttrValue)>,
    /// Expressions that failed at run time: (attribute key, error). Their
    /// attributes are absent.
    pub errors: Vec<(String, String)>,
    /// Attributes cut by `limits.maxAttributes`.
    pub dropped_attributes: usize,
}

/// Everything needed to turn an exchange into span attributes, compiled once per
/// config load and shared by all requests.
pub struct TracingPlan {
    env: Arc<Env>,
    fields: Vec<CompiledField>,
    errors_by_field: Vec<AtomicU64>,
    remove: Vec<String>,
    max_attributes: usize,
    max_value_length: usize,
    visibility: Visibility,
    /// What the fields and sampling rules read.
    reads: VarSet,
    /// Two field keys are equal or one is a `.`-prefix of the other, so their
    /// attributes may share a key: de-duplicate every span.
    related_keys: bool,
    /// The most attributes a span of this plan had before limits: the capacity
    /// to start the next one with.
    attributes_hint: AtomicUsize,
    /// The preset in effect, if any.
    pub preset: Option<PresetName>,
    /// Resource attributes, evaluated at load.
    pub resources: Vec<(String, AttrValue)>,
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<OtlpProtocol>,
    pub headers: Vec<(String, String)>,
    pub random_sampling: Sampler,
    pub client_sampling: Sampler,
    /// The `pricing:` table `llm.cost` is computed from.
    pricing: Table,
}

/// The CEL environment: the standard library plus celgate's functions. Built once
/// per process and shared (it is immutable once built).
pub fn cel_env() -> Arc<Env> {
    static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
        let mut env = Env::stdlib();
        functions::install(&mut env).expect("celgate functions declare without conflict");
        Arc::new(env)
    });
    Arc::clone(&ENV)
}

impl TracingPlan {
    /// Compile the `tracing:` block `user` (with its preset) into a plan.
    fn build(
        user: Option<&Tracing>,
        pricing: Table,
        opts: &LoadOptions,
    ) -> Result<TracingPlan, ConfigError> {
        let empty = Tracing::default();
        let user = user.unwrap_or(&empty);
        let preset = match user.preset {
            Some(name) => Some((name, load::preset_tracing(name)?)),
            None => None,
        };
        let merged = merge::merge(user, preset.as_ref(), opts);
        let env = cel_env();
        let sampling = [&user.random_sampling, &user.client_sampling];
        let compiled = compile::compile_all(&env, &merged, &sampling)?;
        let Limits {
            max_attributes,
            max_value_length,
        } = user.limits;
        let max_value_length = max_value_length.unwrap_or(DEFAULT_MAX_VALUE_LENGTH);

        let mut diagnostics = Vec::new();
        let fields = compile::fields(&merged.fields, compiled.fields, &mut diagnostics);
        let resources = compile::resources(
            &env,
            &merged.resources,
            compiled.resources,
            max_value_length,
            &mut diagnostics,
        );
        let mut reads = VarSet::default();
        fields.iter().for_each(|f| reads.extend(f.compiled.reads));
        let [random_sampling, client_sampling] =
            sample::samplers(&sampling, compiled.samplers, &mut reads, &mut diagnostics);
        if !diagnostics.is_empty() {
            return Err(ConfigError { diagnostics });
        }
        Ok(TracingPlan {
            env,
            related_keys: related_keys(fields.iter().map(|f| f.key.as_str())),
            attributes_hint: AtomicUsize::new(0),
            errors_by_field: fields.iter().map(|_| AtomicU64::new(0)).collect(),
            fields,
            remove: merged.remove,
            max_attributes: max_attributes.unwrap_or(DEFAULT_MAX_ATTRIBUTES),
            max_value_length,
            visibility: merged.visibility,
            reads,
            preset: preset.map(|(n, _)| n),
            resources,
            otlp_endpoint: user.otlp_endpoint.as_ref().map(|e| e.value.clone()),
            otlp_protocol: user.otlp_protocol,
            headers: user
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            random_sampling,
            client_sampling,
            pricing,
        })
    }

    /// The prices `llm.cost` uses.
    pub fn pricing(&self) -> &Table {
        &self.pricing
    }

    /// What of a request the gateway must capture for this plan.
    pub fn needs(&self) -> Needs {
        Needs::of_reads(self.reads)
    }

    /// Whether any expression reads `name` (`llm.prompt`, either spelling),
    /// directly or through its root (`llm`). See [`TracingPlan::needs`].
    pub fn reads(&self, name: &str) -> bool {
        lookup(name).is_some_and(|var| self.reads.reads(var))
    }

    /// `limits.maxValueLength`: what any string of a span may take, in bytes (the
    /// gateway cuts the status message to it).
    pub fn max_value_length(&self) -> usize {
        self.max_value_length
    }

    /// Run-time errors so far, per attribute key (keys with none left out).
    pub fn error_counts(&self) -> Vec<(&str, u64)> {
        self.fields
            .iter()
            .zip(&self.errors_by_field)
            .map(|(f, n)| (f.key.as_str(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The effective fields after the preset merge: (key, expression, origin).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str, Origin)> {
        self.fields
            .iter()
            .map(|f| (f.key.as_str(), f.expr.as_str(), f.origin))
    }

    /// The effective privacy switches.
    pub fn visibility(&self) -> Visibility {
        self.visibility
    }
}

impl std::fmt::Debug for TracingPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingPlan")
            .field("preset", &self.preset)
            .field("fields", &self.fields.len())
            .field("visibility", &self.visibility)
            .finish_non_exhaustive()
    }
}

impl TracingPlan {
    /// A plan of one attribute field and nothing else (fuzzing).
    pub(crate) fn single_field(
        key: &str,
        expr: &str,
        compiled: Arc<expr::Compiled>,
        visibility: Visibility,
    ) -> TracingPlan {
        TracingPlan {
            env: cel_env(),
            reads: compiled.reads,
            fields: vec![CompiledField {
                key: key.to_owned(),
                expr: expr.to_owned(),
                origin: Origin::User,
                compiled,
            }],
            errors_by_field: vec![AtomicU64::new(0)],
            related_keys: false,
            attributes_hint: AtomicUsize::new(0),
            remove: Vec::new(),
            max_attributes: DEFAULT_MAX_ATTRIBUTES,
            max_value_length: DEFAULT_MAX_VALUE_LENGTH,
            visibility,
            preset: None,
            resources: Vec::new(),
            otlp_endpoint: None,
            otlp_protocol: None,
            headers: Vec::new(),
            random_sampling: Sampler::Always,
            client_sampling: Sampler::Always,
            pricing: Table::default(),
        }
    }
}

#[cfg(test)]
mod tests;
