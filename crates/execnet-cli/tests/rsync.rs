//! `execnet rsync`, run as a user would, to popen gateways on this machine.

use std::path::Path;
use std::process::{Command, Output};

fn execnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_execnet")).args(args).output().expect("running execnet")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("pkg/.git")).unwrap();
    std::fs::create_dir_all(root.join("build/tmp")).unwrap();
    std::fs::write(root.join("pkg/mod.py"), b"x = 1\n").unwrap();
    std::fs::write(root.join("pkg/mod.pyc"), b"compiled").unwrap();
    std::fs::write(root.join("pkg/.git/HEAD"), b"ref").unwrap();
    std::fs::write(root.join("build/tmp/junk"), b"junk").unwrap();
    std::fs::write(root.join("build/keep"), b"keep").unwrap();
    std::fs::write(root.join("data.bin"), vec![7u8; 200_000]).unwrap();
}

#[test]
fn rsync_sends_the_tree_to_every_host_with_excludes_and_delete() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let (a, b) = (dst.path().join("a"), dst.path().join("b"));
    let src_arg = src.path().to_str().unwrap();
    let dest_a = a.to_str().unwrap();
    let out = execnet(&[
        "rsync", src_arg, "--dest", dest_a, "-x", "popen", "-x", "popen//id=other",
        "--exclude", ".git", "--exclude", "*.pyc", "--exclude", "build/tmp",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("rsync to ") && err.contains("on 2 gateways") && err.contains("2 ok"), "{err}");
    assert!(err.contains("gw0") && err.contains("other"), "a line per host: {err}");
    assert_eq!(std::fs::read(a.join("pkg/mod.py")).unwrap(), b"x = 1\n");
    assert_eq!(std::fs::read(a.join("data.bin")).unwrap().len(), 200_000);
    assert!(a.join("build/keep").exists());
    for left_out in ["pkg/.git", "pkg/mod.pyc", "build/tmp"] {
        assert!(!a.join(left_out).exists(), "{left_out} is excluded");
    }

    // The second time nothing is sent; --delete removes what the source does not have.
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("stray"), b"").unwrap();
    let out = execnet(&["rsync", src_arg, "--dest", dest_a, "-x", "popen", "--exclude", ".git"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("2 of 5 files sent"), "only the .pyc and build/tmp/junk were missing: {err}");
    let out = execnet(&["rsync", src_arg, "--dest", b.to_str().unwrap(), "-x", "popen", "--delete"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!b.join("stray").exists(), "--delete removed it");
    assert!(b.join("pkg/.git/HEAD").exists());
}

#[test]
fn rsync_reports_each_host_and_fails_with_status_2_for_an_unreachable_one() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let dest = dst.path().join("x");
    let out = execnet(&[
        "rsync", src.path().to_str().unwrap(), "--dest", dest.to_str().unwrap(),
        "-x", "popen", "-x", "popen//python=execnet-no-such-python",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("1 ok, 1 unreachable"), "{err}");
    assert!(err.contains("execnet-no-such-python"), "{err}");
    assert!(dest.join("data.bin").exists(), "the reachable host got the tree");

    // A destination the receiver cannot make: a remote error, status 1.
    let blocker = dst.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let out = execnet(&[
        "rsync", src.path().to_str().unwrap(), "--dest", blocker.join("sub").to_str().unwrap(), "-x", "popen",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("remote error") && err.contains("NotADirectoryError"), "{err}");
}

#[test]
fn rsync_usage_errors_are_status_2() {
    let file = tempfile::NamedTempFile::new().unwrap();
    for (args, says) in [
        (vec!["rsync", "/no/such/dir/here"], "cannot read /no/such/dir/here"),
        (vec!["rsync", file.path().to_str().unwrap()], "is not a directory"),
        (vec!["rsync", "/tmp", "--exclude", "a["], "--exclude \"a[\""),
        (vec!["rsync", "/tmp", "-x", "popen//nice=x"], "nice"),
    ] {
        let out = execnet(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
