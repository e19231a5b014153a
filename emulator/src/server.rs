//! The HTTPS server: TLS with optional client certificates, HTTP/1.1 and h2,
//! authentication, authorization and routing to the handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::auth::UserInfo;
use crate::authz;
use crate::discovery;
use crate::errors::ApiError;
use crate::handlers::{self, Call, Filters, Format};
use crate::openapi;
use crate::rbac::{Attributes, Decision};
use crate::request::{self, ResourcePath, Route};
use crate::shared::Shared;
use crate::state::meta_str;
use crate::watch::{self as watch_stream, WatchRequest};

type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (etcd's object limit is about 1.5 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

fn json_response(code: u16, body: &Value) -> Response<Body> {
    let bytes = Bytes::from(body.to_string());
    let mut r = Response::new(Full::new(bytes).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn text_response(code: u16, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves connections until `stop` turns true; connection tasks are aborted then.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                conns.spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let cert_user = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| UserInfo::from_certificate(c.as_ref()));
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        let cert_user = cert_user.clone();
                        async move { Ok::<_, Infallible>(handle(shared, cert_user, req).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if let Err(e) = builder.serve_connection(TokioIo::new(tls), svc).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    conns.abort_all();
}

/// The user of a bearer token, if the token is valid.
fn token_user(shared: &Shared, token: &str) -> Option<UserInfo> {
    let claims = shared
        .env
        .signer
        .verify(token, chrono::Utc::now().timestamp())?;
    if claims.secret_name.is_none() && !claims.audiences.contains(&shared.config.api_audience()) {
        return None;
    }
    shared.read(|st| {
        let sa = st.store.get(
            &(String::new(), "serviceaccounts".into()),
            &claims.namespace,
            &claims.service_account,
        )?;
        if meta_str(&sa, "uid") != Some(claims.service_account_uid.as_str()) {
            return None;
        }
        if let Some(secret) = &claims.secret_name {
            st.store.get(
                &(String::new(), "secrets".into()),
                &claims.namespace,
                secret,
            )?;
        }
        Some(UserInfo::service_account(
            &claims.namespace,
            &claims.service_account,
            &claims.service_account_uid,
        ))
    })
}

enum Authn {
    User(UserInfo),
    Anonymous,
    Invalid,
}

fn authenticate(shared: &Shared, cert_user: Option<UserInfo>, req: &Request<Incoming>) -> Authn {
    if let Some(h) = req.headers().get(hyper::header::AUTHORIZATION) {
        let token = h
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        return match token.and_then(|t| token_user(shared, t)) {
            Some(u) => Authn::User(u),
            None => Authn::Invalid,
        };
    }
    match cert_user {
        Some(u) => Authn::User(u),
        None => Authn::Anonymous,
    }
}

fn response_format(req: &Request<Incoming>) -> Result<Format, ApiError> {
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let table = accept.split(',').any(|a| a.contains("as=Table"));
    let full = req
        .uri()
        .query()
        .is_some_and(|q| q.contains("includeObject=Object"));
    if table {
        return Ok(Format::Table { full_objects: full });
    }
    let json_ok = accept.split(',').any(|a| {
        let t = a.split(';').next().unwrap_or_default().trim();
        t == "*/*" || t == "application/*" || t == "application/json" || t.is_empty()
    });
    if json_ok {
        Ok(Format::Json)
    } else {
        Err(ApiError::not_acceptable())
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    limited
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
}

async fn handle(
    shared: Arc<Shared>,
    cert_user: Option<UserInfo>,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match route(shared, cert_user, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp
}

async fn route(
    shared: Arc<Shared>,
    cert_user: Option<UserInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let user = match authenticate(&shared, cert_user, &req) {
        Authn::Invalid => return Err(ApiError::unauthorized()),
        Authn::User(u) => Some(u),
        Authn::Anonymous => None,
    };
    match path.as_str() {
        "/healthz" | "/readyz" | "/livez" => return Ok(text_response(200, "ok")),
        "/version" => return Ok(json_response(200, &discovery::version())),
        _ => {}
    }
    let Some(user) = user else {
        return Err(ApiError::unauthorized());
    };
    let route = request::parse_path(&path);
    if !matches!(route, Route::Resource(_)) && req.method() != Method::GET {
        return Err(ApiError::method_not_allowed(req.method().as_str(), &path));
    }
    match route {
        Route::CoreVersions => Ok(json_response(
            200,
            &discovery::core_versions(&shared.config.advertise.to_string()),
        )),
        Route::Groups => Ok(json_response(
            200,
            &shared.read(|st| discovery::groups(&st.registry)),
        )),
        Route::Group(g) => Ok(json_response(
            200,
            &shared.read(|st| discovery::group(&st.registry, &g))?,
        )),
        Route::Resources { group, version } => Ok(json_response(
            200,
            &shared.read(|st| discovery::resources(&st.registry, &group, &version))?,
        )),
        Route::Other(p) if p == "/openapi/v3" => Ok(json_response(
            200,
            &shared.read(|st| openapi::root(&st.registry, &st.rv_string())),
        )),
        Route::Other(p) if p.starts_with("/openapi/v3/") => {
            let gv = p
                .trim_start_matches("/openapi/v3/")
                .trim_end_matches('/')
                .to_string();
            Ok(json_response(
                200,
                &shared.read(|st| openapi::group_version(&st.registry, &gv))?,
            ))
        }
        Route::Other(_) => Err(ApiError::path_not_found()),
        Route::Resource(rp) => resource(shared, user, rp, req).await,
    }
}

fn verb_of(method: &Method, rp: &ResourcePath, watch: bool) -> Option<&'static str> {
    Some(match (method, rp.name.is_some()) {
        (&Method::GET, _) if watch => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return None,
    })
}

async fn resource(
    shared: Arc<Shared>,
    user: UserInfo,
    rp: ResourcePath,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let query = request::parse_query(req.uri().query());
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = verb_of(req.method(), &rp, watch)
        .ok_or_else(|| ApiError::method_not_allowed(req.method().as_str(), &rp.resource))?;
    let info = shared
        .read(|st| {
            st.registry
                .lookup(&rp.group, &rp.version, &rp.resource)
                .cloned()
        })
        .ok_or_else(ApiError::path_not_found)?;
    if info.namespaced
        && rp.namespace.is_none()
        && matches!(
            verb,
            "create" | "update" | "patch" | "delete" | "deletecollection" | "get"
        )
    {
        return Err(ApiError::path_not_found());
    }
    if info.create_only && verb != "create" {
        return Err(ApiError::method_not_allowed(verb, &info.plural));
    }
    let attrs = Attributes {
        verb: verb.to_string(),
        api_group: rp.group.clone(),
        resource: rp.resource.clone(),
        subresource: rp.subresource.clone().unwrap_or_default(),
        namespace: if info.namespaced {
            rp.namespace.clone()
        } else {
            None
        },
        name: rp.name.clone(),
        path: None,
    };
    if !info.create_only
        && let Decision::Deny(message) = shared.read(|st| authz::authorize(st, &user, &attrs))
    {
        return Err(ApiError::forbidden(message));
    }
    let format = response_format(&req)?;
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let method = req.method().clone();
    let body = read_body(req).await?;
    if matches!(method, Method::POST | Method::PUT) {
        let ct = content_type.split(';').next().unwrap_or_default().trim();
        if !(ct == "application/json" || ct.is_empty()) {
            return Err(ApiError::unsupported_media_type(ct, &["application/json"]));
        }
    }
    let call = Call {
        info,
        path: &rp,
        query: &query,
        user: &user,
        format,
    };
    let reply = match verb {
        "watch" => return watch_response(shared, &call),
        "get" => handlers::get(&shared, &call)?,
        "list" => handlers::list(&shared, &call)?,
        "create" => handlers::create(&shared, &call, &body)?,
        "update" => handlers::update(&shared, &call, &body)?,
        "patch" => handlers::patch(&shared, &call, &content_type, &body)?,
        "delete" => handlers::delete(&shared, &call, &body)?,
        _ => handlers::delete_collection(&shared, &call, &body)?,
    };
    Ok(json_response(reply.0, &reply.1))
}

fn watch_response(shared: Arc<Shared>, c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let q = c.query;
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let namespace = if c.info.namespaced {
        c.path.namespace.clone()
    } else {
        None
    };
    let mut filters = Filters::from_query(&c.info, q)?;
    if let Some(name) = &c.path.name {
        // The legacy `/watch`-by-name form: a field selector on the name.
        filters.fields = crate::selector::FieldSelector::parse(&format!("metadata.name={name}"))
            .map_err(ApiError::bad_request)?;
    }
    let req = WatchRequest {
        info: c.info.clone(),
        version: c.path.version.clone(),
        namespace,
        filters,
        resource_version: q.get("resourceVersion").cloned(),
        bookmarks: flag("allowWatchBookmarks"),
        send_initial_events: flag("sendInitialEvents"),
        timeout: q
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs),
        format: c.format,
    };
    let rx = watch_stream::start(shared, req)?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}
