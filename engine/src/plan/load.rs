//! Loading: a config document (a plain config.yaml, or a Kubernetes ConfigMap
//! manifest holding one) to a [`Loaded`] config, with every problem as a
//! positioned diagnostic.
//!
//! Parsing and position-keeping only; what the config means is checked and
//! compiled by the sibling modules ([`super::backends`], [`super::merge`],
//! [`super::compile`]).

use crate::config::{ConfigFile, Pos, PresetName, Tracing};
use crate::diagnostics::{ConfigError, Diagnostic};
use crate::presets;

use super::{LoadOptions, Loaded, TracingPlan, backends};

/// Parse `yaml` (a whole config.yaml, or just its `config:` block) and compile it.
pub fn load(yaml: &str, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let file = parse_yaml::<ConfigFile>(yaml)?;
    backends::check(&file)?;
    let pricing = crate::pricing::Table::load(file.pricing.as_ref())?;
    let plan = TracingPlan::build(file.config.tracing.as_ref(), pricing, opts)?;
    Ok(Loaded {
        file,
        plan,
        offset: Pos::default(),
    })
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

pub(super) fn preset_tracing(name: PresetName) -> Result<Tracing, ConfigError> {
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
