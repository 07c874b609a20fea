//! Invariants of the rollout core over generated specs and observation sequences.

mod support;

use fledge_controller::analysis::MetricReading;
use fledge_controller::rollout::{
    Action, Command, HookOutcome, Phase, RolloutState, advance, plan, wants,
};
use fledge_controller::spec::{RolloutSpec, Strategy as Rollout};
use proptest::prelude::*;
use support::{Driver, SpecExt, canary_spec};

/// The analysis block of a valid spec: any strategy, threshold, gates and promotion style.
fn arbitrary_spec() -> impl Strategy<Value = RolloutSpec> {
    let ladder = prop_oneof![
        (1u8..=60, 1u8..=100).prop_map(|(step, max)| format!(
            "stepWeight: {step}\n    maxWeight: {}",
            max.max(step)
        )),
        prop::collection::btree_set(1u8..=100, 1..6).prop_map(|set| {
            let steps: Vec<String> = set.iter().map(|w| w.to_string()).collect();
            format!("stepWeights: [{}]", steps.join(", "))
        }),
    ];
    let strategy = prop_oneof![
        3 => (ladder, any::<bool>()).prop_map(|(l, mirror)| if mirror { format!("{l}\n    mirror: true") } else { l }),
        1 => (1u32..6, any::<bool>()).prop_map(|(n, mirror)| format!("iterations: {n}\n    mirror: {mirror}")),
        1 => (1u32..6).prop_map(|n| format!("iterations: {n}\n    match: [{{headers: {{user: {{exact: jason}}}}}}]")),
    ];
    let promotion = prop_oneof![
        Just(String::new()),
        (1u8..=100).prop_map(|s| format!("\n    stepWeightPromotion: {s}"))
    ];
    let gates = prop::collection::vec(
        prop::sample::select(vec![
            "confirm-rollout",
            "confirm-traffic-increase",
            "confirm-promotion",
            "pre-rollout",
            "rollout",
            "rollback",
        ]),
        0..3,
    );
    (strategy, 1u32..6, promotion, gates, 1u64..20).prop_map(
        |(strategy, threshold, promotion, gates, deadline)| {
            let mut spec = canary_spec(&format!(
                "{strategy}\n    threshold: {threshold}{promotion}"
            ));
            for (i, gate) in gates.iter().enumerate() {
                spec = spec.with_hook(&format!("hook{i}"), gate);
            }
            spec.with_deadline_seconds(deadline * 60)
        },
    )
}

/// What the world looks like on one tick.
#[derive(Clone, Debug)]
struct Weather {
    success_rate: f64,
    no_data: bool,
    canary_ready: bool,
    hooks_pass: bool,
    new_revision: bool,
    command: Option<Command>,
}

fn arbitrary_weather() -> impl Strategy<Value = Weather> {
    (
        prop_oneof![3 => Just(100.0), 1 => 90.0..99.0f64],
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.03),
        prop_oneof![20 => Just(None), 1 => Just(Some(Command::Approve)), 1 => Just(Some(Command::Abort))],
    )
        .prop_map(|(success_rate, no_data, canary_ready, hooks_pass, new_revision, command)| Weather {
            success_rate,
            no_data,
            canary_ready,
            hooks_pass,
            new_revision,
            command,
        })
}

impl Driver {
    fn weather(&mut self, w: &Weather, revision: &mut u32) {
        self.success_rate = w.success_rate;
        self.reading = w.no_data.then(|| MetricReading::NoData {
            reason: "empty".into(),
        });
        self.canary_ready = w.canary_ready;
        let answer = if w.hooks_pass {
            HookOutcome::Passed
        } else {
            HookOutcome::Failed("no".into())
        };
        for h in &self.spec.webhooks {
            // A rollback hook "passing" asks for a rollback: keep that rare.
            let a = if h.gate.as_str() == "rollback" {
                HookOutcome::Failed("no".into())
            } else {
                answer.clone()
            };
            self.hook_answers.insert(h.name.clone(), a);
        }
        if w.new_revision {
            *revision += 1;
            self.revision = format!("v{revision}");
        }
        self.command = w.command;
    }
}

