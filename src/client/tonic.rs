//! The client under a tonic-generated client: every error it reports — from the call, or from
//! the response body (a body cut by the call's deadline) — is a `tonic::Status` with the right
//! code, never UNKNOWN.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Request;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::Service;

use super::Client;
use crate::error::{BoxError, Error};

/// The tower service a tonic-generated client runs on: a [`Client`] whose errors are
/// `tonic::Status` with the right codes (a spent budget is DEADLINE_EXCEEDED, an open breaker or
/// no endpoint UNAVAILABLE, a full bulkhead RESOURCE_EXHAUSTED; a status from the server passes
/// through), for the call and for its response body alike. Made by [`Client::into_tonic`].
pub struct TonicClient<E, C> {
    client: Client<E, C>,
}

impl<E, C> Clone for TonicClient<E, C> {
    fn clone(&self) -> Self {
        TonicClient {
            client: self.client.clone(),
        }
    }
}

impl<E, C> std::fmt::Debug for TonicClient<E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TonicClient")
            .field("client", &self.client)
            .finish()
    }
}

impl<E, C> Client<E, C> {
    /// This client as the transport of a tonic-generated client:
    /// `EchoClient::new(client.into_tonic())`.
    pub fn into_tonic(self) -> TonicClient<E, C> {
        TonicClient { client: self }
    }
}

impl<E, C> TonicClient<E, C> {
    /// The client underneath.
    pub fn client(&self) -> &Client<E, C> {
        &self.client
    }
}

/// A `Status` for any error: a stanchion [`Error`] by its code, anything else as tonic says.
fn status(err: BoxError) -> tonic::Status {
    match err.downcast::<Error>() {
        Ok(own) => tonic::Status::from(*own),
        Err(other) => tonic::Status::from_error(other),
    }
}

impl<E, C, B, RB> Service<Request<B>> for TonicClient<E, C>
where
    Client<E, C>: Service<Request<B>, Response = http::Response<RB>, Error = Error>,
{
    type Response = http::Response<StatusBody<RB>>;
    type Error = tonic::Status;
    type Future = TonicFuture<<Client<E, C> as Service<Request<B>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        self.client.poll_ready(cx).map_err(tonic::Status::from)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        TonicFuture {
            inner: self.client.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`TonicClient`].
    pub struct TonicFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, RB> Future for TonicFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, Error>>,
{
    type Output = Result<http::Response<StatusBody<RB>>, tonic::Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.project().inner.poll(cx)).map_err(tonic::Status::from)?;
        Poll::Ready(Ok(response.map(|inner| StatusBody { inner })))
    }
}

pin_project! {
    /// A response body whose errors are `tonic::Status`es with the right code.
    #[derive(Debug)]
    pub struct StatusBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B> Body for StatusBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, tonic::Status>>> {
        let frame = ready!(self.project().inner.poll_frame(cx));
        Poll::Ready(frame.map(|f| f.map_err(|e| status(e.into()))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
