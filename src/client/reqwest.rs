//! reqwest's own types through the stack: send a `reqwest::Request` built with reqwest's builder
//! (`.json()`, `.query()`, headers, auth) and get a `reqwest::Response` back (`.json()`,
//! `.error_for_status()`), with every layer of the client in between.

use tower::{Service, ServiceExt};

use super::Client;
use crate::{BoxError, Error};

impl<E, C> Client<E, C> {
    /// Sends a `reqwest::Request` through the whole stack and answers a `reqwest::Response`
    /// (feature `reqwest`): build the request with any `reqwest::Client` (it only builds; the
    /// stack's own transport sends), keep reqwest's response API.
    ///
    /// ```no_run
    /// # async fn run(client: stanchion::client::Client<stanchion::pool::Pool<stanchion::pool::ReqwestConnector, std::net::SocketAddr>, stanchion::classify::HttpClassifier>, builder: reqwest::Client) -> Result<(), stanchion::BoxError> {
    /// let req = builder.post("https://api.example.com/v1/charges").body("amount=5").build()?;
    /// let res = client.send_reqwest(req).await?.error_for_status()?;
    /// println!("{}", res.text().await?);
    /// # Ok(()) }
    /// ```
    ///
    /// What goes through is the request itself — method, URL, headers, body. Settings of the
    /// `reqwest::Client` that built it apply only when reqwest sends it, so they do not here:
    /// its default headers, user agent and a per-request `.timeout()` (the stack's deadline is
    /// the timeout); put them on the request, or on the connector's clients
    /// ([`ReqwestConnector::configure`](crate::pool::ReqwestConnector::configure)). The body is
    /// sent again on a retry like any other: from the stack's replay buffer, while it fits
    /// (`docs/retry.md`). The response's `url()` is reqwest's placeholder for a response it did
    /// not fetch itself.
    ///
    /// # Errors
    /// The stack's [`Error`]; a request reqwest cannot turn into an `http::Request`:
    /// [`Error::Inner`], with reqwest's error as its source.
    pub async fn send_reqwest<RB>(&self, req: reqwest::Request) -> Result<reqwest::Response, Error>
    where
        Self: Service<http::Request<reqwest::Body>, Response = http::Response<RB>, Error = Error>,
        RB: http_body::Body + Send + Sync + 'static,
        RB::Data: Into<bytes::Bytes>,
        RB::Error: Into<BoxError>,
    {
        let req =
            http::Request::<reqwest::Body>::try_from(req).map_err(|e| Error::Inner(Box::new(e)))?;
        let res = self.clone().oneshot(req).await?;
        Ok(reqwest::Response::from(res.map(reqwest::Body::wrap)))
    }
}
