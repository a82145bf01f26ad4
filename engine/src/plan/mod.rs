//! Loading a config into a [`TracingPlan`]: parse, merge the preset, compile every
//! expression once; then evaluate the plan per request.

use cel::{Context, Env, Program, Value};
use std::cell::OnceCell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use crate::attributes::{self, AttrValue};
use crate::compile::{self, ExprError};
use crate::config::{
    ConfigFile, Field, Limits, OtlpProtocol, Pos, PresetName, Privacy, Sampling, Tracing,
};
use crate::context::{ExchangeResolver, Visibility};
use crate::diagnostics::{ConfigError, Diagnostic, Snippet};
use crate::exchange::Exchange;
use crate::native;
use crate::redact;
use crate::{functions, presets};

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
/// [`compile::MAX_AST_DEPTH`] levels. Callers that evaluate (the gateway's runtime
/// threads) should run on stacks at least this large.
pub const EVAL_STACK_SIZE: usize = 8 * 1024 * 1024;
thread_local! {
    /// Set on threads whose stack is at least [`COMPILE_STACK`].
    static ON_COMPILE_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn on_compile_stack() -> bool {
    ON_COMPILE_STACK.with(|f| f.get())
}

/// Spawn a thread with the compiling thread's stack, on which [`load`] compiles
/// in place instead of spawning one per call (fuzzing loads millions of
/// configs). `f` runs with the stack it needs to compile anything.
#[doc(hidden)]
pub fn spawn_with_compile_stack<F, T>(f: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name("celgate-compile".into())
        .stack_size(COMPILE_STACK)
        .spawn(move || {
            ON_COMPILE_STACK.with(|flag| flag.set(true));
            f()
        })
}

/// Most attribute slots a span reserves up front (see `attributes_hint`).
const MAX_ATTRIBUTES_HINT: usize = 256;
/// Stack for the compiling thread: the `cel` parser recurses on the input.
const COMPILE_STACK: usize = 256 * 1024 * 1024;

/// Settings that come from the process environment rather than the file. The
/// engine reads no environment itself: the caller hands these over.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// `OPENINFERENCE_HIDE_INPUTS`.
    pub hide_inputs: Option<bool>,
    /// `OPENINFERENCE_HIDE_OUTPUTS`.
    pub hide_outputs: Option<bool>,
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

/// A sampling rule, compiled.
#[derive(Debug)]
pub enum Sampler {
    Always,
    Never,
    Ratio(f64),
    Expression(Box<Program>),
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
    compiled: Arc<compile::Compiled>,
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
    reads: BTreeSet<String>,
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

/// Parse `yaml` (a whole config.yaml, or just its `config:` block) and compile it.
pub fn load(yaml: &str, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let file = parse_yaml::<ConfigFile>(yaml)?;
    check_backends(&file)?;
    let plan = TracingPlan::build(file.config.tracing.as_ref(), opts)?;
    Ok(Loaded {
        file,
        plan,
        offset: Pos::default(),
    })
}

/// Rejects backends the gateway could not use (no name, a name used twice, a base
/// URL that is not `http(s)://host...`) and URLs with a password in them.
fn check_backends(file: &ConfigFile) -> Result<(), ConfigError> {
    let mut diagnostics = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for b in &file.backends {
        let pos = b.referenced.into();
        let backend = &b.value;
        if backend.name.trim().is_empty() {
            diagnostics.push(Diagnostic::new(pos, "backend `name` must not be empty"));
        } else if !seen.insert(backend.name.as_str()) {
            diagnostics.push(Diagnostic::new(
                pos,
                format!(
                    "backend name `{}` is used twice; names identify backends in logs and metrics",
                    backend.name
                ),
            ));
        }
        let url = backend.base_url.as_str();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            diagnostics.push(Diagnostic::new(
                pos,
                format!(
                    "backend `{}`: baseUrl `{}` must start with http:// or https:// and name a host, e.g. https://api.openai.com/v1",
                    backend.name,
                    redact::mask_url(url)
                ),
            ));
        } else if redact::has_userinfo(url) {
            diagnostics.push(Diagnostic::new(
                pos,
                format!(
                    "backend `{}`: baseUrl `{}` carries credentials (user:password@), which celgate does not send and which do not belong in a ConfigMap: remove them and give the key as `apiKey: {{env: VARIABLE}}` or `{{file: PATH}}`",
                    backend.name,
                    redact::mask_url(url)
                ),
            ));
        }
    }
    if let Some(endpoint) = file
        .config
        .tracing
        .as_ref()
        .and_then(|t| t.otlp_endpoint.as_ref())
        .filter(|e| redact::has_userinfo(&e.value))
    {
        diagnostics.push(Diagnostic::new(
            endpoint.referenced.into(),
            format!(
                "otlpEndpoint `{}` carries credentials (user:password@), which do not belong in a ConfigMap: remove them and send the collector's credentials as a header, e.g. `headers: {{Authorization: \"Basic ${{COLLECTOR_AUTH}}\"}}`",
                redact::mask_url(&endpoint.value)
            ),
        ));
    }
    if diagnostics.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { diagnostics })
    }
}

