//! The API described as OpenAPI 3.1, from the handlers' own annotations and request types (utoipa),
//! served at `/openapi.json`. Every `/v1` operation takes a bearer token and may answer the errors of
//! [`ERRORS`], each as the JSON body [`ErrorBody`] describes.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, ResponseBuilder};
use utoipa::OpenApi as _;

/// What any `/v1` operation may answer besides its own: a bad request, no or an unknown token, a
/// missing right, something not found, a conflict, a body too large or of the wrong type.
pub const ERRORS: [(&str, &str); 8] = [
    ("400", "the request is malformed: the field and why"),
    ("401", "no token, or an unknown one"),
    ("403", "the token lacks the right"),
    ("404", "no such thing"),
    ("409", "it conflicts with what is going on"),
    ("413", "the body is too large"),
    ("415", "the body is not of the type expected"),
    ("422", "the body cannot be used"),
];

/// Every error's body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// A short code: `invalid`, `unauthorized`, `forbidden`, `not_found`, …
    error: String,
    /// What went wrong, for a person.
    message: String,
    /// The field or parameter at fault, when one is.
    field: Option<String>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "consentd",
        description = "Customer consents of a contact center, and their sync with other consent systems."
    ),
    paths(super::me, super::healthz, super::readyz, super::metrics::render, serve),
    components(schemas(ErrorBody))
)]
struct Top;

/// The whole description.
pub fn document() -> OpenApi {
    let mut doc = Top::openapi();
    for part in [
        super::consents::Api::openapi(),
        super::searches::Api::openapi(),
        super::audit::Api::openapi(),
        super::dpo::Api::openapi(),
        super::checks::Api::openapi(),
        super::sync::Api::openapi(),
        super::store::Api::openapi(),
        super::transfer::Api::openapi(),
    ] {
        doc.merge(part);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    let error = ResponseBuilder::new()
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"))))
                .build(),
        )
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for (method, op) in [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
        ] {
            let Some(op) = op else { continue };
            // Handlers of different modules share names (`list`): ids from the method and path.
            let id: String = format!("{method}{path}")
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            op.operation_id = Some(id.replace("__", "_").trim_end_matches('_').to_string());
            op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            for (status, why) in ERRORS {
                let mut r = error.clone();
                r.description = why.to_string();
                op.responses.responses.entry(status.to_string()).or_insert(RefOr::T(r));
            }
        }
    }
    doc
}

/// `GET /openapi.json` (no token): this description.
#[utoipa::path(get, path = "/openapi.json", tag = "service", responses((status = 200, description = "the OpenAPI 3.1 description", content_type = "application/json")))]
pub async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse;
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = JSON.get_or_init(|| document().to_json().expect("the description serialises"));
    ([(axum::http::header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}
