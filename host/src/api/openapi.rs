//! The OpenAPI 3.1 description of the HTTP API, served at `GET /api/openapi.json`.
//!
//! It is generated, not written: each handler carries a `#[utoipa::path]`
//! annotation (method, path, parameters, request body, every answer), the
//! types it takes and answers derive their schemas, and `api::router`
//! registers each handler through utoipa-axum's `routes!`, which adds the
//! route and its description together, so neither can exist without the
//! other. What middleware adds to a group of routes (the credential check's
//! 401, the tenant check's 404) is added here to exactly the operations of
//! that group, where the group is built.

use utoipa::openapi::RefOr;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::{Modify, ToSchema};

/// Every error the API answers: its status says what kind, `error` says
/// what was wrong and what to do.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(as = Error, example = json!({"error": "no tenant \"acme\""}))]
pub struct ErrorBody {
    pub error: String,
}

/// A span of a day, `["09:00", "18:00"]`, in the person's zone: the form of
/// working hours, quiet hours and send windows (`{"mon": [...], "daily": [...]}`),
/// which the code keeps as `(String, String)` pairs. An end before the start
/// runs past midnight.
pub struct TimeSpan;

impl utoipa::PartialSchema for TimeSpan {
    fn schema() -> RefOr<Schema> {
        let time = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]{2}:[0-9]{2}$"));
        ArrayBuilder::new()
            .items(time)
            .min_items(Some(2))
            .max_items(Some(2))
            .description(Some("[start, end] as HH:MM"))
            .into()
    }
}

impl ToSchema for TimeSpan {}

/// A flattened `Option<StatsView>`: the stats' fields, or none of them (a
/// plugin not called yet). Flattening a `None` adds no fields, which a plain
/// `StatsView | null` would not describe.
pub struct FlattenedStats;

impl utoipa::PartialSchema for FlattenedStats {
    fn schema() -> RefOr<Schema> {
        // Told apart from a StatsView by its first required field: `not:
        // {required: ["calls"]}`, which utoipa's builders do not spell, so it
        // goes in through the schema's extension map (serialized flat).
        let mut none = utoipa::openapi::extensions::Extensions::default();
        none.insert("not".into(), serde_json::json!({ "required": ["calls"] }));
        let no_stats = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("Not called yet: none of the stats' fields"))
            .extensions(Some(none));
        OneOfBuilder::new()
            .item(Ref::from_schema_name("StatsView"))
            .item(no_stats)
            .into()
    }
}

impl ToSchema for FlattenedStats {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            "StatsView".into(),
            <crate::health::StatsView as utoipa::PartialSchema>::schema(),
        ));
        <crate::health::StatsView as ToSchema>::schemas(schemas);
    }
}

/// The security schemes: names used by the handlers' `security(...)`.
pub const API_KEY: &str = "api_key";
pub const ADMIN_TOKEN: &str = "admin_token";
pub const ADMIN_BASIC: &str = "admin_basic";

/// The document's frame: title, version, tags and security schemes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "presence-host",
        description = "Presence and notification routing for wedding vendors. Every route under \
        /api except the providers' webhooks and the OAuth callback needs `Authorization: Bearer` \
        with the operator's admin token or a tenant's API key. Errors are `{\"error\": \"...\"}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody, crate::store::presence::Change)),
    tags(
        (name = "webhooks", description = "Providers' webhooks, verified by the provider plugin"),
        (name = "presence", description = "People's presence, settings and the change stream"),
        (name = "notifications", description = "Notifications routed by presence and urgency"),
        (name = "tenants", description = "Tenants, API keys, audit trail and classifier chains"),
        (name = "connections", description = "People's accounts at providers, and OAuth consent"),
        (name = "presence-webhooks", description = "Tenants' own endpoints for presence changes"),
        (name = "operations", description = "Plugins, health, metrics, probes and this description"),
    )
)]
pub struct Frame;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: &str, description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            API_KEY,
            bearer(
                "phk_<id>_<secret>",
                "A tenant's API key (`presence-host api-key create`, or `POST /api/tenants/{tenant}/api-keys`): acts for its own tenant only.",
            ),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            bearer(
                "opaque",
                "The operator's `admin_token` (`PRESENCE_ADMIN_TOKEN`): acts for any tenant and may use the operator-only routes.",
            ),
        );
        components.add_security_scheme(
            ADMIN_BASIC,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The admin token as the HTTP Basic password (any user name), so a browser can open the dashboard; accepted there only.",
                    ))
                    .build(),
            ),
        );
    }
}

