//! `NAME-modules-KVER` and `NAME-kernel-only` against dpkg itself: what
//! `dpkg-deb --field/--contents/-x/-e` read back, `Installed-Size` as
//! `dpkg-gencontrol` computes it for the extracted tree, `md5sum -c` on
//! the package's md5sums, lintian finding no error, and two builds giving
//! the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kmodkit_package::deb::{kernel_only_package, module_package, DebOptions};
use kmodkit_package::ModuleSet;

const KERNEL: &str = "6.1.0-53-amd64";
const TIME: u64 = 1_700_000_000;
const MAINTAINER: &str = "kmodkit test <test@example.invalid>";

fn jool_files() -> Vec<PathBuf> {
    let files = kmodkit_fixtures::oot_modules(KERNEL, "jool-dkms");
    assert!(files.len() >= 2, "jool-dkms built fewer than 2 modules");
    files
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn field(deb: &Path, name: &str) -> String {
    run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name))
        .trim_end()
        .to_string()
}

/// lintian's tags for a package: errors fail the test, the rest is printed.
fn lint(deb: &Path) {
    let out = Command::new("lintian")
        .args(["--tag-display-limit", "0", "--display-info"])
        .arg(deb)
        .output()
        .expect("run lintian");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "lintian {}:\n{text}{}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)) && !text.contains("internal error"),
        "lintian failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dpkg-gencontrol`'s Installed-Size for an extracted tree: a minimal
/// source package whose one binary package is that tree.
fn gencontrol_installed_size(tree: &Path, package: &str, arch: &str, version: &str) -> String {
    let src = tempfile::tempdir().unwrap();
    let deb = src.path().join("debian");
    std::fs::create_dir(&deb).unwrap();
    std::fs::write(
        deb.join("control"),
        format!(
            "Source: jool\nMaintainer: {MAINTAINER}\n\nPackage: {package}\nArchitecture: {arch}\nDescription: x\n y\n"
        ),
    )
    .unwrap();
    std::fs::write(
        deb.join("changelog"),
        format!("jool ({version}) unstable; urgency=medium\n\n  * x\n\n -- {MAINTAINER}  Tue, 14 Nov 2023 22:13:20 +0000\n"),
    )
    .unwrap();
    let out = run(Command::new("dpkg-gencontrol")
        .current_dir(src.path())
        .arg(format!("-p{package}"))
        .arg(format!("-P{}", tree.display()))
        .arg("-O"));
    out.lines()
        .find_map(|l| l.strip_prefix("Installed-Size: "))
        .unwrap_or_else(|| panic!("no Installed-Size from dpkg-gencontrol:\n{out}"))
        .to_string()
}

#[test]
fn module_package_reads_back_through_dpkg_and_passes_lintian() {
    kmodkit_fixtures::require_tool("dpkg-deb", "dpkg");
    kmodkit_fixtures::require_tool("dpkg-gencontrol", "dpkg-dev");
    kmodkit_fixtures::require_tool("lintian", "lintian");
    let tmp = tempfile::tempdir().unwrap();
    let files = jool_files();
    let set = ModuleSet::from_files("jool", "4.1.9", "1", KERNEL, &files).unwrap();
    let opts = DebOptions {
        time: TIME,
        maintainer: MAINTAINER.to_string(),
    };
    let pkg = module_package(&set, &opts).unwrap();
    let arch = run(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string();
    let package = format!("jool-modules-{KERNEL}");
    assert_eq!(pkg.file_name, format!("{package}_4.1.9-1_{arch}.deb"));
    let deb = tmp.path().join(&pkg.file_name);
    std::fs::write(&deb, &pkg.bytes).unwrap();

    // The ar members dpkg-deb writes, in its order.
    let members = run(Command::new("ar").arg("t").arg(&deb));
    assert_eq!(
        members.lines().collect::<Vec<_>>(),
        ["debian-binary", "control.tar.xz", "data.tar.xz"]
    );

    // Control fields.
    assert_eq!(field(&deb, "Package"), package);
    assert_eq!(field(&deb, "Version"), "4.1.9-1");
    assert_eq!(field(&deb, "Architecture"), arch);
    assert_eq!(field(&deb, "Maintainer"), MAINTAINER);
    assert_eq!(field(&deb, "Depends"), format!("linux-image-{KERNEL}"));
    assert_eq!(field(&deb, "Provides"), "jool-modules");
    assert_eq!(field(&deb, "Section"), "kernel");
    assert_eq!(field(&deb, "Priority"), "optional");
    let description = field(&deb, "Description");
    let flat = description.split_whitespace().collect::<Vec<_>>().join(" ");
    for f in &files {
        let d = run(Command::new("modinfo").args(["-F", "description"]).arg(f));
        let d = d.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            !d.is_empty() && flat.contains(&d),
            "{d:?} not in {description:?}"
        );
    }
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    eprintln!("dpkg-deb --info:\n{info}");
    for script in ["postinst", "postrm", "md5sums", "control"] {
        assert!(
            info.contains(script),
            "dpkg-deb --info lists no {script}:\n{info}"
        );
    }

    // Contents: root/root, the times, modes; every parent directory, sorted.
    let listing = run(Command::new("dpkg-deb")
        .env("TZ", "UTC")
        .arg("--contents")
        .arg(&deb));
    let stamp = run(Command::new("date")
        .env("TZ", "UTC")
        .arg("-d")
        .arg(format!("@{TIME}"))
        .arg("+%Y-%m-%d %H:%M"))
    .trim()
    .to_string();
    let mut entries: BTreeMap<String, String> = BTreeMap::new();
    let mut order = Vec::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 6, "{line}");
        assert_eq!(cols[1], "root/root", "{line}");
        assert_eq!(format!("{} {}", cols[3], cols[4]), stamp, "{line}");
        entries.insert(cols[5].to_string(), cols[0].to_string());
        order.push(cols[5].to_string());
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "data.tar is not sorted");
    for name in &order {
        let parent = match name.trim_end_matches('/').rsplit_once('/') {
            Some((p, _)) => format!("{p}/"),
            None => continue,
        };
        assert!(
            entries.contains_key(&parent),
            "{name} without its directory {parent}"
        );
    }
    for f in &files {
        let want = format!(
            "./lib/modules/{KERNEL}/updates/dkms/{}",
            f.file_name().unwrap().to_string_lossy()
        );
        assert_eq!(
            entries.get(&want).map(String::as_str),
            Some("-rw-r--r--"),
            "{want}"
        );
    }
    assert!(entries
        .iter()
        .filter(|(n, _)| n.ends_with('/'))
        .all(|(_, m)| m == "drwxr-xr-x"));
    let copyright = format!("./usr/share/doc/{package}/copyright");
    assert!(entries.contains_key(&copyright), "{listing}");

    // Extracted bytes are the input modules; md5sums checks out.
    let root = tmp.path().join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    for f in &files {
        let got = std::fs::read(
            root.join(format!("lib/modules/{KERNEL}/updates/dkms"))
                .join(f.file_name().unwrap()),
        )
        .unwrap();
        assert!(got == std::fs::read(f).unwrap(), "{} changed", f.display());
    }
    let control = tmp.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let md5sums = std::fs::read_to_string(control.join("md5sums")).unwrap();
    let checked = run(Command::new("md5sum")
        .arg("-c")
        .arg(control.join("md5sums"))
        .current_dir(&root));
    let regular = entries.keys().filter(|n| !n.ends_with('/')).count();
    assert_eq!(md5sums.lines().count(), regular, "{md5sums}");
    assert_eq!(
        checked.lines().filter(|l| l.ends_with(": OK")).count(),
        regular
    );
    for s in ["postinst", "postrm"] {
        let body = std::fs::read_to_string(control.join(s)).unwrap();
        assert!(
            body.contains(&format!("depmod -a {KERNEL}")),
            "{s}:\n{body}"
        );
        run(Command::new("sh").arg("-n").arg(control.join(s)));
    }

    // Installed-Size as dpkg-gencontrol computes it for the same tree.
    assert_eq!(
        field(&deb, "Installed-Size"),
        gencontrol_installed_size(&root, &package, &arch, "4.1.9-1")
    );

    lint(&deb);

    // Same inputs, same bytes.
    assert!(
        module_package(&set, &opts).unwrap().bytes == pkg.bytes,
        "two builds differ"
    );

    // The metapackage: Depends on exactly the set, versioned.
    let members = vec![(pkg.package.clone(), pkg.version.clone())];
    let meta = kernel_only_package("jool", "4.1.9", "1", &members, &opts).unwrap();
    assert_eq!(meta.file_name, "jool-kernel-only_4.1.9-1_all.deb");
    let mdeb = tmp.path().join(&meta.file_name);
    std::fs::write(&mdeb, &meta.bytes).unwrap();
    assert_eq!(field(&mdeb, "Package"), "jool-kernel-only");
    assert_eq!(field(&mdeb, "Architecture"), "all");
    assert_eq!(field(&mdeb, "Depends"), format!("{package} (= 4.1.9-1)"));
    let mroot = tmp.path().join("m");
    run(Command::new("dpkg-deb").arg("-x").arg(&mdeb).arg(&mroot));
    assert_eq!(
        field(&mdeb, "Installed-Size"),
        gencontrol_installed_size(&mroot, "jool-kernel-only", "all", "4.1.9-1")
    );
    lint(&mdeb);
}
