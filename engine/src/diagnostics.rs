//! Errors in a config, written for the operator who has to fix them.
//!
//! Every diagnostic carries the YAML position it is about (the line of the
//! offending key) and, for expression errors, the expression with a caret under
//! the bad position, so `celgate check` can print `FILE:LINE:COL: message`.

use std::fmt;

use crate::config::Pos;

/// An expression and the place in it an error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snippet {
    pub expr: String,
    /// 1-based line and column within the expression.
    pub line: usize,
    pub column: usize,
}

/// One problem in a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    pub message: String,
    pub snippet: Option<Snippet>,
}

impl Diagnostic {
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            pos,
            message: message.into(),
            snippet: None,
        }
    }

    /// `FILE:LINE:COL: message`, then the expression with a caret, if any.
    pub fn render(&self, file: &str) -> String {
        let mut out = format!(
            "{file}:{}:{}: {}",
            self.pos.line, self.pos.column, self.message
        );
        if let Some(s) = &self.snippet {
            let line = s.expr.lines().nth(s.line.saturating_sub(1)).unwrap_or("");
            let pad: String = line
                .chars()
                .take(s.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("\n    {line}\n    {pad}^"));
        }
        out
    }
}

/// A config that cannot be used, with every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    pub fn single(d: Diagnostic) -> Self {
        ConfigError {
            diagnostics: vec![d],
        }
    }

    /// All diagnostics, one block each, prefixed with `file`.
    pub fn render(&self, file: &str) -> String {
        self.diagnostics
            .iter()
            .map(|d| d.render(file))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("config.yaml"))
    }
}