/// An error answer: the shared `Error` schema under `application/json`.
pub fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
}

/// Every operation of `openapi`.
pub fn operations_mut(openapi: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
    })
}

/// Adds an error answer to each operation. Where an operation already
/// describes that status with another JSON body (the health report's 503),
/// the body is one of the two.
pub fn add_error(openapi: &mut OpenApi, status: u16, description: &str) {
    let error = || RefOr::Ref(Ref::from_schema_name("Error"));
    for operation in operations_mut(openapi) {
        let entry = operation.responses.responses.entry(status.to_string());
        let RefOr::T(response) = entry.or_insert_with(|| error_response(description).into()) else {
            continue;
        };
        let Some(RefOr::T(json)) = response.content.get_mut("application/json") else {
            continue;
        };
        if let Some(schema) = json.schema.take() {
            json.schema = Some(if schema == error() {
                schema
            } else {
                response.description = format!("{}; or: {description}", response.description);
                OneOfBuilder::new().item(schema).item(error()).into()
            });
        }
    }
}

/// The description as served. utoipa names the schema of a type alias after
/// the aliased type, so `model::Instant` (an `i64`) comes out as a component
/// named `i64`; it is served as `Instant`, with what it means.
pub fn to_json(openapi: &OpenApi) -> serde_json::Result<String> {
    const FROM: &str = "#/components/schemas/i64";
    const TO: &str = "#/components/schemas/Instant";
    fn rename(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if key == "$ref" && v == FROM {
                        *v = TO.into();
                    } else {
                        rename(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(rename),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(openapi)?;
    if let Some(schemas) = value
        .pointer_mut("/components/schemas")
        .and_then(serde_json::Value::as_object_mut)
        && let Some(mut instant) = schemas.remove("i64")
    {
        instant["description"] = "Milliseconds since the Unix epoch, UTC".into();
        schemas.insert("Instant".into(), instant);
        rename(&mut value);
    }
    serde_json::to_string_pretty(&value)
}

/// A request body declared `Option<T>` is one the handler lets the caller
/// leave out (an empty body means the defaults), not one that may be JSON
/// `null`: the body is `T`, and not required.
pub fn optional_bodies(openapi: &mut OpenApi) {
    let null = || -> RefOr<Schema> { ObjectBuilder::new().schema_type(Type::Null).into() };
    for operation in operations_mut(openapi) {
        let Some(RefOr::T(body)) = operation.request_body.as_mut() else {
            continue;
        };
        if body.required == Some(utoipa::openapi::Required::True) {
            continue;
        }
        for content in body.content.values_mut() {
            let RefOr::T(content) = content else { continue };
            if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema
                && one_of.items.len() == 2
                && one_of.items[1] == null()
            {
                content.schema = Some(one_of.items[0].clone());
            }
        }
    }
}

/// What `auth::require_caller` adds to the routes it guards.
pub fn guarded_by_caller_check(openapi: &mut OpenApi) {
    add_error(
        openapi,
        401,
        "No credential, or one that is unknown, revoked or expired",
    );
    add_error(
        openapi,
        503,
        "The store is unavailable (checking the key, or the request itself); retry later",
    );
}

/// What `auth::tenant_route` adds to `/api/tenants/{tenant}/...`.
pub fn guarded_by_tenant_check(openapi: &mut OpenApi) {
    add_error(openapi, 400, "`{tenant}` is not a valid tenant name");
    add_error(
        openapi,
        403,
        "The API key belongs to another tenant, or the route is the operator's",
    );
    add_error(openapi, 404, "No such tenant");
}
