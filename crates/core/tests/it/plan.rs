use sidecar_core::*;

use crate::harness::nodes;

#[test]
fn plan_lists_each_step_with_its_nodes() {
    let rendered: Vec<String> = plan(&runbooks::backup("bs1", &nodes()))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(rendered.len(), 5);
    assert!(
        rendered[0].starts_with("apps") && rendered[0].contains("backup on app1"),
        "{}",
        rendered[0]
    );
    assert!(rendered[1].contains("on p1, m1"), "{}", rendered[1]);
    assert!(rendered[2].contains("barrier"));
    assert!(rendered[3].contains("on s1"));
}

#[test]
fn plan_shows_that_unguardable_steps_get_one_attempt() {
    let runbook = Runbook::new("x")
        .action("import", ActionKind::ImportPartyAcs, &nodes()[1..2])
        .retry(5, 0)
        .fix_forward()
        .done();
    let planned = &plan(&runbook)[0];
    assert_eq!(planned.max_attempts, 1);
    assert_eq!(planned.idempotency, Some(Idempotency::Unguardable));
    assert!(planned.to_string().contains("never retried automatically"));
    assert!(planned.to_string().contains("fix forward"));
}
