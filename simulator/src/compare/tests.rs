use super::*;

fn tally(decided: Decided) -> Tally {
    Tally {
        decided,
        decision_ms: Some(60_000),
        canary_failures: 0,
    }
}

#[test]
fn a_rollback_is_on_evidence_by_thresholds_or_at_the_deadline_as_the_cores_message_says() {
    let rolled_back = |message: &str| Decided::of(Outcome::RolledBack, message);
    assert_eq!(
        rolled_back("Rolling back app: canary regressed: request-success-rate: e-value 250"),
        Decided::RolledBack
    );
    // A threshold judge's own failed checks are its evidence.
    assert_eq!(
        rolled_back(
            "Rolling back app: failed checks threshold reached (5/5): request-success-rate 97.00% < 99% (min)"
        ),
        Decided::RolledBack
    );
    assert_eq!(
        rolled_back(&format!(
            "Rolling back app: failed checks threshold reached (5/5), {JUDGED_BY_THRESHOLDS}: request-success-rate 97.00% < 99% (min)"
        )),
        Decided::Thresholds
    );
    assert_eq!(
        rolled_back(
            "Rolling back app: not enough traffic to judge: 12 requests, need 100; held for the progress deadline of 10m"
        ),
        Decided::Deadline
    );
    assert_eq!(
        Decided::of(Outcome::Promoted, "Promotion completed"),
        Decided::Promoted
    );
    assert!(Decided::Thresholds.is_rollback() && !Decided::Undecided.is_rollback());
}

#[test]
fn rollbacks_by_thresholds_have_a_column_of_their_own_in_every_table_and_count_in_the_total() {
    let tallies = [
        tally(Decided::Promoted),
        tally(Decided::Promoted),
        tally(Decided::RolledBack),
        tally(Decided::Thresholds),
    ];
    let s = Summary::of(&tallies);
    assert_eq!(
        (s.rolled_back, s.thresholds, s.rolled_back_all),
        (0.25, 0.25, 0.5)
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["thresholds"], 0.25, "{json}");
    assert!(json["thresholds_95"].is_array(), "{json}");

    let summaries = vec![("scenario".to_string(), s)];
    let markdown = render_markdown("case", &summaries);
    let mut lines = markdown.lines();
    let header = lines.next().unwrap();
    assert!(
        header.contains(
            "| rolled back, all [95%] | of which by thresholds [95%] | of which at deadline [95%] |"
        ),
        "{header}"
    );
    let columns = header.matches('|').count();
    for line in lines {
        assert_eq!(line.matches('|').count(), columns, "{line}");
    }
    assert!(
        markdown.contains("| 50.0% [15.0, 85.0] | 25.0% [4.6, 69.9] | 0.0% [0.0, 49.0] |"),
        "{markdown}"
    );

    let text = render(&summaries);
    assert!(text.contains("by thresholds² [95%]"), "{text}");
    assert!(text.contains("² by the metrics' thresholds"), "{text}");
}
