//! The OpenAPI description (`GET /api/openapi.json`): it lists exactly the
//! routes the router serves, with the API's security schemes, and the
//! checker that the end-to-end helpers run on every answer really refuses
//! answers the description does not say.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use support::openapi::{Answer, SpecValidator};
use tower::ServiceExt;

/// The real router of an app started on an empty data and plugins folder.
async fn router() -> (axum::Router, presence_host::Running, [tempfile::TempDir; 2]) {
    let data = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let config = presence_host::Config {
        data_dir: data.path().to_path_buf(),
        plugins_dir: Some(plugins.path().to_path_buf()),
        admin_token: Some("openapi-test-token".into()),
        ..Default::default()
    };
    let running = presence_host::App::start(config).await.unwrap();
    let router = presence_host::api::router(Arc::clone(&running.app));
    (router, running, [data, plugins])
}

async fn send(router: &axum::Router, method: &str, path: &str) -> (u16, Option<String>, Vec<u8>) {
    let resp = router
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    (status, content_type, body)
}

async fn spec_of(router: &axum::Router) -> Value {
    let (status, content_type, body) = send(router, "GET", "/api/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    serde_json::from_slice(&body).unwrap()
}

/// Every (method, path) the router has, read from its route table (axum's
/// `Debug` of a router lists each route's path and its `Allow` header). HEAD
/// comes with every GET and is not listed separately.
fn served(router: &axum::Router) -> BTreeSet<(String, String)> {
    let debug = format!("{router:?}");
    let table = debug
        .split_once("path_router: PathRouter {")
        .and_then(|(_, rest)| rest.split_once("fallback_router:"))
        .map(|(table, _)| table)
        .expect("axum's Router Debug names path_router and fallback_router");
    let mut methods = std::collections::BTreeMap::new();
    let mut paths = std::collections::BTreeMap::new();
    for chunk in table.split("RouteId(").skip(1) {
        let (id, rest) = chunk.split_once("): ").expect("RouteId(n): ...");
        let id: u32 = id.trim().parse().expect("a route id");
        if let Some(path) = rest.strip_prefix('"') {
            paths.insert(id, path.split('"').next().unwrap().to_string());
        } else {
            let allow = rest
                .split_once("allow_header: Bytes(b\"")
                .map(|(_, a)| a.split('"').next().unwrap().to_string())
                .unwrap_or_else(|| panic!("route {id} is not a method router: {rest}"));
            methods.insert(id, allow);
        }
    }
    assert_eq!(
        methods.keys().collect::<Vec<_>>(),
        paths.keys().collect::<Vec<_>>(),
        "every route id has a path and methods"
    );
    let mut out = BTreeSet::new();
    for (id, allow) in methods {
        let listed: Vec<&str> = allow.split(',').collect();
        for method in &listed {
            if *method == "HEAD" {
                assert!(
                    listed.contains(&"GET"),
                    "HEAD without GET on {}",
                    paths[&id]
                );
                continue;
            }
            out.insert((method.to_string(), paths[&id].clone()));
        }
    }
    out
}

#[tokio::test]
async fn the_description_lists_exactly_the_routes_the_router_serves() {
    let (router, _running, _dirs) = router().await;
    let spec = SpecValidator::new(spec_of(&router).await);
    let described = spec.operations();
    let served = served(&router);
    assert!(
        served.len() >= 30 && served.contains(&("GET".into(), "/healthz".into())),
        "the route table was not read: {served:?}"
    );
    let undescribed: Vec<_> = served.difference(&described).collect();
    let unserved: Vec<_> = described.difference(&served).collect();
    assert!(
        undescribed.is_empty() && unserved.is_empty(),
        "served but not described: {undescribed:?}\ndescribed but not served: {unserved:?}"
    );
    // And each described operation reaches a handler or its middleware:
    // none is the router's own empty 404 or 405.
    for (method, path) in &described {
        let concrete = path
            .replace("{tenant}", "default")
            .replace("{plugin}", "no-such-plugin")
            .replace("{provider}", "no-such-provider")
            .replace(['{', '}'], "");
        let (status, _, body) = send(&router, method, &concrete).await;
        assert!(
            !((status == 404 || status == 405) && body.is_empty()),
            "{method} {concrete} is described but the router does not route it ({status})"
        );
    }
}

#[tokio::test]
async fn the_description_is_openapi_3_1_with_the_security_the_api_uses() {
    let (router, _running, _dirs) = router().await;
    let spec = spec_of(&router).await;
    assert_eq!(spec["openapi"], "3.1.0");
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");
    assert_eq!(schemes["admin_basic"]["scheme"], "basic");
    let open: BTreeSet<&str> = [
        "/healthz",
        "/readyz",
        "/api/openapi.json",
        "/api/oauth/{provider}/callback",
        "/api/webhooks/{plugin}",
        "/api/webhooks/{plugin}/{tenant}",
    ]
    .into();
    let operator_only: BTreeSet<(&str, &str)> = [
        ("post", "/api/tenants"),
        ("post", "/api/tenants/{tenant}/api-keys"),
        ("post", "/api/tenants/{tenant}/api-keys/{id}/rotate"),
        ("get", "/metrics"),
    ]
    .into();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let security: BTreeSet<String> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r.as_object().unwrap().keys().cloned())
                .collect();
            let expected: BTreeSet<String> = if open.contains(path.as_str()) {
                BTreeSet::new()
            } else if path == "/dashboard" {
                ["admin_token".into(), "admin_basic".into()].into()
            } else if operator_only.contains(&(method.as_str(), path.as_str())) {
                ["admin_token".into()].into()
            } else {
                ["admin_token".into(), "api_key".into()].into()
            };
            assert_eq!(security, expected, "{method} {path}");
            if !security.is_empty() && path != "/dashboard" {
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {path} needs a key but does not describe 401"
                );
            }
            // Every JSON error is the one shared shape.
            for (status, response) in op["responses"].as_object().unwrap() {
                let Some(schema) = response["content"]["application/json"].get("schema") else {
                    continue;
                };
                if status.starts_with('4') || (status.starts_with('5') && path != "/readyz") {
                    let text = schema.to_string();
                    assert!(
                        text.contains("#/components/schemas/Error"),
                        "{method} {path} {status}: {text}"
                    );
                }
            }
        }
    }
    let mut ids = BTreeSet::new();
    for item in spec["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "operationId {id} is not unique");
        }
    }
    // A body the handler lets the caller leave out is optional, not nullable.
    let issue = &spec["paths"]["/api/tenants/{tenant}/api-keys"]["post"]["requestBody"];
    assert_ne!(issue["required"], true);
    assert_eq!(
        issue["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/NewKey"})
    );
    // Instants are named so, not after the i64 they are.
    assert_eq!(
        spec["components"]["schemas"]["Instant"]["format"], "int64",
        "{}",
        spec["components"]["schemas"]
    );
    assert!(!spec.to_string().contains("schemas/i64"));
    // The stream's events are described by name.
    assert!(spec["components"]["schemas"]["PresenceChange"]["properties"]["presence"].is_object());
    // A webhook's answer is the plugin's: any content.
    assert_eq!(
        spec["paths"]["/api/webhooks/{plugin}"]["post"]["responses"]["200"]["content"]["*/*"]["schema"],
        json!({})
    );
    assert_eq!(
        spec["paths"]["/api/presence/stream"]["get"]["responses"]["200"]["content"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["text/event-stream"]
    );
}