fn max_weight(spec: &RolloutSpec) -> u8 {
    match &spec.strategy {
        Rollout::Canary { .. } => spec.strategy.max_weight(),
        Rollout::BlueGreen { .. } => 100,
        Rollout::AbTesting { .. } => 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn weights_stay_in_range_sum_to_100_and_never_exceed_max_weight(
        spec in arbitrary_spec(),
        weather in prop::collection::vec(arbitrary_weather(), 1..80),
    ) {
        let max = max_weight(&spec);
        let mut d = Driver::new(spec);
        d.deploy("v2");
        let mut revision = 2;
        for w in &weather {
            d.weather(w, &mut revision);
            let failed_before = d.state.phase == Phase::Failed;
            let revision_before = d.state.revision.clone();
            for a in d.tick() {
                if let Action::SetRoutes { primary, canary, mirror, .. } = a {
                    prop_assert_eq!(primary as u16 + canary as u16, 100);
                    prop_assert!(canary <= max, "canary {} > max {}", canary, max);
                    prop_assert!(mirror.is_none_or(|m| (1..=100).contains(&m)));
                    // After a rollback, traffic stays off the canary until a new revision.
                    if failed_before && d.state.revision == revision_before {
                        prop_assert_eq!(canary, 0);
                    }
                }
            }
            prop_assert!(d.state.canary_weight <= 100);
            if d.state.phase == Phase::Failed {
                prop_assert_eq!(d.state.canary_weight, 0);
                prop_assert_eq!(d.state.mirror, None);
            }
        }
    }

    #[test]
    fn restoring_the_serialised_state_at_any_tick_changes_no_decision(
        spec in arbitrary_spec(),
        weather in prop::collection::vec(arbitrary_weather(), 1..60),
    ) {
        let mut d = Driver::new(spec);
        d.deploy("v2");
        let mut revision = 2;
        for w in &weather {
            d.weather(w, &mut revision);
            let obs = d.observe();
            let json = serde_json::to_string(&d.state).unwrap();
            let restored: RolloutState = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&restored, &d.state);
            prop_assert_eq!(wants(&restored, &d.spec, d.now), wants(&d.state, &d.spec, d.now));
            let direct = advance(&d.state, &d.spec, &obs, d.now);
            let resumed = advance(&restored, &d.spec, &obs, d.now);
            prop_assert_eq!(&direct, &resumed);
            d.tick();
        }
    }

    #[test]
    fn a_canary_failing_every_check_is_rolled_back_after_exactly_threshold_and_never_promoted(
        spec in arbitrary_spec(),
        rate in 0.0..98.9f64,
    ) {
        let threshold = spec.threshold;
        let mut d = Driver::new(spec);
        d.success_rate = rate;
        d.deploy("v2");
        d.run_until_done();
        prop_assert_eq!(d.state.phase, Phase::Failed);
        prop_assert_eq!(d.state.failed_checks, threshold);
        prop_assert!(!d.actions().contains(&Action::PromotePrimary));
        prop_assert_eq!(d.state.canary_weight, 0);
    }

    #[test]
    fn a_canary_passing_every_check_is_promoted_after_the_steps_its_spec_implies(spec in arbitrary_spec()) {
        // Flagger's counts: one analysis per rung of the ladder (plus the mirrored step); per
        // iteration plus the one that promotes (A/B); and for blue/green, one more before
        // that with all traffic on the canary.
        let expected_analyses = match &spec.strategy {
            Rollout::Canary { steps, mirror } => steps.len() + usize::from(mirror.is_some()),
            Rollout::BlueGreen { iterations, .. } => *iterations as usize + 2,
            Rollout::AbTesting { iterations, .. } => *iterations as usize + 1,
        };
        let mut d = Driver::new(spec);
        d.deploy("v2");
        let mut analyses = 0;
        for _ in 0..500 {
            if d.state.phase == Phase::Succeeded {
                break;
            }
            analyses += usize::from(wants(&d.state, &d.spec, d.now).metrics);
            d.tick();
        }
        prop_assert_eq!(d.state.phase, Phase::Succeeded);
        prop_assert_eq!(analyses, expected_analyses);
        prop_assert_eq!(d.state.failed_checks, 0);
        prop_assert_eq!(d.actions().iter().filter(|a| **a == Action::PromotePrimary).count(), 1);
        prop_assert_eq!(d.state.canary_weight, 0);
    }

    #[test]
    fn the_plan_of_any_valid_spec_ends_promoted_with_its_last_step_as_the_shortest_time(
        spec in arbitrary_spec(),
    ) {
        let p = plan(&spec);
        let last = p.steps.last().expect("a plan has steps");
        prop_assert_eq!(last.phase, Phase::Succeeded);
        prop_assert_eq!(last.at, p.shortest_promotion);
        prop_assert!(p.steps.windows(2).all(|w| w[0].at <= w[1].at));
    }
}
