//! `stream.blurry`: blurry task boundaries of split streams, and what they refuse.

use super::*;

fn with(text: &str, lines: &str) -> String {
    text.replace("tasks = 5\n", &format!("tasks = 5\n{lines}\n"))
}

fn refusal(text: &str) -> (String, String, String) {
    match load(text).unwrap_err() {
        ConfigError::Invalid {
            origin,
            key,
            message,
        } => (origin, key, message),
        err => panic!("not a validation error: {err}"),
    }
}

#[test]
fn blurry_is_absent_by_default_and_kept_out_of_the_resolved_config() {
    let exp = load(SPLIT_MNIST).unwrap();
    assert_eq!(exp.stream.blurry, None);
    assert_eq!(exp.plan().unwrap().stream().blurry(), None);
    assert!(!exp.to_resolved_toml().contains("blurry"));
}

#[test]
fn a_blurry_split_stream_plans_and_round_trips() {
    for (text, percent) in [
        ("blurry = 10", 10.0),
        ("blurry = 2.5", 2.5),
        ("blurry = 0", 0.0),
    ] {
        let exp = load(&with(SPLIT_MNIST, text)).unwrap();
        assert_eq!(exp.stream.blurry, Some(percent), "{text}");
        assert_eq!(exp.plan().unwrap().stream().blurry(), Some(percent));
        let resolved = exp.to_resolved_toml();
        assert!(resolved.contains("blurry = "), "{resolved}");
        assert_eq!(load(&resolved).unwrap(), exp);
    }
    let set =
        Experiment::from_source(SPLIT_MNIST, "exp.toml", &["stream.blurry=30".into()]).unwrap();
    assert_eq!(set.stream.blurry, Some(30.0));
}

#[test]
fn blurry_outside_0_to_100_is_refused_naming_the_key() {
    for bad in ["-1", "100.5", "250", "nan"] {
        let (origin, key, message) = refusal(&with(SPLIT_MNIST, &format!("blurry = {bad}")));
        assert_eq!(key, "stream.blurry", "{bad}");
        assert!(message.contains("outside [0, 100]"), "{bad}: {message}");
        assert!(origin.starts_with("exp.toml:"), "{origin}");
    }
    assert_eq!(
        load(&with(SPLIT_MNIST, "blurry = 100"))
            .unwrap()
            .stream
            .blurry,
        Some(100.0)
    );
}

#[test]
fn blurry_needs_a_split_stream_of_several_tasks() {
    let (_, key, message) = refusal(&PERMUTED.replace("tasks = 20", "tasks = 20\nblurry = 10"));
    assert_eq!(key, "stream.blurry");
    assert!(message.contains("split streams only"), "{message}");

    let one_task = with(SPLIT_MNIST, "blurry = 10").replace("tasks = 5", "tasks = 1");
    let (_, key, message) = refusal(&one_task);
    assert_eq!(key, "stream.blurry");
    assert!(message.contains("one task"), "{message}");
    // Nothing to move: allowed.
    let none_moved = with(SPLIT_MNIST, "blurry = 0").replace("tasks = 5", "tasks = 1");
    assert_eq!(load(&none_moved).unwrap().stream.blurry, Some(0.0));
}
