//! SaslHandshake and SaslAuthenticate. They change the connection's state, so the reader
//! handles them in order, before the next frame is read (`crate::sasl` has the mechanisms).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::sasl::{Authenticator, Exchange, Step};

pub(super) fn handshake(
    auth: &Authenticator,
    exchange: &mut Exchange,
    request: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let mut response = SaslHandshakeResponse::default();
    response.mechanisms = auth.mechanisms().iter().map(|m| StrBytes::from_string(m.clone())).collect();
    if !matches!(exchange, Exchange::Unauthenticated) {
        response.error_code = ResponseError::IllegalSaslState.code();
        return response;
    }
    match auth.choose(request.mechanism.as_str()) {
        Some(mechanism) => *exchange = Exchange::Chosen(mechanism),
        None => response.error_code = ResponseError::UnsupportedSaslMechanism.code(),
    }
    response
}

/// The answer, and whether the connection closes after it (a failed authentication).
pub(super) fn authenticate(
    auth: &Authenticator,
    exchange: &mut Exchange,
    request: SaslAuthenticateRequest,
) -> (SaslAuthenticateResponse, bool) {
    let mut response = SaslAuthenticateResponse::default();
    match auth.step(exchange, &request.auth_bytes) {
        Step::Continue(bytes) => {
            response.error_message = None;
            response.auth_bytes = bytes.into();
            (response, false)
        }
        Step::Done(user, bytes) => {
            tracing::debug!(%user, "Kafka client authenticated");
            response.error_message = None;
            response.auth_bytes = bytes.into();
            (response, false)
        }
        Step::Failed(why) => {
            tracing::warn!(%why, "Kafka client failed to authenticate");
            metrics::counter!("strom_kafka_authentication_failures_total").increment(1);
            response.error_code = ResponseError::SaslAuthenticationFailed.code();
            response.error_message = Some(StrBytes::from_string(why));
            (response, true)
        }
    }
}
