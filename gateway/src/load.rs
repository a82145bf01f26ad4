//! Turning the config file on disk into a [`Generation`]: read, parse, compile,
//! resolve, and the hash that tells a real change from a touch.
//!
//! Every command that loads a config comes here: `celgate run` for its first
//! generation, the reload task for each next one, `celgate check` and the demo for
//! the same privacy switches. The hash covers the config's bytes and every secret
//! file it references (backend keys, client keys), so a rotated key is a change too;
//! [`key_files`] names those files for the reload watcher. This module sits below the
//! server, the reload task and the CLI, so none of them needs another.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use celgate_engine::{LoadOptions, load_document};

use crate::settings::{Settings, process_env};
use crate::state::{Generation, Needs};

/// Why a config file could not become a generation; rendered for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Already rendered as `FILE:LINE:COL: message` lines.
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Settings {
        path: PathBuf,
        source: crate::settings::SettingsError,
    },
}

/// Privacy switches from the process environment (OpenInference's
/// `OPENINFERENCE_HIDE_INPUTS` / `_OUTPUTS`, OTel's
/// `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`), as the engine's load options.
pub fn load_options() -> LoadOptions {
    LoadOptions {
        hide_inputs: env_bool("OPENINFERENCE_HIDE_INPUTS"),
        hide_outputs: env_bool("OPENINFERENCE_HIDE_OUTPUTS"),
        capture_message_content: std::env::var(CAPTURE_MESSAGE_CONTENT)
            .ok()
            .and_then(|v| capture_content(&v)),
    }
}

/// OTel's GenAI content switch.
pub const CAPTURE_MESSAGE_CONTENT: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

/// What OTel's content switch says about span content. Its values (any case):
/// `true`, `SPAN_ONLY`, `SPAN_AND_EVENT` put content on spans; `false`,
/// `NO_CONTENT` and `EVENT_ONLY` (content only in events, which celgate does not
/// emit) keep it off; anything else says nothing.
pub fn capture_content(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "span_only" | "span_and_event" => Some(true),
        "false" | "no_content" | "event_only" => Some(false),
        _ => None,
    }
}

fn env_bool(name: &str) -> Option<bool> {
    let v = std::env::var(name).ok()?;
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Reads, parses, compiles and resolves the config at `path` into generation
/// `number`.
pub fn load_generation(path: &Path, number: u64) -> Result<Generation, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config_dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let loaded = load_document(&text, &load_options())
        .map_err(|e| LoadError::Config(e.render(&path.display().to_string())))?;
    // Hashed before they are read: a file swapped in between makes the next check
    // load again, instead of this generation's hash hiding keys it never read (a
    // removed client key that stays accepted).
    let secret_files = crate::settings::secret_files(&loaded.file, config_dir, &process_env);
    let source_hash = combined_hash(text.as_bytes(), &secret_files);
    let settings = Settings::resolve(&loaded.file, &loaded.plan, &process_env, config_dir)
        .map_err(|source| LoadError::Settings {
            path: path.to_owned(),
            source,
        })?;
    Ok(Generation {
        number,
        needs: Needs::of(&loaded.plan),
        plan: loaded.plan,
        settings,
        source: loaded.file,
        source_hash,
        loaded_at: SystemTime::now(),
    })
}

/// The secret files a generation read: backends' key files, the client keys
/// file and the collector TLS files, in the order of [`crate::settings::secret_files`]. A change to any of
/// them is a new generation.
pub fn key_files(settings: &Settings) -> Vec<PathBuf> {
    settings
        .backends
        .iter()
        .filter_map(|b| b.key_file.clone())
        .chain(settings.client_keys.as_ref().map(|k| k.path().to_owned()))
        .chain(settings.tls_files.iter().cloned())
        .collect()
}

/// Hash of the config's bytes and of the secret files it references, so a
/// rotated key is a change too. Unreadable secret files hash as empty (the load
/// that follows reports them properly).
pub fn source_hash(config: &Path, key_files: &[PathBuf]) -> Result<u64, LoadError> {
    let text = std::fs::read(config).map_err(|source| LoadError::Read {
        path: config.to_owned(),
        source,
    })?;
    Ok(combined_hash(&text, key_files))
}

fn combined_hash(config: &[u8], key_files: &[PathBuf]) -> u64 {
    let mut h = hash(config);
    for f in key_files {
        let bytes = std::fs::read(f).unwrap_or_default();
        h = hash(&[h.to_le_bytes().as_slice(), &bytes].concat());
    }
    h
}

/// FNV-1a: a stable hash of the config's bytes, to tell a real change from a
/// touch.
pub fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_every_secret_file_the_generation_reads() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            "auth: {clientKeys: {file: keys/clients.yaml}}\nbackends:\n  - {name: a, baseUrl: 'http://a', apiKey: {file: key}}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("key"), "sk-a\n").unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        let clients = dir.path().join("keys/clients.yaml");
        std::fs::write(&clients, "clients: []\n").unwrap();
        let g = load_generation(&config, 1).unwrap();
        let files = key_files(&g.settings);
        assert_eq!(files, [dir.path().join("key"), clients.clone()]);
        assert_eq!(g.source_hash, source_hash(&config, &files).unwrap());
        std::fs::write(&clients, "clients: [] # changed\n").unwrap();
        assert_ne!(g.source_hash, source_hash(&config, &files).unwrap());
    }

    #[test]
    fn otel_content_switch_values() {
        for on in ["true", "TRUE", "SPAN_ONLY", "span_and_event", " Span_Only "] {
            assert_eq!(capture_content(on), Some(true), "{on}");
        }
        for off in ["false", "NO_CONTENT", "EVENT_ONLY", "event_only"] {
            assert_eq!(capture_content(off), Some(false), "{off}");
        }
        for nothing in ["", "1", "yes", "spans"] {
            assert_eq!(capture_content(nothing), None, "{nothing}");
        }
    }
}
