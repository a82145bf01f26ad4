//! Merging a preset and the user's config into the effective one.
//!
//! A preset is a config of its own (`presets/*.yaml`); the user's config refines
//! it: its fields replace the preset's of the same key in place, new ones
//! follow, removals add up, and a privacy switch set by the user (or the
//! environment) wins over the preset's. Nothing is compiled here: the result is
//! the list of expressions [`super::compile`] compiles, each with where it came
//! from, so a diagnostic can say "in preset phoenix.yaml".

use crate::config::{Field, PresetName, Privacy, Tracing};
use crate::context::Visibility;

use super::{LoadOptions, Origin};

/// One expression of the effective config, and where it came from.
pub(super) struct Source<'a> {
    pub field: &'a Field,
    pub origin: Origin,
}

/// The effective config's expressions and switches.
pub(super) struct Merged<'a> {
    /// Attribute fields: preset fields in preset order, user keys replacing them
    /// in place, new user keys after.
    pub fields: Vec<Source<'a>>,
    /// Resource attributes: the preset's, then the user's.
    pub resources: Vec<Source<'a>>,
    /// Attribute names (or `prefix.*`) to drop: the preset's and the user's.
    pub remove: Vec<String>,
    pub visibility: Visibility,
}

/// Merge `user` over `preset` (its name and its parsed config), with the
/// environment's privacy switches in `opts`.
pub(super) fn merge<'a>(
    user: &'a Tracing,
    preset: Option<&'a (PresetName, Tracing)>,
    opts: &LoadOptions,
) -> Merged<'a> {
    let mut remove: Vec<String> = preset
        .map(|(_, p)| p.fields.remove.clone())
        .unwrap_or_default();
    remove.extend(user.fields.remove.iter().cloned());
    Merged {
        fields: fields(user, preset),
        resources: resources(user, preset),
        remove,
        visibility: visibility(
            &user.privacy,
            opts,
            preset.map(|(n, p)| preset_privacy(*n, p, opts)),
        ),
    }
}

/// The preset's privacy default; OTel's content switch replaces the GenAI
/// conventions preset's (content off unless asked for, as the conventions say).
fn preset_privacy(name: PresetName, preset: &Tracing, opts: &LoadOptions) -> Privacy {
    match (name, opts.capture_message_content) {
        (PresetName::Jaeger, Some(capture)) => Privacy {
            hide_inputs: Some(!capture),
            hide_outputs: Some(!capture),
        },
        _ => preset.privacy,
    }
}

fn fields<'a>(user: &'a Tracing, preset: Option<&'a (PresetName, Tracing)>) -> Vec<Source<'a>> {
    let mut merged: Vec<Source> = Vec::new();
    if let Some((name, p)) = preset {
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
    merged
}

fn resources<'a>(user: &'a Tracing, preset: Option<&'a (PresetName, Tracing)>) -> Vec<Source<'a>> {
    let mut resources: Vec<Source> = Vec::new();
    if let Some((name, p)) = preset {
        resources.extend(p.resources.iter().map(|field| Source {
            field,
            origin: Origin::Preset(*name),
        }));
    }
    resources.extend(user.resources.iter().map(|field| Source {
        field,
        origin: Origin::User,
    }));
    resources
}

/// The privacy switches in effect: hidden when the config or the environment
/// hides; the preset's choice counts only when neither says anything.
fn visibility(user: &Privacy, opts: &LoadOptions, preset: Option<Privacy>) -> Visibility {
    let preset = preset.unwrap_or_default();
    Visibility {
        hide_inputs: hidden(user.hide_inputs, opts.hide_inputs, preset.hide_inputs),
        hide_outputs: hidden(user.hide_outputs, opts.hide_outputs, preset.hide_outputs),
    }
}

fn hidden(config: Option<bool>, env: Option<bool>, preset: Option<bool>) -> bool {
    config == Some(true)
        || env == Some(true)
        || (config.is_none() && env.is_none() && preset == Some(true))
}

#[cfg(test)]
mod tests {
    use crate::context::Visibility;
    use crate::{LoadOptions, load};

    fn vis(preset: &str, privacy: &str, opts: LoadOptions) -> Visibility {
        let yaml = format!("config:\n  tracing:\n    preset: {preset}\n{privacy}");
        load(&yaml, &opts).unwrap().plan.visibility()
    }

    const SHOWN: Visibility = Visibility {
        hide_inputs: false,
        hide_outputs: false,
    };
    const HIDDEN: Visibility = Visibility {
        hide_inputs: true,
        hide_outputs: true,
    };

    #[test]
    fn otel_content_switch_replaces_the_jaeger_default_only() {
        let capture = |c| LoadOptions {
            capture_message_content: Some(c),
            ..LoadOptions::default()
        };
        assert_eq!(vis("jaeger", "", LoadOptions::default()), HIDDEN);
        assert_eq!(vis("jaeger", "", capture(true)), SHOWN);
        assert_eq!(vis("jaeger", "", capture(false)), HIDDEN);
        // Other presets show content by default and ignore OTel's switch.
        assert_eq!(vis("phoenix", "", capture(false)), SHOWN);
        // The config and OpenInference's variables still decide first.
        let config_hides = "    privacy: {hideInputs: true}\n";
        let v = vis("jaeger", config_hides, capture(true));
        assert!(v.hide_inputs && !v.hide_outputs, "{v:?}");
        let env_hides = LoadOptions {
            hide_outputs: Some(true),
            ..capture(true)
        };
        let v = vis("jaeger", "", env_hides);
        assert!(!v.hide_inputs && v.hide_outputs, "{v:?}");
    }
}
