//! The `retain data fetch` command that error messages embed, quoted for the shell.

use std::path::{Component, Path};

/// The shell command that fetches `name` into `root`.
///
/// Error messages embed it so a missing or corrupt dataset is one copy-paste
/// away from fixed; `--root` is added only when `root` is not the default
/// `datasets` relative to the current directory.
pub fn fetch_command(name: &str, root: &Path) -> String {
    let mut cmd = format!("retain data fetch {name}");
    if !is_default_root(root) {
        cmd.push_str(" --root ");
        cmd.push_str(&shell_quote(&root.display().to_string()));
    }
    cmd
}

fn is_default_root(root: &Path) -> bool {
    let comps: Vec<Component> = root
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    if comps.len() == 1 && comps[0] == Component::Normal("datasets".as_ref()) {
        return true;
    }
    root.is_absolute() && std::env::current_dir().is_ok_and(|cwd| cwd.join("datasets") == root)
}

fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:=@,%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_command_adds_root_only_when_not_default() {
        assert_eq!(
            fetch_command("mnist", Path::new("datasets")),
            "retain data fetch mnist"
        );
        assert_eq!(
            fetch_command("mnist", Path::new("./datasets/")),
            "retain data fetch mnist"
        );
        assert_eq!(
            fetch_command("mnist", Path::new("/data/sets")),
            "retain data fetch mnist --root /data/sets"
        );
        assert_eq!(
            fetch_command("fashion-mnist", Path::new("my data")),
            "retain data fetch fashion-mnist --root 'my data'"
        );
    }
}
