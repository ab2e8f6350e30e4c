//! ApiVersions: the first request of every client, which picks each API's version from the
//! ranges answered here.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::SERVED;

fn served_list() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .filter_map(|&(api, ..)| super::served(api).map(|range| (api, range)))
        .map(|(api, (min, max))| {
            let mut version = ApiVersion::default();
            version.api_key = api as i16;
            version.min_version = min;
            version.max_version = max;
            version
        })
        .collect()
}

pub(super) fn handle(_request: ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    // No supported or finalized features: their absence is what a broker without feature
    // flags answers, and the tagged fields stay out of the v3 response (librdkafka 2.0.2
    // reads v3 replies strictly).
    let mut response = ApiVersionsResponse::default();
    response.api_keys = served_list();
    response
}

pub(super) fn unsupported() -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = ResponseError::UnsupportedVersion.code();
    response.api_keys = served_list();
    response
}
