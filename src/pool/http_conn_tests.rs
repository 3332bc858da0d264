use super::*;

#[test]
fn http1_sends_the_origin_form_with_a_host() {
    let req = Request::get("http://example.test:8080/a?b=1")
        .body(())
        .unwrap();
    let req = origin_form(req, None);
    assert_eq!(req.uri(), "/a?b=1");
    assert_eq!(req.headers()[header::HOST], "example.test:8080");

    let fallback = Authority::from_static("127.0.0.1:9");
    let req = origin_form(Request::get("/x").body(()).unwrap(), Some(&fallback));
    assert_eq!(req.uri(), "/x");
    assert_eq!(req.headers()[header::HOST], "127.0.0.1:9");

    let req = Request::get("http://logical.test/")
        .header("host", "mine")
        .body(())
        .unwrap();
    assert_eq!(
        origin_form(req, Some(&fallback)).headers()[header::HOST],
        "mine"
    );
}

#[test]
fn http2_fills_scheme_and_authority() {
    let fallback = Authority::from_static("127.0.0.1:9");
    let req = absolute_form(
        Request::get("/x?y").body(()).unwrap(),
        Some(&fallback),
        false,
    );
    assert_eq!(req.uri(), "http://127.0.0.1:9/x?y");
    let req = Request::get("https://name.test/x").body(()).unwrap();
    assert_eq!(
        absolute_form(req, Some(&fallback), false).uri(),
        "https://name.test/x"
    );
}

#[test]
fn a_secure_http2_connection_fills_the_https_scheme() {
    let fallback = Authority::from_static("api.example.test");
    let req = absolute_form(Request::get("/v1").body(()).unwrap(), Some(&fallback), true);
    assert_eq!(req.uri(), "https://api.example.test/v1");
}
