//! The functions celgate adds to standard CEL: `flatten`, `flattenRecursive`
//! (alias `flatten_recursive`), `toJson` (alias `to_json`), `parseJson` (alias
//! `parse_json`), `compact` and `default`.
//!
//! `flatten*` return a [`Flattened`] value: a list of (key suffix, attribute) pairs
//! that the attribute stage expands into one attribute per entry under the field's
//! key. `default(x, fallback)` is a macro, because CEL evaluates function arguments
//! before the call: as a function it could never see that `x` was absent.

use cel::common::ast::{CallExpr, Expr, operators};
use cel::common::types::{CelBool, CelList, CelMap, CelNull, CelString, DYN_TYPE, Type};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::parser::Macro;
use cel::{DeclarationError, Env, ExecutionError};
use std::any::Any;

use crate::attributes::{self, AttrValue, MAX_VALUE_DEPTH};

/// Internal helper the `default` macro expands to; not for users.
const IS_NULL: &str = "__celgate_is_null";

/// Every function name celgate adds, for validation and documentation.
pub const FUNCTIONS: &[&str] = &[
    "flatten",
    "flattenRecursive",
    "flatten_recursive",
    "toJson",
    "to_json",
    "parseJson",
    "parse_json",
    "compact",
    "default",
];

/// The result of `flatten(x)` / `flattenRecursive(x)`: attributes keyed by the
/// suffix that follows the field's own key (`0.message.role`). An empty suffix
/// names the field's key itself (flattening a scalar).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flattened {
    pub entries: Vec<(String, AttrValue)>,
}

impl Val for Flattened {
    fn get_type(&self) -> &Type {
        &DYN_TYPE
    }

    fn cel_type() -> &'static Type {
        &DYN_TYPE
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

impl StaticVal for Flattened {}

/// Add celgate's functions and the `default` macro to `env`.
pub fn install(env: &mut Env) -> Result<(), DeclarationError> {
    let dyn_arg = || vec![DYN_TYPE];
    env.add_overload("flatten", "celgate_flatten", dyn_arg(), flatten)?;
    env.add_overload(
        "flattenRecursive",
        "celgate_flatten_recursive",
        dyn_arg(),
        flatten_recursive,
    )?;
    env.add_overload(
        "flatten_recursive",
        "celgate_flatten_recursive_alias",
        dyn_arg(),
        flatten_recursive,
    )?;
    env.add_overload("toJson", "celgate_to_json", dyn_arg(), to_json)?;
    env.add_overload("to_json", "celgate_to_json_alias", dyn_arg(), to_json)?;
    env.add_overload("parseJson", "celgate_parse_json", dyn_arg(), parse_json)?;
    env.add_overload(
        "parse_json",
        "celgate_parse_json_alias",
        dyn_arg(),
        parse_json,
    )?;
    env.add_overload("compact", "celgate_compact", dyn_arg(), compact)?;
    env.add_overload(IS_NULL, "celgate_is_null", dyn_arg(), is_null)?;
    // default(x, fallback) => @not_strictly_false(__celgate_is_null(x)) ? fallback : x
    // `@not_strictly_false` turns an error in evaluating `x` (absent key, missing
    // index) into `true`, so an absent x and a null x both pick the fallback.
    env.add_macro(Macro::global("default", 2, |helper, _target, args| {
        let fallback = args.pop().expect("macro arity is 2");
        let x = args.pop().expect("macro arity is 2");
        let is_null = helper.next_expr(Expr::Call(CallExpr {
            func_name: IS_NULL.to_owned(),
            target: None,
            args: vec![x.clone()],
        }));
        let absent = helper.next_expr(Expr::Call(CallExpr {
            func_name: operators::NOT_STRICTLY_FALSE.to_owned(),
            target: None,
            args: vec![is_null],
        }));
        Ok(Some(helper.next_expr(Expr::Call(CallExpr {
            func_name: operators::CONDITIONAL.to_owned(),
            target: None,
            args: vec![absent, fallback, x],
        }))))
    }))?;
    Ok(())
}

fn single_arg<'b, 'v>(
    name: &str,
    mut args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    if args.len() != 1 {
        return Err(ExecutionError::function_error(
            name,
            format!("takes exactly one argument, got {}", args.len()),
        ));
    }
    Ok(args.remove(0))
}

fn flatten<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = single_arg("flatten", args)?;
    let mut out = Flattened::default();
    flatten_into(value.as_ref(), String::new(), 0, 1, &mut out.entries);
    Ok(CowVal::owned(out))
}

