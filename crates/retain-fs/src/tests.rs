use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn writes_replace_the_destination_and_leave_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    write_atomically(&path, b"first").unwrap();
    write_atomically(&path, b"second").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second");
    assert_eq!(names(dir.path()), ["manifest.json"]);
}

#[test]
fn a_failing_writer_keeps_the_old_file_and_removes_its_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accuracy.parquet");
    write_atomically(&path, b"old").unwrap();
    let result = write_atomically_with(&path, |tmp| {
        fs::write(tmp, b"half").unwrap();
        Err::<(), _>("encoder failed")
    });
    assert!(matches!(result, Err(AtomicError::Writer("encoder failed"))));
    assert_eq!(fs::read(&path).unwrap(), b"old");
    assert_eq!(names(dir.path()), ["accuracy.parquet"]);
}

#[test]
fn errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = write_atomically(&dir.path().join("no/such/dir/m.json"), b"x").unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn temporaries_are_recognised() {
    let staged = Staged::new(Path::new("/runs/a/manifest.json")).unwrap();
    let name = staged.temporary().file_name().unwrap().to_str().unwrap();
    assert!(is_temporary(name), "{name}");
    assert!(!is_temporary("manifest.json"));
    assert!(!is_temporary(".hidden"));
}

/// The child half of the crash test: stages a manifest and aborts before the rename.
const CRASH_CHILD: &str = "RETAIN_FS_CRASH_CHILD_DIR";

#[test]
fn crash_child_stages_then_aborts() {
    let Some(dir) = std::env::var_os(CRASH_CHILD) else {
        return; // Only meaningful in the child process the crash test starts.
    };
    let path = PathBuf::from(dir).join("manifest.json");
    let staged = Staged::new(&path).unwrap();
    fs::write(staged.temporary(), br#"{"status":"complete"}"#).unwrap();
    std::process::abort();
}

#[test]
fn a_crash_between_write_and_rename_leaves_the_old_file_and_a_skippable_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    write_atomically(&path, br#"{"status":"running"}"#).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::crash_child_stages_then_aborts",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must have crashed");
    assert_eq!(fs::read(&path).unwrap(), br#"{"status":"running"}"#);
    let left: Vec<String> = names(dir.path())
        .into_iter()
        .filter(|n| n != "manifest.json")
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(is_temporary(&left[0]), "{left:?}");
}
