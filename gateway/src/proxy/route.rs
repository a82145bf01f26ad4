//! Route: the backend a call goes to, and the model it may run there.
//!
//! A request may go only to a backend that speaks its API: a protocol's call (or
//! side route) to a backend whose `provider` the protocol [serves](Protocol::serves)
//! (a Messages call to an `anthropic` backend, never with another provider's key);
//! a path no protocol knows to a backend whose `passthrough` list takes it. Among
//! those, the first whose `models` serve the routing model takes the call; a
//! request that names no model (a side route, a pass-through path) goes to the
//! first. No such backend: the protocol's own 404. The model the backend then runs
//! must be one it allows (the model allow-list): a body model it does not serve is
//! refused, so the `x-ai-eg-model` header cannot launder it. Once chosen, the
//! backend's facts go into the exchange for the span.

use celgate_engine::exchange::{Exchange, Operation};
use http::StatusCode;

use super::failure::Failure;
use crate::error_type::ErrorType;
use crate::protocol::Protocol;
use crate::settings::Backend;
use crate::state::Generation;

/// Where a call goes.
#[derive(Debug)]
pub struct Route<'g> {
    pub backend: &'g Backend,
    /// The model to write into the body before it goes (`None`: as sent).
    pub send_model: Option<String>,
}

/// The route for `model` (the one that routes: header, else body); on success the
/// exchange names the backend, and the model asked for when the body named none.
pub fn choose<'g>(
    generation: &'g Generation,
    owner: Option<&dyn Protocol>,
    path: &str,
    model: Option<&str>,
    exchange: &mut Exchange,
) -> Result<Route<'g>, Failure> {
    let operation = exchange.operation;
    let backend = backend_for(generation, Eligible { owner, path }, model, operation)?;
    // The header chose the backend; the body's model is what it would run.
    let send_model = upstream_model(backend, exchange, model).map_err(|message| {
        Failure::refused(StatusCode::BAD_REQUEST, ErrorType::ModelNotAllowed, message)
    })?;
    if exchange.request_model.is_none() && operation != Operation::Other {
        // The body named none: the header's is the model asked for.
        exchange.request_model = model.map(str::to_owned);
    }
    exchange.provider = backend.provider.clone();
    exchange.backend_name = Some(backend.name.clone());
    exchange.backend_host = Some(backend.host.clone());
    exchange.backend_port = Some(backend.port);
    Ok(Route {
        backend,
        send_model,
    })
}

/// Which backends may take a request: those speaking `owner`'s API, or for a
/// request no protocol knows, those whose `passthrough` takes `path`.
#[derive(Clone, Copy)]
struct Eligible<'a> {
    owner: Option<&'a dyn Protocol>,
    path: &'a str,
}

impl Eligible<'_> {
    fn admits(&self, backend: &Backend) -> bool {
        match self.owner {
            Some(p) => p.serves(&backend.provider),
            None => backend.passes_through(self.path),
        }
    }

    /// Why no backend may take the request.
    fn none(&self) -> Failure {
        let message = match self.owner {
            Some(p) => format!(
                "no backend speaks the API of {}: add a backend whose `provider` serves it (see the README's routes)",
                p.route()
            ),
            None => "celgate does not forward this path: add a prefix of it to a backend's `passthrough` list".to_owned(),
        };
        Failure::refused(StatusCode::NOT_FOUND, ErrorType::RouteNotFound, message)
    }
}

/// The backend for `model`: the first eligible one that serves it. Calls that name
/// no model (side routes, pass-through paths) go to the first eligible backend.
fn backend_for<'g>(
    generation: &'g Generation,
    eligible: Eligible<'_>,
    model: Option<&str>,
    operation: Operation,
) -> Result<&'g Backend, Failure> {
    let settings = &generation.settings;
    if settings.backends.is_empty() {
        return Err(Failure::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::NoBackends,
            "the gateway has no backends configured (add one under `backends:` in config.yaml)"
                .into(),
        ));
    }
    let mut backends = settings.backends.iter().filter(|b| eligible.admits(b));
    let Some(first) = backends.clone().next() else {
        return Err(eligible.none());
    };
    match model {
        Some(m) => backends.find(|b| b.serves(m)).ok_or_else(|| {
            Failure::refused(
                StatusCode::NOT_FOUND,
                ErrorType::ModelNotFound,
                format!(
                    "no backend that speaks this API serves model `{m}`; check the `models` lists under `backends:`"
                ),
            )
        }),
        None if operation == Operation::Other => Ok(first),
        None => Err(Failure::refused(
            StatusCode::BAD_REQUEST,
            ErrorType::ModelRequired,
            "the request names no model: set `model` in the body or the x-ai-eg-model header"
                .into(),
        )),
    }
}