/// Like [`load`], but also accepts a Kubernetes ConfigMap manifest holding the
/// config under `data."config.yaml"` (what operators keep in their repos).
/// Positions in errors point into the manifest.
pub fn load_document(yaml: &str, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    match configmap_payload(yaml) {
        Some((inner, line_offset, indent)) => {
            let offset = Pos {
                line: line_offset,
                column: indent,
            };
            match load(&inner, opts) {
                Ok(loaded) => Ok(Loaded { offset, ..loaded }),
                Err(mut e) => {
                    for d in &mut e.diagnostics {
                        d.pos.line += offset.line;
                        d.pos.column += offset.column;
                    }
                    Err(e)
                }
            }
        }
        None => load(yaml, opts),
    }
}

/// `(config.yaml text, lines before it, its indentation)` when `yaml` is a
/// ConfigMap manifest with a block-scalar `config.yaml` entry.
fn configmap_payload(yaml: &str) -> Option<(String, u32, u32)> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        kind: String,
        data: std::collections::BTreeMap<String, String>,
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        kind: Option<String>,
    }
    let probe: Probe = serde_saphyr::from_str(yaml).ok()?;
    if probe.kind.as_deref() != Some("ConfigMap") {
        return None;
    }
    let m: Manifest = serde_saphyr::from_str(yaml).ok()?;
    if m.kind != "ConfigMap" {
        return None;
    }
    let entry = m.data.get("config.yaml")?;
    // A block scalar (`|`, `|-`) starts on the line after its key.
    let header_line = yaml.lines().position(|l| {
        let t = l.trim_start();
        t.starts_with("config.yaml:") || t.starts_with("\"config.yaml\":")
    })? + 1;
    let first = yaml
        .lines()
        .skip(header_line)
        .find(|l| !l.trim().is_empty())?;
    let indent = first.len() - first.trim_start().len();
    Some((entry.clone(), header_line as u32, indent as u32))
}

/// Deserialize YAML, mapping errors to a positioned diagnostic.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> Result<T, ConfigError> {
    serde_saphyr::from_str::<T>(yaml).map_err(|e| {
        let pos = e
            .location()
            .map(Pos::from)
            .unwrap_or(Pos { line: 1, column: 1 });
        ConfigError::single(Diagnostic::new(pos, crate::yaml_error::message(&e)))
    })
}

fn preset_tracing(name: PresetName) -> Result<Tracing, ConfigError> {
    parse_yaml::<Tracing>(presets::source(name)).map_err(|e| ConfigError {
        diagnostics: e
            .diagnostics
            .into_iter()
            .map(|d| Diagnostic {
                message: format!("in preset {}: {}", presets::file_name(name), d.message),
                ..d
            })
            .collect(),
    })
}

struct Source<'a> {
    field: &'a Field,
    origin: Origin,
}

fn hidden(config: Option<bool>, env: Option<bool>, preset: Option<bool>) -> bool {
    config == Some(true)
        || env == Some(true)
        || (config.is_none() && env.is_none() && preset == Some(true))
}

