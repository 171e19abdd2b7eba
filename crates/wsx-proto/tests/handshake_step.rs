//! The opening handshake as one step, both roles: `ServerPolicy::accept` and `ClientOffer`.

use http::{HeaderMap, Request, Response};
use wsx_proto::deflate::DeflateConfig;
use wsx_proto::handshake::{parse_request, ClientOffer, ServerPolicy};
use wsx_proto::{Config, HandshakeError};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn request(extra: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::get("/")
        .header("Host", "example.com")
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", KEY);
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

fn deflate() -> Config {
    Config::default().deflate(Some(DeflateConfig::default()))
}

#[test]
fn server_selects_protocols_in_its_own_order_or_by_chooser() {
    let offered = [("Sec-WebSocket-Protocol", "a, b")];
    let check = |policy: ServerPolicy, expected: Result<Option<&str>, HandshakeError>| {
        let got = policy.accept(&request(&offered)).map(|a| a.protocol);
        assert_eq!(got, expected.map(|p| p.map(str::to_owned)));
    };
    check(ServerPolicy::new(Config::default()), Ok(None));
    check(ServerPolicy::new(Config::default()).protocols(["b", "a"]), Ok(Some("b")));
    check(ServerPolicy::new(Config::default()).protocols(["c"]), Ok(None));
    check(
        ServerPolicy::new(Config::default()).select_protocol(|o| o.last().map(|p| p.to_string())),
        Ok(Some("b")),
    );
    check(
        ServerPolicy::new(Config::default()).select_protocol(|_| Some("z".into())),
        Err(HandshakeError::UnofferedProtocol("z".into())),
    );
}

#[test]
fn server_origin_policy() {
    let policy = ServerPolicy::new(Config::default()).allowed_origins(["https://good.example"]);
    let check =
        |policy: &ServerPolicy, origin: Option<&str>, expected: Result<(), HandshakeError>| {
            let extra: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
            assert_eq!(policy.accept(&request(&extra)).map(|_| ()), expected, "{origin:?}");
        };
    check(&policy, Some("https://good.example"), Ok(()));
    check(&policy, Some("HTTPS://GOOD.EXAMPLE"), Ok(()));
    check(&policy, None, Ok(()));
    let evil = Err(HandshakeError::ForbiddenOrigin(Some("https://evil.example".into())));
    check(&policy, Some("https://evil.example"), evil);
    let strict = policy.clone().require_origin(true);
    check(&strict, None, Err(HandshakeError::ForbiddenOrigin(None)));
    assert_eq!(HandshakeError::ForbiddenOrigin(None).status(), 403);
}

#[test]
fn server_answers_with_the_negotiated_headers_and_a_ready_connection() {
    let accepted = ServerPolicy::new(deflate())
        .accept(&request(&[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )]))
        .unwrap();
    let h = accepted.response.headers();
    assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    // The default keeps no codec state between messages: both parameters, though the
    // (browser's) offer named neither (RFC 7692 §7.1.1.1, §7.1.1.2).
    assert_eq!(
        h["sec-websocket-extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert!(accepted.connection.is_deflate_enabled());
    // Without the config's consent, no compression even when offered.
    let accepted = ServerPolicy::new(Config::default())
        .accept(&request(&[("Sec-WebSocket-Extensions", "permessage-deflate")]))
        .unwrap();
    assert!(!accepted.response.headers().contains_key("sec-websocket-extensions"));
    assert!(!accepted.connection.is_deflate_enabled());
    // HTTP/1.1 checks come first.
    let mut bad = request(&[]);
    *bad.method_mut() = http::Method::POST;
    let err = ServerPolicy::new(Config::default()).accept(&bad).unwrap_err();
    assert_eq!(err, HandshakeError::MethodNotGet("POST".into()));
}

#[test]
fn the_step_accepts_a_request_by_its_parts() {
    let (parts, ()) = request(&[]).into_parts();
    assert!(ServerPolicy::new(Config::default()).accept(&parts).is_ok());
}

fn response_101(offer: &ClientOffer, fields: &[(&str, &str)]) -> Response<()> {
    let mut builder = Response::builder()
        .status(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", wsx_proto::handshake::accept_key(offer.key().as_bytes()));
    for (name, value) in fields {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

#[test]
fn client_fails_on_what_it_did_not_offer() {
    let plain = ClientOffer::new(Config::default(), ["chat"]).unwrap();
    let ext = [("Sec-WebSocket-Extensions", "permessage-deflate")];
    assert_eq!(
        plain.process_response(&response_101(&plain, &ext)).map(|_| ()).unwrap_err(),
        HandshakeError::UnofferedExtension("permessage-deflate".into())
    );
    let other = [("Sec-WebSocket-Protocol", "other")];
    assert_eq!(
        plain.process_response(&response_101(&plain, &other)).map(|_| ()).unwrap_err(),
        HandshakeError::UnofferedProtocol("other".into())
    );
    let offering = ClientOffer::new(deflate(), ["chat"]).unwrap();
    // The default offer asks for server_no_context_takeover, so an answer must name it.
    assert_eq!(
        offering.process_response(&response_101(&offering, &ext)).map(|_| ()).unwrap_err(),
        HandshakeError::UnofferedExtension("permessage-deflate".into())
    );
    let answer = ("Sec-WebSocket-Extensions", "permessage-deflate; server_no_context_takeover");
    let ok = offering
        .process_response(&response_101(&offering, &[answer, ("Sec-WebSocket-Protocol", "chat")]))
        .unwrap();
    assert_eq!(ok.protocol.as_deref(), Some("chat"));
    assert!(ok.connection.is_deflate_enabled());
    assert!(ClientOffer::new(Config::default(), ["bad name"]).is_err());
}

#[test]
fn client_request_goes_through_the_server_step() {
    let offer = ClientOffer::new(deflate(), ["v1", "v2"]).unwrap();
    let bytes = offer.request("example.com", "/chat", &HeaderMap::new()).unwrap();
    let request = parse_request(&bytes, 100).unwrap();
    let accepted = ServerPolicy::new(deflate()).protocols(["v2"]).accept(&request).unwrap();
    let established = offer.process_response(&accepted.response).unwrap();
    assert_eq!(established.protocol.as_deref(), Some("v2"));
    assert!(established.connection.is_deflate_enabled());
}