fn flatten_recursive<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = single_arg("flattenRecursive", args)?;
    let mut out = Flattened::default();
    flatten_into(
        value.as_ref(),
        String::new(),
        0,
        MAX_VALUE_DEPTH,
        &mut out.entries,
    );
    Ok(CowVal::owned(out))
}

fn to_json<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = single_arg("toJson", args)?;
    let json = attributes::to_json(value.as_ref()).to_string();
    Ok(CowVal::owned(CelString::from(json)))
}

/// `parseJson(x)`: the value JSON text `x` holds (a tool call's `arguments` as the
/// object the conventions want); `x` itself when it is not a string or not valid
/// JSON. Numbers, depth and keys as for any JSON the context holds
/// ([`crate::value::json`]), so the native evaluator agrees.
fn parse_json<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = single_arg("parseJson", args)?;
    let parsed = value
        .downcast_ref::<CelString>()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s.inner()).ok());
    Ok(match parsed {
        Some(json) => CowVal::Owned(crate::value::json_to_cel(&json, 0)),
        None => value,
    })
}

/// `compact(x)`: map `x` without its null entries (a message without
/// `"tool_call_id": null`); anything else unchanged.
fn compact<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = single_arg("compact", args)?;
    let Some(map) = value.downcast_ref::<CelMap>() else {
        return Ok(value);
    };
    let kept: std::collections::HashMap<_, _> = map
        .inner()
        .iter()
        .filter(|(_, v)| v.downcast_ref::<CelNull>().is_none())
        .map(|(k, v)| (k.clone(), v.clone_as_boxed()))
        .collect();
    Ok(CowVal::owned(CelMap::from(kept)))
}

fn is_null<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = single_arg(IS_NULL, args)?;
    let null = value.downcast_ref::<CelNull>().is_some();
    Ok(CowVal::owned(CelBool::from(null)))
}

fn join(prefix: &str, segment: &str) -> String {
    if prefix.is_empty() {
        segment.to_owned()
    } else {
        format!("{prefix}.{segment}")
    }
}

/// Expand `value` into `out` under `prefix`, descending `levels` levels of maps and
/// lists. What is left below the last level is rendered by the attribute rules
/// (scalar, homogeneous array or JSON string). Map entries come in key order so
/// output is stable.
fn flatten_into(
    value: &dyn Val,
    prefix: String,
    depth: usize,
    levels: usize,
    out: &mut Vec<(String, AttrValue)>,
) {
    if depth < levels {
        if let Some(list) = value.downcast_ref::<CelList>() {
            for (i, item) in list.inner().iter().enumerate() {
                flatten_into(
                    item.as_ref(),
                    join(&prefix, &i.to_string()),
                    depth + 1,
                    levels,
                    out,
                );
            }
            return;
        }
        if let Some(map) = value.downcast_ref::<CelMap>() {
            let mut entries: Vec<_> = map
                .inner()
                .iter()
                .map(|(k, v)| (attributes::key_string(k), v))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in entries {
                flatten_into(v.as_ref(), join(&prefix, &k), depth + 1, levels, out);
            }
            return;
        }
        if let Some(flat) = value.downcast_ref::<Flattened>() {
            for (k, v) in &flat.entries {
                out.push((join(&prefix, k), v.clone()));
            }
            return;
        }
    }
    // A leaf: the attribute rules apply, with the prefix as its key.
    let mut leaf = Vec::with_capacity(1);
    attributes::push_value("", value, &mut leaf);
    for (k, v) in leaf {
        let key = match (prefix.is_empty(), k.is_empty()) {
            (_, true) => prefix.clone(),
            (true, false) => k.trim_start_matches('.').to_owned(),
            (false, false) => format!("{prefix}{k}"),
        };
        out.push((key, v));
    }
}
