//! W3C trace context in and out: an incoming `traceparent` makes the span its child
//! and is forwarded naming the span; an unsampled parent exports nothing.

#[path = "support/mod.rs"]
mod support;

use support::calls::{post, runtime};
use support::otlp::Receiver;
use support::{Gateway, Parent, SPAN_TIMEOUT, Upstream, chat_body, span_of};

// ---------------------------------------------------------------------------------------
// 3. Trace context
// ---------------------------------------------------------------------------------------

#[test]
fn traceparent_makes_a_child_span_and_is_forwarded_and_unsampled_parents_export_nothing() {
    let upstream = Upstream::start();
    let receiver = Receiver::grpc();
    let config = support::config_yaml("jaeger", &receiver.endpoint(), "grpc", &upstream.base_url())
        .replace(
            "    randomSampling: true\n",
            "    randomSampling: true\n    clientSampling: true\n",
        );
    let gateway = Gateway::start(&config, &[]);
    let rt = runtime();
    let proxy = gateway.base_url();

    // An unsampled parent: the call is served, the upstream still gets a traceparent in
    // the same trace with flags 00, and no span is exported.
    let unsampled = Parent::new();
    let tp = unsampled.traceparent(false);
    let reply = rt.block_on(post(
        &proxy,
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Hi"),
        &[("traceparent", tp.as_str())],
    ));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let forwarded = upstream.requests()[0]
        .header("traceparent")
        .expect("the upstream gets a traceparent")
        .to_owned();
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts.len(), 4, "{forwarded}");
    assert_eq!(parts[0], "00", "{forwarded}");
    assert_eq!(parts[1], unsampled.trace_id, "{forwarded}");
    assert!(
        parts[2].len() == 16 && parts[2] != "0000000000000000" && parts[2] != unsampled.span_id,
        "the upstream's parent is celgate's own span id: {forwarded}"
    );
    assert_eq!(
        parts[3], "00",
        "the unsampled decision is forwarded: {forwarded}"
    );
    // The request is finished (its access-log line is written just before a span would
    // be queued), so a span for it would be queued before the next request's.
    let line = gateway
        .wait_for_stdout(&unsampled.trace_id, SPAN_TIMEOUT)
        .unwrap_or_else(|| panic!("no access-log line\n{}", gateway.stdout()));
    assert!(line.contains("trace.sampled=false"), "{line}");

    // A sampled parent: the span is its child, and the upstream's parent is that span.
    let sampled = Parent::new();
    let tp = sampled.traceparent(true);
    let reply = rt.block_on(post(
        &proxy,
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Hi again"),
        &[("traceparent", tp.as_str())],
    ));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let span = span_of(&receiver, &sampled.trace_id, "the sampled call", &gateway);
    assert_eq!(span.parent_span_id, sampled.span_id);
    assert_ne!(span.span_id, sampled.span_id);
    // OTLP span flags: sampled, and the parent is known to be remote (bits 8 and 9).
    assert_eq!(span.flags & 0x301, 0x301, "flags {:#x}", span.flags);
    // Exports are FIFO: the unsampled call's span would have come first.
    let all = receiver.spans();
    assert_eq!(
        all.len(),
        1,
        "only the sampled call is exported: {:?}",
        all.iter().map(|s| &s.trace_id).collect::<Vec<_>>()
    );
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].header("traceparent"),
        Some(format!("00-{}-{}-01", sampled.trace_id, span.span_id).as_str())
    );

    // Without a traceparent: a new root, and the upstream gets it as parent.
    let reply = rt.block_on(post(
        &proxy,
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Root"),
        &[],
    ));
    assert_eq!(reply.status, 200);
    let spans = receiver.wait_for(2, SPAN_TIMEOUT);
    assert_eq!(spans.len(), 2);
    let root = &spans[1];
    assert_eq!(root.parent_span_id, "");
    assert_eq!(
        upstream.requests()[2].header("traceparent"),
        Some(format!("00-{}-{}-01", root.trace_id, root.span_id).as_str())
    );
}

/// Langfuse takes a trace's input and output from its root span: under a client's
/// `traceparent`, the langfuse preset names them on celgate's (child) span; without
/// one, celgate's span is the root and leaves them to the observation's.
#[test]
fn langfuse_names_the_trace_input_and_output_only_under_a_clients_traceparent() {
    let upstream = Upstream::start();
    let receiver = Receiver::http();
    let config = support::config_yaml(
        "langfuse",
        &receiver.endpoint(),
        "http",
        &upstream.base_url(),
    );
    let gateway = Gateway::start(&config, &[]);
    let rt = runtime();
    let proxy = gateway.base_url();
    let parent = Parent::new();
    let tp = parent.traceparent(true);
    let reply = rt.block_on(post(
        &proxy,
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Hi under a parent"),
        &[("traceparent", tp.as_str())],
    ));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let child = span_of(&receiver, &parent.trace_id, "the child call", &gateway);
    let input = child.str_attr("langfuse.trace.input").expect("trace input");
    assert!(input.contains("Hi under a parent"), "{input}");
    let output = child
        .str_attr("langfuse.trace.output")
        .expect("trace output");
    assert!(output.contains("\"role\":\"assistant\""), "{output}");
    assert_eq!(
        child.str_attr("langfuse.trace.name"),
        Some("chat gpt-4o-mini")
    );

    let reply = rt.block_on(post(
        &proxy,
        "/chat/completions",
        &chat_body("gpt-4o-mini", "Hi as the root"),
        &[],
    ));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let deadline = std::time::Instant::now() + SPAN_TIMEOUT;
    let root = loop {
        let spans = receiver.spans();
        if let Some(s) = spans.iter().find(|s| s.parent_span_id.is_empty()) {
            break s.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no root span\n{}",
            gateway.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(root.str_attr("langfuse.observation.input").is_some());
    assert!(
        root.attributes
            .keys()
            .all(|k| !k.starts_with("langfuse.trace.")),
        "{root:?}"
    );
}
