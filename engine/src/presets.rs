//! The built-in presets: `presets/*.yaml`, embedded at build time.
//!
//! A preset is written in the same form as a `config.tracing` block (usually just
//! `fields.add`, sometimes `privacy` defaults), so what an operator sees in
//! `celgate presets show NAME` is exactly what they could paste and edit.

use crate::config::PresetName;

/// The YAML source of a preset.
pub fn source(name: PresetName) -> &'static str {
    match name {
        PresetName::Jaeger => include_str!("../../presets/jaeger.yaml"),
        PresetName::Langfuse => include_str!("../../presets/langfuse.yaml"),
        PresetName::Phoenix => include_str!("../../presets/phoenix.yaml"),
        PresetName::Openllmetry => include_str!("../../presets/openllmetry.yaml"),
        PresetName::OpenllmetryIndexed => include_str!("../../presets/openllmetry-indexed.yaml"),
    }
}

/// The preset's one-line description: its first comment line.
pub fn description(name: PresetName) -> &'static str {
    source(name)
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .unwrap_or("")
}

/// The file name used in diagnostics about a preset.
pub fn file_name(name: PresetName) -> String {
    format!("presets/{}.yaml", name.as_str())
}