impl TracingPlan {
    fn build(user: Option<&Tracing>, opts: &LoadOptions) -> Result<TracingPlan, ConfigError> {
        let empty = Tracing::default();
        let user = user.unwrap_or(&empty);
        let preset = match user.preset {
            Some(name) => Some((name, preset_tracing(name)?)),
            None => None,
        };
        let preset_privacy = preset
            .as_ref()
            .map(|(_, p)| p.privacy)
            .unwrap_or(Privacy::default());

        // Merge: preset fields in preset order, user keys replace them in place,
        // new user keys follow.
        let mut merged: Vec<Source> = Vec::new();
        if let Some((name, p)) = &preset {
            merged.extend(p.fields.add.iter().map(|field| Source {
                field,
                origin: Origin::Preset(*name),
            }));
        }
        for field in user.fields.add.iter() {
            let src = Source {
                field,
                origin: Origin::User,
            };
            match merged
                .iter_mut()
                .find(|s| s.origin != Origin::User && s.field.key == field.key)
            {
                Some(slot) => *slot = src,
                None => merged.push(src),
            }
        }
        let mut resources: Vec<Source> = Vec::new();
        if let Some((name, p)) = &preset {
            resources.extend(p.resources.iter().map(|field| Source {
                field,
                origin: Origin::Preset(*name),
            }));
        }
        resources.extend(user.resources.iter().map(|field| Source {
            field,
            origin: Origin::User,
        }));

        let env = cel_env();
        let sampling = [&user.random_sampling, &user.client_sampling];

        // Compile everything on one thread with a large stack.
        let compile_all = || {
            let fields: Vec<_> = merged
                .iter()
                .map(|src| compile::compile_shared(&env, &src.field.expr))
                .collect();
            let res: Vec<_> = resources
                .iter()
                .map(|src| compile::compile_shared(&env, &src.field.expr))
                .collect();
            let samplers: Vec<_> = sampling
                .iter()
                .map(|s| match s.as_ref().map(|s| &s.value) {
                    Some(Sampling::Expression(e)) => Some(compile::compile(&env, e)),
                    _ => None,
                })
                .collect();
            (fields, res, samplers)
        };
        let compiled = if on_compile_stack() {
            // Already on such a thread (see `fuzzing::spawn_with_compile_stack`).
            Ok(Ok(compile_all()))
        } else {
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name("celgate-compile".into())
                    .stack_size(COMPILE_STACK)
                    .spawn_scoped(s, compile_all)
                    .map(|h| h.join())
            })
        };
        let (fields, res, samplers) = match compiled {
            Ok(Ok(r)) => r,
            _ => {
                return Err(ConfigError::single(Diagnostic::new(
                    Pos { line: 1, column: 1 },
                    "could not compile the expressions (compiler thread failed)",
                )));
            }
        };

        let mut diagnostics = Vec::new();
        let mut out_fields = Vec::new();
        let mut reads = BTreeSet::new();
        for (src, result) in merged.iter().zip(fields) {
            match result {
                Ok(c) => {
                    reads.extend(c.reads.iter().cloned());
                    out_fields.push(CompiledField {
                        key: src.field.key.clone(),
                        expr: src.field.expr.clone(),
                        origin: src.origin,
                        compiled: c,
                    });
                }
                Err(e) => diagnostics.push(expr_diagnostic(src, "attribute", &e)),
            }
        }
        let mut resource_values = Vec::new();
        let empty_exchange = Exchange::default();
        for (src, result) in resources.iter().zip(res) {
            match result {
                Ok(c) => {
                    let resolver = ExchangeResolver::new(&empty_exchange, Visibility::default());
                    let mut ctx = Context::with_env(Arc::clone(&env));
                    ctx.set_variable_resolver(&resolver);
                    match Value::resolve_val(c.program.expression(), &ctx) {
                        Ok(v) => attributes::push_value(
                            &src.field.key,
                            v.as_ref(),
                            &mut resource_values,
                        ),
                        Err(e) => diagnostics.push(Diagnostic {
                            pos: src.field.key_pos,
                            message: format!(
                                "resource `{}`: evaluation failed: {e} (resources are evaluated once at load, without a request)",
                                src.field.key
                            ),
                            snippet: None,
                        }),
                    }
                }
                Err(e) => diagnostics.push(expr_diagnostic(src, "resource", &e)),
            }
        }
        let mut samplers_out = Vec::new();
        for (name, (spec, compiled)) in ["randomSampling", "clientSampling"]
            .iter()
            .zip(sampling.iter().zip(samplers))
        {
            let sampler = match (spec.as_ref(), compiled) {
                (None, _) => Sampler::Always,
                (Some(s), Some(Ok(c))) if !c.cost.nests.is_empty() => {
                    // Sampling runs on the interpreter alone, before the request
                    // is sent: no per-request estimate, so no nest at all.
                    diagnostics.push(Diagnostic::new(
                        s.referenced.into(),
                        format!("{name}: the expression nests comprehensions over request data inside one another; a sampling rule may not"),
                    ));
                    Sampler::Always
                }
                (Some(_), Some(Ok(c))) => {
                    reads.extend(c.reads);
                    Sampler::Expression(Box::new(c.program))
                }
                (Some(s), Some(Err(e))) => {
                    diagnostics.push(Diagnostic {
                        pos: s.referenced.into(),
                        message: format!("{name}: {e}"),
                        snippet: snippet_of(s_expr(&s.value), &e),
                    });
                    Sampler::Always
                }
                (Some(s), None) => match s.value {
                    Sampling::Bool(true) => Sampler::Always,
                    Sampling::Bool(false) => Sampler::Never,
                    Sampling::Ratio(r) if (0.0..=1.0).contains(&r) => Sampler::Ratio(r),
                    Sampling::Ratio(r) => {
                        diagnostics.push(Diagnostic::new(
                            s.referenced.into(),
                            format!("{name}: ratio {r} is outside 0..1"),
                        ));
                        Sampler::Always
                    }
                    Sampling::Expression(_) => Sampler::Always,
                },
            };
            samplers_out.push(sampler);
        }
        if !diagnostics.is_empty() {
            return Err(ConfigError { diagnostics });
        }
        let client_sampling = samplers_out.pop().unwrap_or(Sampler::Always);
        let random_sampling = samplers_out.pop().unwrap_or(Sampler::Always);

        let mut remove: Vec<String> = preset
            .as_ref()
            .map(|(_, p)| p.fields.remove.clone())
            .unwrap_or_default();
        remove.extend(user.fields.remove.iter().cloned());
        let Limits {
            max_attributes,
            max_value_length,
        } = user.limits;
        let max_value_length = max_value_length.unwrap_or(DEFAULT_MAX_VALUE_LENGTH);
        for (key, value) in &mut resource_values {
            attributes::truncate_str(key, MAX_NAME_LENGTH);
            value.truncate(max_value_length);
        }
        let visibility = Visibility {
            hide_inputs: hidden(
                user.privacy.hide_inputs,
                opts.hide_inputs,
                preset_privacy.hide_inputs,
            ),
            hide_outputs: hidden(
                user.privacy.hide_outputs,
                opts.hide_outputs,
                preset_privacy.hide_outputs,
            ),
        };
        let related_keys = related_keys(out_fields.iter().map(|f| f.key.as_str()));
        Ok(TracingPlan {
            env,
            related_keys,
            attributes_hint: AtomicUsize::new(0),
            errors_by_field: out_fields.iter().map(|_| AtomicU64::new(0)).collect(),
            fields: out_fields,
            remove,
            max_attributes: max_attributes.unwrap_or(DEFAULT_MAX_ATTRIBUTES),
            max_value_length,
            visibility,
            reads,
            preset: preset.map(|(n, _)| n),
            resources: resource_values,
            otlp_endpoint: user.otlp_endpoint.as_ref().map(|e| e.value.clone()),
            otlp_protocol: user.otlp_protocol,
            headers: user
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            random_sampling,
            client_sampling,
        })
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
        // The interpreter's resolver and context, made only if a field needs them.
        let resolver: OnceCell<ExchangeResolver> = OnceCell::new();
        let cel_ctx: OnceCell<Context> = OnceCell::new();
        let ctx = || {
            cel_ctx.get_or_init(|| {
                let mut ctx = Context::with_env(Arc::clone(&self.env));
                ctx.set_variable_resolver(
                    resolver.get_or_init(|| ExchangeResolver::new(ex, self.visibility)),
                );
                ctx
            })
        };
        let mut native = native::Eval::new(ex, self.visibility);
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
                key @ ("span.name" | "span.kind" | "span.status") => {
                    let native_value = match node.map(|n| native.scalar(n)) {
                        Some(Err(native::Fail::Budget)) => {
                            self.fail(i, &mut rec, over_budget());
                            continue;
                        }
                        Some(v) => v.ok(),
                        None => None,
                    };
                    let value = match native_value {
                        Some(v) => v,
                        None => match Value::resolve_val(f.compiled.program.expression(), ctx()) {
                            Ok(v) => attributes::scalar(v.as_ref()),
                            Err(e) => {
                                self.errors_by_field[i].fetch_add(1, Ordering::Relaxed);
                                rec.errors.push((f.key.clone(), e.to_string()));
                                continue;
                            }
                        },
                    };
                    if key == "span.name" {
                        match value {
                            Some(AttrValue::String(s)) => name = Some(s),
                            Some(other) => name = Some(other.to_string()),
                            None => {}
                        }
                    } else if key == "span.status" {
                        let parsed = match &value {
                            None => Some(SpanStatus::Unset),
                            Some(AttrValue::String(s)) => SpanStatus::parse(s),
                            Some(_) => None,
                        };
                        match (parsed, value) {
                            (Some(status), _) => rec.status = status,
                            (None, other) => {
                                self.errors_by_field[i].fetch_add(1, Ordering::Relaxed);
                                rec.errors.push((
                                    f.key.clone(),
                                    format!(
                                        "`{}` is not a span status (ok, error, unset)",
                                        other.map(|v| v.to_string()).unwrap_or_default()
                                    ),
                                ));
                            }
                        }
                    } else if let Some(AttrValue::String(s)) = value {
                        match SpanKind::parse(&s) {
                            Some(k) => rec.kind = k,
                            None => {
                                self.errors_by_field[i].fetch_add(1, Ordering::Relaxed);
                                rec.errors.push((
                                    f.key.clone(),
                                    format!("`{s}` is not a span kind (client, server, internal, producer, consumer)"),
                                ));
                            }
                        }
                    }
                }
                key => {
                    let start = rec.attributes.len();
                    if let Some(n) = node {
                        let mut out = native::Out {
                            attrs: &mut rec.attributes,
                            maybe_dup: false,
                            max_len: self.max_value_length,
                        };
                        match native.field(n, key, &mut out) {
                            Ok(()) => {
                                maybe_dup |= out.maybe_dup;
                                continue;
                            }
                            Err(native::Fail::Budget) => {
                                rec.attributes.truncate(start);
                                self.fail(i, &mut rec, over_budget());
                                continue;
                            }
                            // Not modelled, or an error: the interpreter decides.
                            Err(_) => rec.attributes.truncate(start),
                        }
                    }
                    match Value::resolve_val(f.compiled.program.expression(), ctx()) {
                        Ok(v) => {
                            if v.downcast_ref::<functions::Flattened>()
                                .is_some_and(|flat| flat.entries.len() > 1)
                            {
                                maybe_dup = true;
                            }
                            attributes::push_value(key, v.as_ref(), &mut rec.attributes)
                        }
                        Err(e) => {
                            self.errors_by_field[i].fetch_add(1, Ordering::Relaxed);
                            rec.errors.push((f.key.clone(), e.to_string()));
                        }
                    }
                }
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

    /// Whether field `f` may run on this exchange: a field with nested
    /// comprehensions over request data ([`compile::Cost`]) is estimated from the
    /// lists' sizes first, and skipped when the estimate is over the budget (the
    /// interpreter, which has no budget of its own, never starts it).
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
            let attrs = std::mem::take(&mut rec.attributes);
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
            rec.attributes = out;
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

    /// Whether any expression reads `name` (`llm.prompt`), directly or through its
    /// root (`llm`). The gateway skips capturing what nothing reads.
    pub fn reads(&self, name: &str) -> bool {
        let root = name.split('.').next().unwrap_or(name);
        self.reads.contains(name) || self.reads.contains(root)
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

    /// Evaluate a sampling expression on `ex`: `Some(true)` to sample. A ratio
    /// or fixed rule returns `None` (the caller draws).
    pub fn eval_sampler(&self, sampler: &Sampler, ex: &Exchange) -> Result<bool, String> {
        match sampler {
            Sampler::Always => Ok(true),
            Sampler::Never => Ok(false),
            Sampler::Ratio(_) => Err("ratio samplers are drawn by the caller".into()),
            Sampler::Expression(p) => {
                let resolver = ExchangeResolver::new(ex, self.visibility);
                let mut ctx = Context::with_env(Arc::clone(&self.env));
                ctx.set_variable_resolver(&resolver);
                let v = Value::resolve_val(p.expression(), &ctx).map_err(|e| e.to_string())?;
                match attributes::scalar(v.as_ref()) {
                    Some(AttrValue::Bool(b)) => Ok(b),
                    _ => Err("sampling expression did not yield a bool".into()),
                }
            }
        }
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
            let mut end = m.len().min(MAX_NAME_LENGTH);
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            let m = &m[..end];
            let mut name = String::with_capacity(op.len() + 1 + m.len());
            name.push_str(op);
            name.push(' ');
            name.push_str(m);
            name
        }
        _ => op.to_owned(),
    }
}