/// The model to write into an LLM call's body before it goes to `backend`, or why the
/// call may not go there. `routed` is the model that chose the backend (the
/// `x-ai-eg-model` header when set, else the body's). The model a backend runs must
/// be one its `models` allow: a body model it does not serve is refused (the header
/// cannot launder it); a body without a model gets the routed one, so the backend
/// never falls back to a default of its own. `rewriteModel` wins over both: that
/// name is the operator's choice.
fn upstream_model(
    backend: &Backend,
    exchange: &Exchange,
    routed: Option<&str>,
) -> Result<Option<String>, String> {
    if exchange.operation == Operation::Other {
        return Ok(None);
    }
    if let Some(to) = &backend.rewrite_model {
        return Ok(Some(to.clone()));
    }
    match (exchange.request_model.as_deref(), routed) {
        (Some(body), _) if backend.serves(body) => Ok(None),
        (Some(body), routed) => Err(format!(
            "model `{}` in the body is not served by the backend that x-ai-eg-model `{}` routes to; name the same model in both, or leave `model` out of the body",
            shorten(body),
            shorten(routed.unwrap_or_default())
        )),
        (None, routed) => Ok(routed.map(str::to_owned)),
    }
}

/// A client-chosen name, cut to a length fit for an error message.
fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `/v1/models`: every model the backends list, each once, as OpenAI lists them.
pub fn models(generation: &Generation) -> serde_json::Value {
    let mut seen = std::collections::BTreeSet::new();
    let data: Vec<serde_json::Value> = generation
        .settings
        .backends
        .iter()
        .flat_map(|b| b.listed_models().map(move |m| (m, b)))
        .filter(|(m, _)| seen.insert(m.to_string()))
        .map(|(m, b)| {
            serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": b.provider})
        })
        .collect();
    serde_json::json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openai::chat::CHAT;
    use crate::proxy::tests::generation;

    const TWO: &str = "backends:\n  - {name: a, baseUrl: 'http://a.test/v1', models: [m1]}\n  - {name: b, baseUrl: 'http://b.test:81/v1', models: [m2, m3], rewriteModel: m3}\n";

    fn exchange(operation: Operation, model: Option<&str>) -> Exchange {
        Exchange {
            operation,
            request_model: model.map(str::to_owned),
            ..Exchange::default()
        }
    }

    /// A chat call's route.
    fn chat<'g>(
        g: &'g Generation,
        model: Option<&str>,
        ex: &mut Exchange,
    ) -> Result<Route<'g>, Failure> {
        choose(g, Some(&CHAT), "/v1/chat/completions", model, ex)
    }

    fn refused(r: Result<Route<'_>, Failure>) -> ErrorType {
        r.map(|r| r.backend.name.clone()).unwrap_err().error_type
    }

    #[test]
    fn the_first_backend_serving_the_model_takes_the_call() {
        let g = generation(TWO);
        let mut ex = exchange(Operation::Chat, Some("m2"));
        let route = chat(&g, Some("m2"), &mut ex).unwrap();
        assert_eq!(route.backend.name, "b");
        assert_eq!(route.send_model.as_deref(), Some("m3"), "rewriteModel wins");
        assert_eq!(ex.backend_name.as_deref(), Some("b"));
        assert_eq!(
            (ex.backend_host.as_deref(), ex.backend_port),
            (Some("b.test"), Some(81))
        );
    }

    #[test]
    fn paths_no_protocol_knows_go_only_where_a_passthrough_list_takes_them() {
        let g = generation(
            "backends:\n  - {name: a, baseUrl: 'http://a.test/v1'}\n  - {name: b, baseUrl: 'http://b.test/v1', passthrough: [/v1/files, /v1/audio/]}\n",
        );
        let pass = |path: &str| {
            let mut ex = exchange(Operation::Other, None);
            choose(&g, None, path, None, &mut ex).map(|r| r.backend.name.clone())
        };
        assert_eq!(pass("/v1/files").unwrap(), "b");
        assert_eq!(pass("/v1/files/f-1/content").unwrap(), "b");
        assert_eq!(pass("/v1/audio/speech").unwrap(), "b");
        for path in ["/v1/filesystem", "/v1/batches", "/", "/v1/file"] {
            let failure = pass(path).unwrap_err();
            assert_eq!(failure.error_type, ErrorType::RouteNotFound, "{path}");
            assert_eq!(failure.status, StatusCode::NOT_FOUND);
        }
    }

    #[test]
    fn models_outside_the_allow_list_are_refused_and_leave_the_exchange_alone() {
        let g = generation(TWO);
        let mut ex = exchange(Operation::Chat, Some("m2"));
        assert_eq!(
            refused(chat(&g, Some("m1"), &mut ex)),
            ErrorType::ModelNotAllowed
        );
        assert_eq!(ex.backend_name, None);
        let mut ex = exchange(Operation::Chat, None);
        assert_eq!(
            refused(chat(&g, Some("nope"), &mut ex)),
            ErrorType::ModelNotFound
        );
        assert_eq!(refused(chat(&g, None, &mut ex)), ErrorType::ModelRequired);
        // A body without a model gets the header's, sent and traced.
        let route = chat(&g, Some("m1"), &mut ex).unwrap();
        assert_eq!(route.send_model.as_deref(), Some("m1"));
        assert_eq!(ex.request_model.as_deref(), Some("m1"));
        let none = generation("backends: []\n");
        assert_eq!(
            refused(chat(&none, Some("m1"), &mut ex)),
            ErrorType::NoBackends
        );
    }

    #[test]
    fn models_lists_each_model_once() {
        let g = generation(TWO);
        let ids: Vec<String> = models(&g)["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["m1", "m2", "m3"]);
    }
}
