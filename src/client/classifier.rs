//! [`ClientClassifier`]: the classifier a client judges outcomes with, and whether it speaks gRPC.

use crate::classify::{GrpcClassifier, HttpClassifier};

/// The classifier a client judges outcomes with.
pub trait ClientClassifier: Clone + Send + Sync + 'static {
    /// Whether the protocol is gRPC, whose routes may set retryable codes.
    fn is_grpc(&self) -> bool;
}

impl ClientClassifier for GrpcClassifier {
    fn is_grpc(&self) -> bool {
        true
    }
}

impl ClientClassifier for HttpClassifier {
    fn is_grpc(&self) -> bool {
        false
    }
}
