//! Review of issue 11, defect 8 (own test binary: the defect aborts the process). The
//! simulator's PromQL evaluator recurses once per nesting level (`Eval::eval`,
//! simulator/src/promql/mod.rs:116), so a MetricTemplate nested a few thousand levels deep
//! overflows the stack and aborts `fledge-sim run` while the scenario loads (`check`), instead of
//! an error naming the query. Run: `cargo test -p fledge --test review_r11_deep_query -- --ignored`.

use fledge_simulator::promql::check;

#[test]
#[ignore = "review r11 defect 8: aborts (stack overflow) until the evaluator bounds its nesting"]
fn a_deeply_nested_query_is_an_error_not_a_stack_overflow() {
    let depth = 20_000;
    let query = format!("{}1{}", "(".repeat(depth), ")".repeat(depth));
    assert!(check(&query).is_err());
}
