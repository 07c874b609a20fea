//! The rollout core's lifecycle, example by example, driven the way a shell drives it.

mod support;

use fledge_controller::analysis::MetricReading;
use fledge_controller::rollout::{
    Action, Command, HookOutcome, Observation, Phase, Readiness, RolloutState, Severity, advance,
    plan,
};
use support::{Driver, SpecExt, canary_spec};

#[test]
fn a_healthy_canary_climbs_every_step_then_is_promoted_and_finalised() {
    let mut d = Driver::new(canary_spec("stepWeight: 10\n    maxWeight: 50"));
    d.deploy("v2");
    let weights = d.run_until_done();
    assert_eq!(weights, [10, 20, 30, 40, 50, 0]);
    assert_eq!(d.state.phase, Phase::Succeeded);
    assert_eq!(d.state.promoted_revision.as_deref(), Some("v2"));
    assert!(d.actions().contains(&Action::PromotePrimary));
    assert!(
        d.messages()
            .iter()
            .any(|m| m == "Advance app canary weight 20%")
    );
    assert_eq!(
        d.state.analysis[0].reason,
        "request-success-rate 100.00% within [99%, ∞)"
    );
    assert_eq!(
        d.messages().last().unwrap(),
        "Promotion completed! Scaling down app"
    );
}

/// Onboarding moves traffic to the ready primary first; the target stops serving only on a
/// later tick, and only while the primary is still ready.
#[test]
fn onboarding_scales_the_target_to_zero_on_a_later_tick_while_the_primary_is_ready() {
    let spec = canary_spec("stepWeight: 10");
    let obs = |primary_ready: u32| Observation {
        revision: "v1".into(),
        canary: Readiness::all(2),
        primary: Readiness {
            ready: primary_ready,
            desired: 2,
        },
        ..Observation::default()
    };
    let (state, actions) = advance(&RolloutState::default(), &spec, &obs(2), 0);
    assert_eq!(state.phase, Phase::Initialized);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::SetRoutes { canary: 0, .. }))
    );
    assert!(
        !actions.contains(&Action::ScaleCanary { up: false }),
        "{actions:?}"
    );
    // The primary stopped being ready: the target keeps serving.
    let (state, actions) = advance(&state, &spec, &obs(0), 10_000);
    assert_eq!(actions, []);
    let (state, actions) = advance(&state, &spec, &obs(2), 20_000);
    assert_eq!(actions, [Action::ScaleCanary { up: false }]);
    // Once only.
    let (_, actions) = advance(&state, &spec, &obs(2), 30_000);
    assert_eq!(actions, []);
}

#[test]
fn the_plan_and_the_core_agree_on_the_time_to_promotion() {
    let spec = canary_spec("stepWeights: [5, 10, 25, 50, 80]");
    let plan = plan(&spec);
    let mut d = Driver::new(spec.clone());
    let start = d.now;
    d.deploy("v2");
    d.run_until_done();
    assert_eq!(d.state.phase, Phase::Succeeded);
    assert_eq!(d.last_change - start, plan.shortest_promotion);
    assert_eq!(plan.analyses, 5, "one analysis at each of the five weights");
}

#[test]
fn a_failing_metric_rolls_back_after_exactly_threshold_failed_checks_with_the_reason() {
    let mut d = Driver::new(canary_spec("stepWeight: 20\n    threshold: 3"));
    d.success_rate = 95.0;
    d.deploy("v2");
    d.run_until_done();
    assert_eq!(d.state.phase, Phase::Failed);
    assert_eq!(d.state.failed_checks, 3);
    assert_eq!(d.state.canary_weight, 0);
    let last = d.messages().last().unwrap().clone();
    assert_eq!(
        last,
        "Rolling back app: failed checks threshold reached (3/3): request-success-rate 95.00% < 99% (min)"
    );
    assert!(d.actions().contains(&Action::ScaleCanary { up: false }));
}

#[test]
fn no_values_is_a_failed_check_that_says_the_canary_gets_no_traffic() {
    let mut d = Driver::new(canary_spec("stepWeight: 20\n    threshold: 2"));
    d.reading = Some(MetricReading::NoData {
        reason: "empty result".into(),
    });
    d.deploy("v2");
    d.run_until_done();
    assert_eq!(d.state.phase, Phase::Failed);
    assert!(d.messages().iter().any(|m| m.contains(
        "no values found for metric request-success-rate: probably app is not receiving traffic"
    )));
}

#[test]
fn a_canary_that_never_becomes_ready_is_rolled_back_at_the_progress_deadline() {
    let mut d = Driver::new(canary_spec("stepWeight: 20").with_deadline_seconds(120));
    d.canary_ready = false;
    d.deploy("v2");
    d.run_until_done();
    assert_eq!(d.state.phase, Phase::Failed);
    assert_eq!(
        d.messages().last().unwrap(),
        "Rolling back app: canary app not ready: 0/2 ready, need 100%; progress deadline of 2m exceeded"
    );
}