#[tokio::test]
async fn the_checker_refuses_what_the_description_does_not_say() {
    let (router, _running, _dirs) = router().await;
    let spec = SpecValidator::new(spec_of(&router).await);
    let json_answer = |method, path, status, body: &Value| {
        spec.check(&Answer {
            method,
            path,
            status,
            content_type: Some("application/json"),
            body: &serde_json::to_vec(body).unwrap(),
        })
    };
    let tenant = json!({"name": "acme", "display_name": null, "created_at": 1});
    json_answer("GET", "/api/tenants", 200, &json!({"tenants": [tenant]})).unwrap();
    json_answer("GET", "/api/tenants?x=1", 200, &json!({"tenants": []})).unwrap();
    json_answer("GET", "/api/tenants", 401, &json!({"error": "no key"})).unwrap();

    let refused = [
        // a field of the wrong type
        json_answer(
            "GET",
            "/api/tenants",
            200,
            &json!({"tenants": [{"name": 1, "display_name": null, "created_at": 1}]}),
        ),
        // a required field missing
        json_answer(
            "GET",
            "/api/tenants",
            200,
            &json!({"tenants": [{"name": "acme"}]}),
        ),
        // a field the description does not name (objects are closed)
        json_answer(
            "GET",
            "/api/tenants",
            200,
            &json!({"tenants": [], "total": 0}),
        ),
        // the same inside an allOf (PresenceView = Presence + its own fields)
        json_answer(
            "GET",
            "/api/presence/U1",
            200,
            &json!({
            "user": "U1", "availability": "busy", "signals": [], "pending_pushes": [],
            "next_change_at": null, "mood": "sunny"}),
        ),
        // an error that is not the shared shape
        json_answer("GET", "/api/tenants", 401, &json!({"message": "no key"})),
        // a status the operation does not list
        json_answer("GET", "/api/tenants", 418, &json!({"error": "teapot"})),
        // a method the path does not have
        json_answer("PATCH", "/api/tenants", 200, &json!({})),
        // a path the description does not have
        json_answer("GET", "/api/nowhere", 200, &json!({})),
        // a content type the status does not list
        spec.check(&Answer {
            method: "GET",
            path: "/healthz",
            status: 200,
            content_type: Some("application/json"),
            body: b"{}",
        }),
    ];
    for (i, result) in refused.iter().enumerate() {
        assert!(result.is_err(), "case {i} passed: {result:?}");
    }
    assert!(
        refused[2].as_ref().unwrap_err().contains("total"),
        "the message names the field: {:?}",
        refused[2]
    );
    // PresenceView's own parts still pass when complete.
    json_answer(
        "GET",
        "/api/presence/U1",
        200,
        &json!({
        "user": "U1", "availability": "busy", "status_text": null, "status_emoji": null,
        "until": null, "category": {"other": "tasting"}, "source": "manual", "origin": "api",
        "signals": [], "pending_pushes": [], "next_change_at": null}),
    )
    .unwrap();
}

