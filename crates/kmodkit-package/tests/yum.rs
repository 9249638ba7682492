//! `repodata/` against createrepo_c: the same packages (jool's kmod and
//! kernel-only packages from the fixtures, synthetic ones with every
//! dependency kind) in two directories, one indexed by
//! `kmodkit_package::yum::write_repository`, one by `createrepo_c`; every
//! package entry of primary, filelists and other compared field by field,
//! and the uncompressed documents byte for byte. Then the incremental run,
//! reproducibility, the signature (gpgv), and the time against
//! createrepo_c on 120 packages.

#[path = "yum_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use kmodkit_package::yum::{write_repository, YumOptions};
use support::*;

/// (type, href, checksum, open-checksum, size, open-size) of repomd.xml.
fn repomd_records(dir: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("repodata/repomd.xml")).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let mut out = BTreeMap::new();
    for data in doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("data"))
    {
        let mut fields = BTreeMap::new();
        for c in data.children().filter(|n| n.is_element()) {
            let name = c.tag_name().name().to_string();
            let value = match name.as_str() {
                "location" => c.attribute("href").unwrap_or("").to_string(),
                _ => c.text().unwrap_or("").to_string(),
            };
            fields.insert(name, value);
        }
        out.insert(data.attribute("type").unwrap().to_string(), fields);
    }
    out
}

fn document(dir: &Path, kind: &str) -> String {
    let records = repomd_records(dir);
    let href = &records[kind]["location"];
    let gz = std::fs::read(dir.join(href)).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// An element as a canonical line list: path, attributes, text.
fn flatten(node: roxmltree::Node, path: &str, out: &mut Vec<String>) {
    let here = format!("{path}/{}", node.tag_name().name());
    let mut attrs: Vec<String> = node
        .attributes()
        .map(|a| format!("{}={:?}", a.name(), a.value()))
        .collect();
    attrs.sort();
    let text: String = node
        .children()
        .filter(|c| c.is_text())
        .map(|c| c.text().unwrap_or(""))
        .collect::<String>();
    let text = if node.children().any(|c| c.is_element()) {
        String::new()
    } else {
        text
    };
    out.push(format!("{here} [{}] {text:?}", attrs.join(" ")));
    for c in node.children().filter(|c| c.is_element()) {
        flatten(c, &here, out);
    }
}

/// pkgid -> the package's flattened entry.
fn packages(doc: &str) -> BTreeMap<String, Vec<String>> {
    let doc = roxmltree::Document::parse(doc).unwrap();
    let mut out = BTreeMap::new();
    for p in doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("package"))
    {
        let id = p.attribute("pkgid").map(str::to_string).unwrap_or_else(|| {
            p.children()
                .find(|c| c.has_tag_name("checksum"))
                .and_then(|c| c.text())
                .unwrap()
                .to_string()
        });
        let mut lines = Vec::new();
        flatten(p, "", &mut lines);
        out.insert(id, lines);
    }
    out
}

fn fill(dir: &Path, count: usize, key: Option<&kmodkit_package::pgp::RepoKey>) {
    let (_, jool) = jool_packages(key);
    for p in &jool {
        put(dir, &p.file_name, &p.bytes);
    }
    for i in 0..count {
        // One in a subdirectory: location href keeps the path.
        let name = if i == 2 {
            format!("sub/synthetic-{i:03}.rpm")
        } else {
            format!("synthetic-{i:03}.rpm")
        };
        put(dir, &name, &synthetic(i, key));
    }
}

