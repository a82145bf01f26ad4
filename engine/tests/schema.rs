//! The checked-in schema and context reference stay in sync with the code.
//! Regenerate the schema with `UPDATE_SCHEMA=1 cargo test -p celgate-engine --test schema`.

use celgate_engine::{config, context, functions};
use std::path::Path;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn config_schema_is_up_to_date() {
    let generated = config::json_schema();
    let path = repo("schema/config.schema.json");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "schema/config.schema.json is stale: run UPDATE_SCHEMA=1 cargo test -p celgate-engine --test schema"
    );
}

#[test]
fn schema_describes_the_tracing_block() {
    let schema: serde_json::Value = serde_json::from_str(&config::json_schema()).unwrap();
    let tracing = &schema["$defs"]["Tracing"]["properties"];
    for key in [
        "preset",
        "otlpEndpoint",
        "otlpProtocol",
        "headers",
        "randomSampling",
        "clientSampling",
        "resources",
        "fields",
        "limits",
        "privacy",
    ] {
        assert!(
            tracing.get(key).is_some(),
            "schema lacks tracing.{key}: {tracing}"
        );
    }
    assert_eq!(schema["$defs"]["Tracing"]["additionalProperties"], false);
}

#[test]
fn cel_context_reference_lists_every_variable_and_function() {
    let doc = std::fs::read_to_string(repo("schema/cel-context.md")).unwrap();
    for v in context::VARIABLES {
        assert!(
            doc.contains(&format!("`{}`", v.name)),
            "cel-context.md lacks `{}`",
            v.name
        );
        if let Some(alias) = v.alias {
            assert!(
                doc.contains(&format!("`{alias}`")),
                "cel-context.md lacks `{alias}`"
            );
        }
    }
    for f in functions::FUNCTIONS {
        assert!(
            doc.contains(&format!("`{f}(")),
            "cel-context.md lacks `{f}(`"
        );
    }
}