/// The end-to-end helpers check every answer: given a description that
/// says `/readyz` answers `ready` as text, the host's real answer fails the
/// test that got it.
#[tokio::test]
#[should_panic(expected = "does not match the OpenAPI description")]
async fn the_end_to_end_helpers_fail_on_an_answer_the_description_does_not_say() {
    let mut host = support::Host::start(support::PluginsDir::new(), "", &[]);
    let mut spec = host.spec().await.spec().clone();
    spec["components"]["schemas"]["Readiness"]["properties"]["ready"] = json!({"type": "string"});
    host.use_spec(SpecValidator::new(spec));
    host.get_json("/readyz").await;
}

#[tokio::test]
async fn the_description_is_served_without_a_key_and_answers_check() {
    let host = support::Host::start(
        support::PluginsDir::new().with_bundled("wedding-keywords"),
        "",
        &[],
    );
    let resp = reqwest::get(host.url("/api/openapi.json")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let admin = host.admin.clone();
    let key = host.tenant_with_key("acme").await;
    for (method, path, body) in [
        ("GET", "/api/plugins", None),
        ("GET", "/api/tenants", None),
        ("GET", "/api/integrations/health", None),
        ("GET", "/readyz", None),
        (
            "PUT",
            "/api/presence/U1",
            Some(json!({"availability": "busy", "status_text": "Vows"})),
        ),
        ("GET", "/api/presence/U1", None),
        ("GET", "/api/presence/nobody", None),
        (
            "PUT",
            "/api/users/U1",
            Some(
                json!({"time_zone": "Europe/Lisbon", "working_hours": {"mon": ["09:00", "18:00"]}}),
            ),
        ),
        ("GET", "/api/tenants/acme/api-keys", None),
        ("GET", "/api/tenants/acme/audit?limit=5", None),
        ("GET", "/api/tenants/acme/classifiers", None),
        ("GET", "/api/tenants/acme/connections", None),
        ("GET", "/api/tenants/acme/presence-webhooks", None),
        ("GET", "/api/tenants/nope/classifiers", None),
        (
            "POST",
            "/api/notifications",
            Some(json!({"recipients": ["U1"], "urgency": "general", "body": "hi"})),
        ),
    ] {
        for who in [&admin, &key] {
            let (status, answer) = host.api(method, path, who, body.clone()).await;
            assert!(status < 500, "{method} {path}: {status} {answer}");
        }
    }
    // Errors from the credential check are described too.
    let (status, _) = host
        .api("GET", "/api/plugins", "phk_000000000000_nope", None)
        .await;
    assert_eq!(status, 401);
}