#[test]
fn metadata_matches_createrepo_c_entry_by_entry() {
    kmodkit_fixtures::require_tool("createrepo_c", "createrepo-c");
    let tmp = tempfile::tempdir().unwrap();
    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    let key = key();
    fill(&ours, 6, Some(&key));
    fill(&theirs, 6, Some(&key));
    let report = write_repository(
        &ours,
        &YumOptions {
            time: TIME,
            key: Some(&key),
        },
    )
    .unwrap();
    assert_eq!((report.packages, report.read, report.reused), (8, 8, 0));
    // --no-database: kmodkit writes no sqlite (dnf reads the XML only).
    run(Command::new("createrepo_c")
        .arg("--no-database")
        .arg(&theirs));

    for kind in ["primary", "filelists", "other"] {
        let (a, b) = (document(&ours, kind), document(&theirs, kind));
        let (pa, pb) = (packages(&a), packages(&b));
        assert_eq!(pa.len(), 8, "{kind}: package count");
        assert_eq!(
            pa.keys().collect::<Vec<_>>(),
            pb.keys().collect::<Vec<_>>(),
            "{kind}: pkgids"
        );
        for (id, lines) in &pa {
            let theirs = &pb[id];
            for (i, (x, y)) in lines.iter().zip(theirs).enumerate() {
                assert_eq!(x, y, "{kind} {id} line {i}: kmodkit vs createrepo_c");
            }
            assert_eq!(lines.len(), theirs.len(), "{kind} {id}: entry length");
        }
        // The file names sort like (name, EVR, arch), so createrepo_c's
        // order is kmodkit's and the documents are the same bytes.
        assert!(
            a == b,
            "{kind}: documents differ in formatting\n--- kmodkit\n{a}\n--- createrepo_c\n{b}"
        );
    }
    // The pre="1" of the %pre's /bin/sh, the libc filter, the
    // self-satisfied requires: present in the oracle's output, so compared.
    let primary = document(&theirs, "primary");
    assert!(primary.contains("<rpm:entry name=\"/bin/sh\" pre=\"1\"/>"));
    assert!(primary.contains("flags=\"GE\" epoch=\"2\" ver=\"2.34\" rel=\"1\""));
    assert!(
        primary.contains("<file type=\"dir\">")
            || document(&theirs, "filelists").contains("<file type=\"dir\">")
    );

    // repomd.xml: what legitimately differs is the revision and timestamps
    // (createrepo_c uses the current time), the compressed files' checksums,
    // sizes and names (another gzip implementation); the uncompressed
    // checksums and sizes must agree.
    let (ra, rb) = (repomd_records(&ours), repomd_records(&theirs));
    assert_eq!(ra.keys().collect::<Vec<_>>(), rb.keys().collect::<Vec<_>>());
    for (kind, fields) in &ra {
        for f in ["open-checksum", "open-size"] {
            assert_eq!(fields[f], rb[kind][f], "repomd {kind} {f}");
        }
        assert_eq!(
            fields.keys().collect::<Vec<_>>(),
            rb[kind].keys().collect::<Vec<_>>(),
            "repomd {kind} elements"
        );
        assert_eq!(fields["timestamp"], TIME.to_string());
        assert_eq!(
            fields["location"],
            format!("repodata/{}-{kind}.xml.gz", fields["checksum"])
        );
    }
    let text = std::fs::read_to_string(ours.join("repodata/repomd.xml")).unwrap();
    assert!(text.contains(&format!("<revision>{TIME}</revision>")));

    // The signature: gpgv with the public key only.
    let keyring = tmp.path().join("key.gpg");
    std::fs::write(&keyring, key.public_binary().unwrap()).unwrap();
    let sig = report.signature.clone().unwrap();
    run(Command::new("gpgv")
        .arg("--keyring")
        .arg(&keyring)
        .arg(&sig)
        .arg(&report.repomd));
    let armored = std::fs::read_to_string(&sig).unwrap();
    assert!(
        armored.starts_with("-----BEGIN PGP SIGNATURE-----"),
        "{armored}"
    );
}

