//! A Canary's settings that a mesh's API would refuse: a Gateway API request timeout outside
//! GEP-2257 is bad input at its line.

mod support;

use support::*;

#[test]
fn a_gateway_api_timeout_outside_gep_2257_is_bad_input_at_its_line() {
    let text = base_with(
        "  spec:\n    targetRef:\n",
        "  spec:\n    provider: gatewayapi:v1\n    targetRef:\n",
    )
    .replacen(
        "      port: 9898\n",
        "      port: 9898\n      timeout: 1.5s\n",
        1,
    );
    assert_bad_input(
        "gateway-timeout.yaml",
        &text,
        line_of(&text, "timeout: 1.5s"),
        "canary.spec.service.timeout",
        "GEP-2257",
    );
}
