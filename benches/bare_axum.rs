//! A bare axum JSON handler, the peer `benches/api.sh` measures the checks against in the same run
//! with the same wrk settings: the same route shape and a JSON answer of the same size, with none of
//! the daemon's layers (rights, metrics, request ids, timeouts) and no store. Prints
//! `listening on ADDR` and serves until killed.

#[tokio::main]
async fn main() {
    use axum::extract::Path;
    let app = axum::Router::new().route(
        "/v1/checks/{kind}/{number}",
        axum::routing::get(|Path((kind, number)): Path<(String, String)>| async move {
            axum::Json(serde_json::json!({"number": number, "usage": kind, "allowed": true, "consent": true}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    println!("listening on {}", listener.local_addr().expect("an address"));
    axum::serve(listener, app).await.expect("serving");
}
