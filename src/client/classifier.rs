//! [`ClientClassifier`]: the classifier a client judges outcomes with, and how a route changes it.

use crate::classify::{GrpcClassifier, GrpcCodes, HttpClassifier};

/// The classifier a client judges outcomes with, and how a route changes it.
pub trait ClientClassifier: Clone + Send + Sync + 'static {
    /// This classifier with `codes` retryable; `None` when the protocol has no such codes.
    fn with_retryable_codes(&self, codes: GrpcCodes) -> Option<Self>;
}

impl ClientClassifier for GrpcClassifier {
    fn with_retryable_codes(&self, codes: GrpcCodes) -> Option<Self> {
        Some(self.retryable_codes(codes))
    }
}

impl ClientClassifier for HttpClassifier {
    fn with_retryable_codes(&self, _: GrpcCodes) -> Option<Self> {
        None
    }
}
