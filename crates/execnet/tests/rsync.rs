//! execnet::RSync against real popen workers: what arrives, what is skipped the second
//! time, delete, filter, symlinks, progress, and failures that stay with their target.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

use common::popen;
use execnet::{Progress, RSync, TargetOptions};

/// A source tree with nested directories, an empty and a big file, an executable, an
/// absolute symlink into the tree, a relative one, and a directory the filter drops.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("pkg/sub")).unwrap();
    std::fs::create_dir_all(root.join(".git/objects")).unwrap();
    std::fs::write(root.join("README"), b"hello\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("pkg/big.bin"), (0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()).unwrap();
    std::fs::write(root.join("pkg/sub/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("pkg/sub/run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(root.join(".git/objects/x"), b"not sent").unwrap();
    std::os::unix::fs::symlink(root.join("pkg/big.bin"), root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("pkg/sub", root.join("rel-link")).unwrap();
}

fn assert_same_file(a: &Path, b: &Path) {
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{}", b.display());
    let (ma, mb) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "mode of {}", b.display());
    assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()), "mtime of {}", b.display());
}

#[test]
fn a_tree_arrives_whole_at_every_target_and_only_changes_are_sent_again() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let a = execnet::makegateway(popen("")).unwrap();
    let b = execnet::makegateway(popen("")).unwrap();
    let (da, db) = (dst.path().join("a"), dst.path().join("b"));

    let mut sync = RSync::new(src.path());
    sync.filter(|path| !path.ends_with(".git"));
    sync.add_target(&a, da.to_str().unwrap()).add_target(&b, db.to_str().unwrap());
    let sent = Mutex::new(Vec::new());
    let reports: Vec<_> = sync
        .send_each(&|p| {
            if let Progress::Sent { gateway, path, bytes } = p {
                sent.lock().unwrap().push((gateway.to_string(), path.to_string(), bytes));
            }
        })
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(reports.len(), 2);
    for (report, dir, gw) in [(&reports[0], &da, &a), (&reports[1], &db, &b)] {
        assert_eq!(report.gateway, gw.id());
        assert_eq!((report.files_listed, report.files_sent), (4, 4), "{report:?}");
        assert_eq!(report.bytes_sent, 6 + 300_000 + 18);
        for file in ["README", "empty", "pkg/big.bin", "pkg/sub/run.sh"] {
            assert_same_file(&src.path().join(file), &dir.join(file));
        }
        assert!(!dir.join(".git").exists(), "the filter leaves .git out");
        assert_eq!(std::fs::read_link(dir.join("abs-link")).unwrap(), dir.join("pkg/big.bin"));
        assert_eq!(std::fs::read_link(dir.join("rel-link")).unwrap(), Path::new("pkg/sub"));
    }
    let mut sent = sent.into_inner().unwrap();
    sent.sort();
    assert_eq!(sent.len(), 8, "a Sent event per file and target");
    assert!(sent.contains(&(a.id().to_string(), "pkg/big.bin".to_string(), 300_000)));

    // Again: nothing changed, nothing sent. Then one file changes, and an extra file at
    // the target goes only with delete.
    let mut again = RSync::new(src.path());
    again.filter(|path| !path.ends_with(".git"));
    again.add_target(&a, da.to_str().unwrap());
    assert_eq!(again.send().unwrap()[0].files_sent, 0);

    std::fs::write(src.path().join("README"), b"hello again\n").unwrap();
    std::fs::write(da.join("stray"), b"x").unwrap();
    std::fs::write(db.join("stray"), b"x").unwrap();
    let mut third = RSync::new(src.path());
    third.filter(|path| !path.ends_with(".git"));
    third.add_target(&a, da.to_str().unwrap());
    third.add_target_with(&b, db.to_str().unwrap(), TargetOptions { delete: true });
    let reports = third.send().unwrap();
    assert_eq!((reports[0].files_sent, reports[1].files_sent), (1, 1));
    assert_same_file(&src.path().join("README"), &da.join("README"));
    assert!(da.join("stray").exists(), "kept without delete");
    assert!(!db.join("stray").exists(), "removed with delete");
    assert!(db.join("pkg/big.bin").exists());
}

#[test]
fn a_failing_target_fails_alone_and_bad_calls_are_errors() {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let dst = tempfile::tempdir().unwrap();
    let blocker = dst.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let gw = execnet::makegateway(popen("")).unwrap();

    let mut sync = RSync::new(src.path());
    sync.add_target(&gw, blocker.join("under-a-file").to_str().unwrap());
    sync.add_target(&gw, dst.path().join("fine").to_str().unwrap());
    let results = sync.send_each(&|_| {}).unwrap();
    let err = results[0].as_ref().unwrap_err().to_string();
    assert!(err.contains("NotADirectoryError") || err.contains("FileExistsError"), "{err}");
    assert_eq!(results[1].as_ref().unwrap().files_sent, 5, "the other target is served");
    // The gateway is still usable after the failure.
    let two: i64 = gw.remote_exec("channel.send(2)").unwrap().receive().unwrap();
    assert_eq!(two, 2);

    let err = RSync::new(src.path()).send().unwrap_err().to_string();
    assert!(err.contains("no targets"), "{err}");
    let mut missing = RSync::new(src.path().join("no-such-dir"));
    missing.add_target(&gw, "x");
    let err = missing.send().unwrap_err().to_string();
    assert!(err.contains("cannot read the source"), "{err}");
}

/// Several gateways of one machine synced into the same directory at once (what `execnet
/// rsync -x popen -x popen --dest D` does) each make the directories the others make
/// too: a directory that appears between the check and the mkdir is not an error.
#[test]
fn targets_sharing_a_directory_do_not_trip_over_each_others_directories() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    for i in 0..100 {
        let dir = src.path().join(format!("d{i}/e"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), format!("{i}")).unwrap();
    }
    let gateways: Vec<_> = (0..4).map(|_| execnet::makegateway(popen("")).unwrap()).collect();
    for round in 0..3 {
        let to = dst.path().join(format!("round{round}"));
        let mut sync = RSync::new(src.path());
        for gw in &gateways {
            sync.add_target(gw, to.to_str().unwrap());
        }
        for report in sync.send_each(&|_| {}).unwrap() {
            report.unwrap();
        }
        for i in 0..100 {
            assert_eq!(std::fs::read_to_string(to.join(format!("d{i}/e/f"))).unwrap(), i.to_string());
        }
    }
}
