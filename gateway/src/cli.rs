//! The `celgate` command line: `check`, `preview`, `presets`.
//!
//! Each command returns its process exit code; output goes to the writers it is
//! handed so tests can run commands in process.

use anyhow::{Context as _, Result};
use celgate_engine::exchange::{Exchange, HttpRequest, HttpResponse, Operation};
use celgate_engine::{AttrValue, PresetName, SpanRecord, presets};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::protocol::{self, SseAccumulator};

/// An LLM gateway (OpenAI, Anthropic Messages, OpenAI Responses, Gemini) whose trace attributes are CEL expressions.
#[derive(Debug, Parser)]
#[command(name = "celgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate config files: exit 0 when valid, 1 with every error as FILE:LINE:COL.
    Check {
        /// config.yaml files (a whole config, just its `config:` block, or a
        /// Kubernetes ConfigMap manifest holding `data."config.yaml"`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Evaluate a config on one recorded exchange, without any network, and print
    /// the span it would export.
    Preview {
        /// The config to evaluate.
        #[arg(long, required_unless_present = "preset")]
        config: Option<PathBuf>,
        /// Evaluate a built-in preset instead of a config file.
        #[arg(long, conflicts_with = "config", value_parser = parse_preset)]
        preset: Option<PresetName>,
        /// The request body (JSON). Default: a built-in sample chat exchange.
        #[arg(long)]
        request: Option<PathBuf>,
        /// The response: a JSON body, or a recorded SSE stream (`data: ...` lines).
        #[arg(long)]
        response: Option<PathBuf>,
        /// What `llm.provider` evaluates to.
        #[arg(long, default_value = "openai")]
        provider: String,
        /// The authenticated client (`client.name`), as with `auth.clientKeys`.
        /// Default: none.
        #[arg(long)]
        client: Option<String>,
        /// The client's `team` (`client.team`).
        #[arg(long, requires = "client")]
        client_team: Option<String>,
        /// One entry of the client's `metadata` (`client.metadata`); repeatable.
        #[arg(long, value_name = "KEY=VALUE", requires = "client", value_parser = parse_pair)]
        client_metadata: Vec<(String, String)>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run the gateway: proxy on `listen`, admin endpoints on `admin`, spans to
    /// the configured collector. The config is reloaded when its file changes.
    Run {
        /// config.yaml (or a ConfigMap manifest holding it).
        #[arg(long)]
        config: PathBuf,
    },
    /// Quick start: the gateway with a built-in scripted upstream and spans printed
    /// to the console; sends a few calls, then keeps serving so you can curl it and
    /// edit the config it wrote.
    Demo {
        /// Which preset shapes the spans.
        #[arg(long, default_value = "phoenix", value_parser = parse_preset)]
        preset: PresetName,
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where to write config.yaml (default: a celgate-demo folder in the temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A scripted upstream speaking OpenAI, Anthropic Messages, Responses and Gemini (no model, no key): for demos and
    /// end-to-end tests. Fault scripts are chosen by model name (`error-500`,
    /// `slow-3000`, `cut-after-3`, `reset-after-3`, `drip-200`, `stall-30000`, `hang`,
    /// `malformed-sse`, `sse-error`, `invalid-json`, `gzip`, `big-10`).
    Upstream {
        /// Address to listen on; port 0 picks a free one (printed on stderr).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// The built-in presets.
    Presets {
        #[command(subcommand)]
        command: PresetsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PresetsCommand {
    /// List the presets with a one-line description each.
    List,
    /// Print a preset's YAML (the same form as a `config.tracing` block).
    Show {
        #[arg(value_parser = parse_preset)]
        name: PresetName,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Table,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn parse_preset(s: &str) -> Result<PresetName, String> {
    PresetName::parse(s).ok_or_else(|| {
        let names: Vec<_> = PresetName::ALL.iter().map(|p| p.as_str()).collect();
        format!("unknown preset `{s}`; the presets are {}", names.join(", "))
    })
}

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32> {
    match cli.command {
        Command::Check { files } => check(&files, out, err),
        Command::Run { config } => crate::server::run(&config),
        Command::Demo {
            preset,
            listen,
            dir,
        } => crate::demo::run(preset, listen, dir),
        Command::Upstream { listen } => crate::server::run_upstream(listen),
        Command::Preview {
            config,
            preset,
            request,
            response,
            provider,
            client,
            client_team,
            client_metadata,
            format,
        } => {
            let yaml = match (&config, preset) {
                (Some(path), _) => read(path)?,
                (None, Some(p)) => format!("config:\n  tracing:\n    preset: {}\n", p.as_str()),
                (None, None) => unreachable!("clap requires --config or --preset"),
            };
            let label = config
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<preset>".into());
            let loaded = match celgate_engine::load_document(&yaml, &crate::load::load_options()) {
                Ok(l) => l,
                Err(e) => {
                    writeln!(err, "{}", e.render(&label))?;
                    return Ok(1);
                }
            };
            let mut ex = sample_exchange(request.as_deref(), response.as_deref(), &provider)?;
            ex.client = client.map(|name| {
                let metadata: std::collections::BTreeMap<_, _> =
                    client_metadata.into_iter().collect();
                std::sync::Arc::new(celgate_engine::exchange::Client {
                    name,
                    team: client_team,
                    metadata: metadata.into_iter().collect(),
                })
            });
            let span = loaded.plan.evaluate(&ex);
            for (key, msg) in &span.errors {
                writeln!(err, "warning: attribute `{key}` dropped: {msg}")?;
            }
            match format {
                Format::Json => writeln!(out, "{}", span_json(&span))?,
                Format::Table => write_table(&span, out)?,
            }
            Ok(0)
        }
        Command::Presets { command } => {
            match command {
                PresetsCommand::List => {
                    for p in PresetName::ALL {
                        writeln!(out, "{:<12} {}", p.as_str(), presets::description(p))?;
                    }
                }
                PresetsCommand::Show { name } => write!(out, "{}", presets::source(name))?,
            }
            Ok(0)
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn check(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> Result<i32> {
    let opts = crate::load::load_options();
    let mut code = 0;
    for path in files {
        let label = path.display().to_string();
        let yaml = match std::fs::read_to_string(path) {
            Ok(y) => y,
            Err(e) => {
                writeln!(err, "{label}: cannot read: {e}")?;
                code = 1;
                continue;
            }
        };
        match celgate_engine::load_document(&yaml, &opts) {
            Ok(loaded) => {
                if !check_settings(path, &loaded, err)? {
                    code = 1;
                    continue;
                }
                let preset = loaded
                    .plan
                    .preset
                    .map(|p| format!("preset {}, ", p.as_str()))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{label}: ok ({preset}{} expressions)",
                    loaded.plan.fields().count()
                )?;
            }
            Err(e) => {
                writeln!(err, "{}", e.render(&label))?;
                code = 1;
            }
        }
    }
    Ok(code)
}

/// What `run` would refuse although the file parsed and compiled: addresses, base
/// URLs, key sources and values, exporter endpoint and headers, against this
/// process's environment. Something absent here (an unset variable, a secret file
/// not mounted) is a warning: it may well be there where celgate runs. Returns
/// whether there was no error.
fn check_settings(
    path: &Path,
    loaded: &celgate_engine::Loaded,
    err: &mut dyn Write,
) -> Result<bool> {
    let config_dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let problems = crate::settings::Settings::problems(
        &loaded.file,
        &loaded.plan,
        &crate::settings::process_env,
        config_dir,
    );
    let mut ok = true;
    for problem in &problems {
        // At the backend's entry when the error is about one.
        let mut label = path.display().to_string();
        if let Some(span) = problem_span(problem, &loaded.file) {
            let pos = loaded.document_pos(span);
            label = format!("{label}:{}:{}", pos.line, pos.column);
        }
        if problem.is_environmental() {
            writeln!(
                err,
                "{label}: warning: {problem}; `celgate run` refuses to start unless it is there where it runs"
            )?;
        } else {
            writeln!(err, "{label}: {problem}")?;
            ok = false;
        }
    }
    Ok(ok)
}

/// Where in the file a problem is: the backend's entry, or the `listen`/`admin` value.
fn problem_span(
    problem: &crate::settings::SettingsError,
    file: &celgate_engine::ConfigFile,
) -> Option<celgate_engine::config::Pos> {
    if let Some(name) = problem.backend() {
        let b = file.backends.iter().find(|b| b.value.name == name)?;
        return Some(b.referenced.into());
    }
    let address = match problem.address_key()? {
        "listen" => file.listen.as_ref(),
        _ => file.admin.as_ref(),
    };
    address.map(|a| a.referenced.into())
}

/// The request and response a preview runs on: the given files, or the built-in
/// sample chat exchange.
pub fn sample_exchange(
    request: Option<&Path>,
    response: Option<&Path>,
    provider: &str,
) -> Result<Exchange> {
    const SAMPLE_REQUEST: &str = include_str!("../../tests/fixtures/exchanges/chat_request.json");
    const SAMPLE_RESPONSE: &str = include_str!("../../tests/fixtures/exchanges/chat_response.json");
    let (req, resp) = match request {
        Some(path) => (
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            match response {
                Some(r) => {
                    Some(std::fs::read(r).with_context(|| format!("cannot read {}", r.display()))?)
                }
                None => None,
            },
        ),
        None => (
            SAMPLE_REQUEST.as_bytes().to_vec(),
            Some(SAMPLE_RESPONSE.as_bytes().to_vec()),
        ),
    };
    build_exchange(&req, resp.as_deref(), provider)
}

/// Parse a recorded exchange the way the gateway would see it.
pub fn build_exchange(request: &[u8], response: Option<&[u8]>, provider: &str) -> Result<Exchange> {
    let protocol = protocol::for_operation(operation_of(request))
        .context("no protocol reads this kind of request")?;
    let path = protocol.route();
    let mut ex = Exchange {
        provider: provider.to_owned(),
        request: HttpRequest {
            method: "POST".into(),
            path: path.into(),
            headers: vec![("content-type".into(), "application/json".into())],
        },
        response: HttpResponse {
            status: Some(200),
            duration_ms: None,
            headers: Vec::new(),
        },
        backend_name: Some(provider.to_owned()),
        ..Exchange::default()
    };
    protocol
        .parse_request(request, &mut ex)
        .context("cannot parse the request")?;
    if let Some(body) = response {
        if looks_like_sse(body) {
            let mut acc = SseAccumulator::for_protocol(protocol);
            acc.feed(body);
            if acc.finish(&mut ex).error.is_some() {
                ex.error_type = Some(crate::error_type::ErrorType::StreamError.as_str().into());
            }
        } else {
            protocol
                .parse_response(body, &mut ex)
                .context("cannot parse the response")?;
        }
    }
    Ok(ex)
}

/// Which endpoint a request body was meant for, from its keys.
fn operation_of(body: &[u8]) -> Operation {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return Operation::Chat;
    };
    if map.contains_key("messages") {
        Operation::Chat
    } else if map.contains_key("input") {
        Operation::Embeddings
    } else if map.contains_key("prompt") {
        Operation::TextCompletion
    } else {
        Operation::Chat
    }
}

fn looks_like_sse(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    text.lines()
        .map(str::trim_start)
        .find(|l| !l.is_empty())
        .is_some_and(|l| {
            l.starts_with("data:")
                || l.starts_with("event:")
                || l.starts_with(':')
                || l.starts_with("id:")
        })
}

/// `{"name", "kind", "attributes"}` with JSON types matching the attribute types.
pub fn span_json(span: &SpanRecord) -> serde_json::Value {
    let attributes: serde_json::Map<String, serde_json::Value> = span
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    serde_json::json!({
        "name": span.name,
        "kind": span.kind.as_str(),
        "status": span.status.as_str(),
        "attributes": attributes,
    })
}

fn write_table(span: &SpanRecord, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "span  {}  (kind {}, status {})",
        span.name,
        span.kind.as_str(),
        span.status.as_str()
    )?;
    let width = span
        .attributes
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (k, v) in &span.attributes {
        let ty = match v {
            AttrValue::String(_) => "string",
            AttrValue::Int(_) => "int",
            AttrValue::Double(_) => "double",
            AttrValue::Bool(_) => "bool",
            AttrValue::StringArray(_) => "string[]",
            AttrValue::IntArray(_) => "int[]",
            AttrValue::DoubleArray(_) => "double[]",
            AttrValue::BoolArray(_) => "bool[]",
        };
        let mut shown = v.to_string();
        if shown.len() > 160 {
            celgate_engine::attributes::truncate_str(&mut shown, 157);
            shown.push_str("...");
        }
        writeln!(out, "  {k:<width$}  {ty:<8}  {shown}")?;
    }
    if span.dropped_attributes > 0 {
        writeln!(
            out,
            "  ({} attributes dropped by limits.maxAttributes)",
            span.dropped_attributes
        )?;
    }
    Ok(())
}