#[test]
fn confirm_rollout_holds_the_new_revision_in_waiting_until_the_hook_says_yes() {
    let mut d = Driver::new(canary_spec("stepWeight: 50").with_hook("gate", "confirm-rollout"));
    d.hook_answers
        .insert("gate".into(), HookOutcome::Failed("403 Forbidden".into()));
    d.deploy("v2");
    for _ in 0..3 {
        d.tick();
    }
    assert_eq!(d.state.phase, Phase::Waiting);
    assert_eq!(
        d.state.message,
        "waiting for approval: confirm-rollout hook gate said no: 403 Forbidden"
    );
    d.hook_answers.insert("gate".into(), HookOutcome::Passed);
    d.run_until_done();
    assert_eq!(d.state.phase, Phase::Succeeded);
}

#[test]
fn confirm_promotion_waits_and_an_operator_approval_opens_it() {
    let mut d = Driver::new(canary_spec("stepWeight: 50").with_hook("gate", "confirm-promotion"));
    d.hook_answers
        .insert("gate".into(), HookOutcome::Failed("closed".into()));
    d.deploy("v2");
    for _ in 0..6 {
        d.tick();
    }
    assert_eq!(d.state.phase, Phase::WaitingPromotion);
    assert_eq!(d.state.canary_weight, 100);
    d.command = Some(Command::Approve);
    d.tick();
    assert_eq!(d.state.phase, Phase::Promoting);
}

#[test]
fn confirm_traffic_increase_holds_the_weight_where_it_is() {
    let mut d =
        Driver::new(canary_spec("stepWeight: 25").with_hook("more", "confirm-traffic-increase"));
    d.deploy("v2");
    d.tick();
    assert_eq!(d.state.canary_weight, 25);
    d.hook_answers
        .insert("more".into(), HookOutcome::Failed("not yet".into()));
    for _ in 0..4 {
        d.tick();
    }
    assert_eq!(
        (d.state.phase, d.state.canary_weight),
        (Phase::Progressing, 25)
    );
}

#[test]
fn a_rollback_hook_that_answers_success_rolls_back_at_once() {
    let mut d = Driver::new(canary_spec("stepWeight: 10").with_hook("stop", "rollback"));
    d.hook_answers
        .insert("stop".into(), HookOutcome::Failed("no".into()));
    d.deploy("v2");
    d.tick();
    d.tick();
    d.tick();
    d.hook_answers.insert("stop".into(), HookOutcome::Passed);
    d.tick();
    assert_eq!(d.state.phase, Phase::Failed);
    assert_eq!(
        d.messages().last().unwrap(),
        "Rolling back app: rollback hook stop asked for a rollback"
    );
}

#[test]
fn an_abort_command_rolls_back_now() {
    let mut d = Driver::new(canary_spec("stepWeight: 10"));
    d.deploy("v2");
    d.tick();
    d.tick();
    d.command = Some(Command::Abort);
    d.tick();
    assert_eq!((d.state.phase, d.state.canary_weight), (Phase::Failed, 0));
}

#[test]
fn a_failing_pre_rollout_hook_is_a_failed_check_before_any_traffic_moves() {
    let mut d = Driver::new(
        canary_spec("stepWeight: 10\n    threshold: 2").with_hook("smoke", "pre-rollout"),
    );
    d.hook_answers
        .insert("smoke".into(), HookOutcome::Failed("exit status 1".into()));
    d.deploy("v2");
    d.run_until_done();
    assert_eq!(d.state.phase, Phase::Failed);
    assert!(d.route_weights().iter().all(|&w| w == 0));
    assert!(
        d.messages()
            .iter()
            .any(|m| m.contains("pre-rollout hook smoke failed: exit status 1"))
    );
}

#[test]
fn a_new_revision_during_analysis_restarts_from_weight_zero() {
    let mut d = Driver::new(canary_spec("stepWeight: 10\n    threshold: 5"));
    d.deploy("v2");
    for _ in 0..3 {
        d.tick();
    }
    assert_eq!(d.state.canary_weight, 30);
    d.success_rate = 90.0;
    d.tick();
    assert_eq!(d.state.failed_checks, 1);
    d.success_rate = 100.0;
    d.deploy("v3");
    assert_eq!((d.state.canary_weight, d.state.failed_checks), (0, 0));
    assert!(d.messages().last().unwrap().starts_with("Scaling up app"));
    d.run_until_done();
    assert_eq!(d.state.promoted_revision.as_deref(), Some("v3"));
}