fn s_expr(s: &Sampling) -> &str {
    match s {
        Sampling::Expression(e) => e,
        _ => "",
    }
}

fn snippet_of(expr: &str, e: &ExprError) -> Option<Snippet> {
    e.position().map(|(line, column)| Snippet {
        expr: expr.to_owned(),
        line,
        column,
    })
}

fn expr_diagnostic(src: &Source, what: &str, e: &ExprError) -> Diagnostic {
    let prefix = match src.origin {
        Origin::User => String::new(),
        Origin::Preset(p) => format!("in preset {}: ", presets::file_name(p)),
    };
    Diagnostic {
        pos: src.field.key_pos,
        message: format!("{prefix}{what} `{}`: {e}", src.field.key),
        snippet: snippet_of(&src.field.expr, e).or_else(|| {
            Some(Snippet {
                expr: src.field.expr.chars().take(200).collect(),
                line: 1,
                column: 1,
            })
        }),
    }
}

impl TracingPlan {
    /// A plan of one attribute field and nothing else (fuzzing).
    pub(crate) fn single_field(
        key: &str,
        expr: &str,
        compiled: Arc<compile::Compiled>,
        visibility: Visibility,
    ) -> TracingPlan {
        TracingPlan {
            env: cel_env(),
            reads: compiled.reads.clone(),
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
        }
    }