#[test]
fn incremental_runs_read_only_new_packages_and_runs_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let opts = YumOptions {
        time: TIME,
        key: Some(&key),
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fill(&a, 4, Some(&key));
    let first = write_repository(&a, &opts).unwrap();
    assert_eq!((first.packages, first.read, first.reused), (6, 6, 0));
    let before = repodata_files(&a);

    // Nothing changed: nothing read, the same bytes.
    let again = write_repository(&a, &opts).unwrap();
    assert_eq!((again.read, again.reused), (0, 6));
    assert_eq!(repodata_files(&a), before);

    // One new package: one read, the rest from the cache.
    put(&a, "new/synthetic-900.rpm", &synthetic(900, Some(&key)));
    let third = write_repository(&a, &opts).unwrap();
    assert_eq!((third.packages, third.read, third.reused), (7, 1, 6));
    // The metadata of a fresh full run elsewhere: the same bytes, and the
    // old metadata files are gone.
    fill(&b, 4, Some(&key));
    put(&b, "new/synthetic-900.rpm", &synthetic(900, Some(&key)));
    let full = write_repository(&b, &opts).unwrap();
    assert_eq!((full.read, full.reused), (7, 0));
    let (fa, fb) = (repodata_files(&a), repodata_files(&b));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "file names"
    );
    assert!(fa == fb, "incremental and full runs differ");
    assert_eq!(
        fa.len(),
        5,
        "3 documents, repomd.xml, .asc: {:?}",
        fa.keys()
    );

    // A package rewritten in place (same name) is read again.
    put(&a, "synthetic-001.rpm", &synthetic(901, Some(&key)));
    let fourth = write_repository(&a, &opts).unwrap();
    assert_eq!((fourth.read, fourth.reused), (1, 6));

    // Unsigned now: the stale signature goes.
    let unsigned = write_repository(
        &a,
        &YumOptions {
            time: TIME,
            key: None,
        },
    )
    .unwrap();
    assert!(unsigned.signature.is_none());
    assert!(!a.join("repodata/repomd.xml.asc").exists());

    // A broken package is an error naming it, and the repository stays.
    let before = repodata_files(&a);
    put(&a, "broken.rpm", b"not an rpm");
    let err = write_repository(&a, &opts).unwrap_err().to_string();
    assert!(err.contains("broken.rpm"), "{err}");
    assert_eq!(repodata_files(&a), before);
}

#[test]
fn time_against_createrepo_c() {
    kmodkit_fixtures::require_tool("createrepo_c", "createrepo-c");
    let tmp = tempfile::tempdir().unwrap();
    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    let key = key();
    for i in 0..150 {
        let bytes = synthetic(i, Some(&key));
        put(&ours, &format!("synthetic-{i:03}.rpm"), &bytes);
        put(&theirs, &format!("synthetic-{i:03}.rpm"), &bytes);
    }
    let (_, jool) = jool_packages(Some(&key));
    for p in &jool {
        put(&ours, &p.file_name, &p.bytes);
        put(&theirs, &p.file_name, &p.bytes);
    }
    let opts = YumOptions {
        time: TIME,
        key: Some(&key),
    };
    let t = std::time::Instant::now();
    let report = write_repository(&ours, &opts).unwrap();
    let full = t.elapsed();
    let t = std::time::Instant::now();
    let again = write_repository(&ours, &opts).unwrap();
    let cached = t.elapsed();
    let t = std::time::Instant::now();
    run(Command::new("createrepo_c")
        .arg("--no-database")
        .arg(&theirs));
    let cr = t.elapsed();
    let t = std::time::Instant::now();
    run(Command::new("createrepo_c")
        .args(["--no-database", "--update"])
        .arg(&theirs));
    let cr_update = t.elapsed();
    assert_eq!((report.read, again.read, again.reused), (152, 0, 152));
    eprintln!(
        "152 packages: kmodkit write_repository {:.1} ms (signed; rerun from its cache {:.1} ms), \
         createrepo_c --no-database {:.1} ms (--update {:.1} ms)",
        full.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3,
        cr.as_secs_f64() * 1e3,
        cr_update.as_secs_f64() * 1e3
    );
    assert_eq!(
        document(&ours, "primary"),
        document(&theirs, "primary"),
        "primary of 152 packages"
    );
}