#[test]
fn mirroring_comes_first_then_weights_shift() {
    let mut d = Driver::new(canary_spec(
        "stepWeight: 50\n    mirror: true\n    mirrorWeight: 30",
    ));
    d.deploy("v2");
    d.run_until_done();
    let routes: Vec<_> = d
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::SetRoutes { canary, mirror, .. } => Some((canary, mirror)),
            _ => None,
        })
        .collect();
    assert_eq!(routes, [(0, Some(30)), (50, None), (100, None), (0, None)]);
}

#[test]
fn blue_green_runs_its_iterations_then_switches_all_traffic_then_promotes() {
    let mut d = Driver::new(canary_spec("iterations: 3"));
    d.deploy("v2");
    let weights = d.run_until_done();
    assert_eq!(weights, [0, 100, 0]);
    assert_eq!(d.state.iterations, 3);
    assert!(
        d.messages()
            .iter()
            .any(|m| m == "Routing all traffic to canary app")
    );
    assert_eq!(d.state.phase, Phase::Succeeded);
}

#[test]
fn ab_testing_routes_matching_requests_to_the_canary_for_its_iterations() {
    let mut d = Driver::new(canary_spec(
        "iterations: 2\n    match: [{headers: {x-canary: {exact: insider}}}]",
    ));
    d.deploy("v2");
    d.tick();
    d.tick();
    assert!(d.state.matched);
    assert_eq!(d.state.canary_weight, 0);
    d.run_until_done();
    assert!(!d.state.matched);
    assert_eq!(d.state.phase, Phase::Succeeded);
}

#[test]
fn step_weight_promotion_moves_traffic_back_one_step_per_interval() {
    let mut d = Driver::new(canary_spec("stepWeight: 50\n    stepWeightPromotion: 40"));
    d.deploy("v2");
    let weights = d.run_until_done();
    assert_eq!(weights, [50, 100, 60, 20, 0]);
}

#[test]
fn skip_analysis_promotes_without_shifting_traffic() {
    let mut d = Driver::new(canary_spec("stepWeight: 10").with_skip_analysis());
    d.deploy("v2");
    let weights = d.run_until_done();
    assert_eq!(weights, [0]);
    assert_eq!(d.state.phase, Phase::Succeeded);
}

#[test]
fn a_suspended_canary_does_nothing_and_says_so_once() {
    let mut d = Driver::new(canary_spec("stepWeight: 10"));
    d.deploy("v2");
    d.tick();
    d.spec.suspend = true;
    let before = d.state.canary_weight;
    for _ in 0..5 {
        d.tick();
    }
    assert_eq!(d.state.canary_weight, before);
    let said = d
        .messages()
        .iter()
        .filter(|m| m.starts_with("rollout suspended"))
        .count();
    assert_eq!(said, 1);
    d.spec.suspend = false;
    d.run_until_done();
    assert_eq!(d.state.phase, Phase::Succeeded);
}

#[test]
fn deleting_the_canary_restores_routing_then_terminates() {
    let mut d = Driver::new(canary_spec("stepWeight: 10").with_revert_on_deletion());
    d.deploy("v2");
    d.tick();
    d.tick();
    d.deleting = true;
    d.tick();
    assert_eq!(d.state.phase, Phase::Terminating);
    assert!(d.actions().contains(&Action::Finalize { revert: true }));
    d.tick();
    assert_eq!(d.state.phase, Phase::Terminated);
}

#[test]
fn warnings_are_only_given_for_failed_checks_and_rollbacks() {
    let mut d = Driver::new(canary_spec("stepWeight: 25\n    threshold: 2"));
    d.success_rate = 98.0;
    d.deploy("v2");
    d.run_until_done();
    let warnings: Vec<String> = d
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Event {
                severity: Severity::Warning,
                message,
                ..
            } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 2);
    assert!(warnings[0].starts_with(
        "Halt app advancement: request-success-rate 98.00% < 99% (min) (failed checks 1/2)"
    ));
}

#[test]
fn a_regression_while_waiting_for_promotion_still_rolls_back() {
    let mut d = Driver::new(
        canary_spec("stepWeight: 50\n    threshold: 2").with_hook("gate", "confirm-promotion"),
    );
    d.hook_answers
        .insert("gate".into(), HookOutcome::Failed("closed".into()));
    d.deploy("v2");
    for _ in 0..4 {
        d.tick();
    }
    assert_eq!(d.state.phase, Phase::WaitingPromotion);
    d.success_rate = 90.0;
    d.run_until_done();
    assert_eq!((d.state.phase, d.state.failed_checks), (Phase::Failed, 2));
    assert!(!d.actions().contains(&Action::PromotePrimary));
}