    /// Per field: whether the native evaluator settles it on `ex` (`None`: the
    /// field has no native form).
    pub(crate) fn native_outcomes(&self, ex: &Exchange) -> Vec<(String, Option<bool>)> {
        let mut native = native::Eval::new(ex, self.visibility);
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

#[cfg(test)]
mod budget_tests {
    use super::*;
    use crate::exchange::Message;

    fn plan(fields: &str) -> Result<TracingPlan, ConfigError> {
        let yaml = format!("config:\n  tracing:\n    fields:\n      add:\n{fields}");
        load(&yaml, &LoadOptions::default()).map(|l| l.plan)
    }

    fn messages(n: usize) -> Exchange {
        Exchange {
            request_model: Some("gpt-4o".into()),
            prompt: (0..n)
                .map(|i| Message {
                    role: "user".into(),
                    content: Some(format!("message {i}")),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn attr<'r>(rec: &'r SpanRecord, key: &str) -> Option<&'r AttrValue> {
        rec.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    const QUADRATIC: &str = "size(llm.prompt.map(a, llm.prompt.map(b, b)))";

    #[test]
    fn a_quadratic_expression_on_a_large_request_is_dropped_and_counted() {
        let plan = plan(&format!(
            "        quadratic: '{QUADRATIC}'\n        count: size(llm.prompt)\n"
        ))
        .unwrap();
        let ex = messages(6_000);
        for rec in [plan.evaluate(&ex), plan.evaluate_interpreted(&ex)] {
            assert_eq!(attr(&rec, "quadratic"), None);
            assert_eq!(attr(&rec, "count"), Some(&AttrValue::Int(6_000)));
            assert_eq!(rec.errors.len(), 1, "{:?}", rec.errors);
            assert_eq!(rec.errors[0].0, "quadratic");
            assert!(
                rec.errors[0].1.contains("36000000 iterations"),
                "{:?}",
                rec.errors
            );
        }
        assert_eq!(plan.error_counts(), vec![("quadratic", 2)]);
        // On a small request the same expression is cheap, and evaluated.
        let rec = plan.evaluate(&messages(10));
        assert_eq!(attr(&rec, "quadratic"), Some(&AttrValue::Int(10)));
        assert!(rec.errors.is_empty());
    }

    #[test]
    fn linear_work_of_quadratic_size_is_stopped_by_the_step_budget() {
        // No nested comprehension (nothing to estimate at load), but the JSON
        // is 6,000 copies of 6,000 messages.
        let plan = plan("        big: 'toJson(llm.prompt.map(a, llm.prompt))'\n").unwrap();
        let rec = plan.evaluate(&messages(6_000));
        assert_eq!(attr(&rec, "big"), None);
        assert!(
            rec.errors
                .iter()
                .any(|(k, e)| k == "big" && e.contains("budget per expression")),
            "{:?}",
            rec.errors
        );
        // The same on a small request is in budget and matches the interpreter.
        let small = messages(3);
        assert_eq!(plan.evaluate(&small), plan.evaluate_interpreted(&small));
        assert!(plan.evaluate(&small).errors.is_empty());
    }

    #[test]
    fn the_budget_does_not_cut_linear_passes_over_large_requests() {
        let plan = plan(
            "        contents: 'llm.prompt.map(m, m.content)'\n        json: 'toJson(llm.prompt)'\n        flat: 'flattenRecursive(llm.prompt.map(m, {\"role\": m.role, \"content\": m.content}))'\n",
        )
        .unwrap();
        let rec = plan.evaluate(&messages(50_000));
        assert!(rec.errors.is_empty(), "{:?}", rec.errors);
        assert!(attr(&rec, "contents").is_some() && attr(&rec, "json").is_some());
    }

    #[test]
    fn nests_over_dependent_ranges_are_linear_and_free() {
        let c =
            compile::compile(&cel_env(), "llm.prompt.map(m, m.tool_calls.map(t, t.name))").unwrap();
        assert!(c.cost.nests.is_empty());
        let c = compile::compile(&cel_env(), "llm.prompt.map(m, [1, 2].map(x, x))").unwrap();
        assert!(c.cost.nests.is_empty());
        let c = compile::compile(
            &cel_env(),
            "llm.prompt.exists(m, llm.tools.exists(t, t.name == m.name))",
        )
        .unwrap();
        assert_eq!(c.cost.nests.len(), 1);
        let ex = Exchange {
            tools: vec![serde_json::json!({}); 7],
            ..messages(5)
        };
        let native = native::Eval::new(&ex, Visibility::default());
        assert_eq!(c.cost.estimate(|v| native.size_of(v)), 35);
    }

    #[test]
    fn a_cubic_expression_is_refused_at_load() {
        let err =
            plan("        cubic: 'llm.prompt.map(a, llm.prompt.map(b, llm.prompt.map(c, c)))'\n")
                .unwrap_err();
        let text = err.render("test.yaml");
        assert!(
            text.contains("nests 3 comprehensions over request data"),
            "{text}"
        );
        assert!(plan(&format!("        q: '{QUADRATIC}'\n")).is_ok());
    }

    #[test]
    fn a_sampling_rule_with_a_nest_is_refused_at_load() {
        let yaml = format!(
            "config:\n  tracing:\n    randomSampling: '{QUADRATIC} > 0'\n    fields:\n      add:\n        a: llm.requestModel\n"
        );
        let err = load(&yaml, &LoadOptions::default()).unwrap_err();
        assert!(err.render("t.yaml").contains("a sampling rule may not"));
    }

    #[test]
    fn span_names_keys_and_resources_are_bounded() {
        let model = "m".repeat(5 * 1024 * 1024);
        let ex = Exchange {
            request_model: Some(model.clone()),
            operation: crate::exchange::Operation::Chat,
            params: vec![("x".repeat(3000), serde_json::json!(1))],
            ..Default::default()
        };
        let yaml = "config:\n  tracing:\n    resources:\n      service.name: '\"abcdefgh\"'\n    limits: {maxValueLength: 4}\n    fields:\n      add:\n        p: flatten(llm.params)\n        model: llm.requestModel\n";
        let plan = load(yaml, &LoadOptions::default()).unwrap().plan;
        assert_eq!(
            plan.resources,
            vec![("service.name".to_owned(), AttrValue::String("abcd".into()))]
        );
        for rec in [plan.evaluate(&ex), plan.evaluate_interpreted(&ex)] {
            assert_eq!(rec.name.len(), MAX_NAME_LENGTH);
            assert!(rec.name.starts_with("chat mmm"));
            let (key, _) = rec
                .attributes
                .iter()
                .find(|(k, _)| k.starts_with("p."))
                .expect("the flattened param");
            assert_eq!(key.len(), MAX_NAME_LENGTH);
            assert_eq!(attr(&rec, "model"), Some(&AttrValue::String("mmmm".into())));
        }
    }
}
