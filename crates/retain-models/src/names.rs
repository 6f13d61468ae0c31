//! Selecting variables by their stable names.
//!
//! Methods that train only part of a model (BitFit, LoRA's targets, name-pattern fine-tuning,
//! gradual unfreezing) pick variables with glob patterns over the names of the crate docs:
//! `hidden.1.*` is every variable of the MLP's second hidden layer, `*.bias` every bias,
//! `layer4.*` the last stage of a ResNet. [`matches()`] is the one matcher they share, and
//! [`abbreviated`] lists a model's names in the error a pattern that matches nothing gets.

/// Whether `name` matches `pattern`, where `*` matches any run of characters (also empty,
/// and across `.`) and every other character only itself. `hidden.1` matches `hidden.1` but
/// not `hidden.10`; `hidden.*` matches `hidden.0.weight` but not `head.weight`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, rest)) => {
            let Some(tail) = name.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| matches(rest, &tail[i..]))
        }
    }
}

/// Whether `name` matches any of `patterns`.
pub fn matches_any<S: AsRef<str>>(patterns: &[S], name: &str) -> bool {
    patterns.iter().any(|p| matches(p.as_ref(), name))
}

/// `names` joined with `, ` for an error message, cut after `limit` names with the count of
/// the rest (`a, b, c, … (57 more)`), so that a ResNet's hundred-odd names do not bury the
/// message.
pub fn abbreviated<S: AsRef<str>>(names: &[S], limit: usize) -> String {
    let shown: Vec<&str> = names.iter().take(limit).map(AsRef::as_ref).collect();
    let mut text = shown.join(", ");
    if names.len() > limit {
        text.push_str(&format!(", … ({} more)", names.len() - limit));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run_of_characters() {
        assert!(matches("hidden.*", "hidden.0"));
        assert!(matches("hidden.*", "hidden.0.weight"));
        assert!(matches("hidden.1", "hidden.1"));
        assert!(!matches("hidden.1", "hidden.10"));
        assert!(matches("*.0", "hidden.0"));
        assert!(matches("layer*.conv*", "layer2.conv1"));
        assert!(matches("*.bias", "layer1.0.bn1.bias"));
        assert!(!matches("*.bias", "layer1.0.bn1.weight"));
        assert!(matches("layer4.1.*", "layer4.1.shortcut.0.weight"));
        assert!(matches("blocks.*.attn.*", "blocks.3.attn.qkv.weight"));
        assert!(!matches("hidden.*", "head"));
        assert!(!matches("head.*", "head"));
        assert!(matches("*", ""));
        assert!(matches("**", "x"));
        assert!(!matches("", "x"));
    }

    #[test]
    fn star_respects_character_boundaries() {
        assert!(matches("é*ü", "éxü"));
        assert!(matches("*ü", "ü"));
        assert!(!matches("*ü", "u"));
    }

    #[test]
    fn any_of_several_patterns() {
        assert!(matches_any(&["head.*", "*.bias"], "hidden.0.bias"));
        assert!(!matches_any(&["head.*", "*.bias"], "hidden.0.weight"));
        assert!(!matches_any::<&str>(&[], "head.weight"));
    }

    #[test]
    fn long_lists_are_cut_with_a_count() {
        assert_eq!(abbreviated(&["a", "b"], 5), "a, b");
        assert_eq!(abbreviated(&["a", "b", "c"], 3), "a, b, c");
        assert_eq!(abbreviated(&["a", "b", "c", "d"], 2), "a, b, … (2 more)");
        assert_eq!(abbreviated::<&str>(&[], 2), "");
    }
}
