//! kmodkit's own packages, as scripts/package-kmodkit builds them, installed
//! the way users install software: `apt-get install kmodkit` from a signed
//! flat repository and `dnf install kmodkit` from a signed yum repository
//! (signed packages and signed `repomd.xml`), each into a private root.
//! The files must be at their real paths and work there (the binary runs
//! and names its version, the man pages are gzip'd roff, the bash
//! completion registers itself), lintian and rpmlint report no error, and
//! two runs of the script give identical bytes.
//!
//! The packages come from `KMODKIT_SELF_PACKAGES` (scripts/test builds
//! them before the tests); without it the test runs the script itself
//! (`--if-stale`, into `$KMODKIT_CACHE/self-packages`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kmodkit_fixtures::require_tool;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> PathBuf {
    repo_dir().join("scripts/package-kmodkit")
}

/// Runs `cmd`, panics with its output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// The directory with `kmodkit_V_amd64.deb` and `kmodkit-V-1.x86_64.rpm`.
fn packages() -> PathBuf {
    let dir = match std::env::var_os("KMODKIT_SELF_PACKAGES") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = kmodkit_fixtures::cache_dir().join("self-packages");
            run(Command::new(script())
                .arg("--if-stale")
                .arg("--out")
                .arg(&dir));
            dir
        }
    };
    for p in [deb_name(), rpm_name()] {
        assert!(
            dir.join(&p).is_file(),
            "{} missing: run scripts/package-kmodkit --out {}",
            dir.join(&p).display(),
            dir.display()
        );
    }
    dir
}

fn deb_name() -> String {
    format!("kmodkit_{VERSION}_amd64.deb")
}

fn rpm_name() -> String {
    format!("kmodkit-{VERSION}-1.x86_64.rpm")
}

/// Files both packages install, relative to the root.
const COMMON_FILES: [&str; 6] = [
    "usr/bin/kmodkit",
    "usr/share/man/man1/kmodkit.1.gz",
    "usr/share/bash-completion/completions/kmodkit",
    "usr/share/zsh/site-functions/_kmodkit",
    "usr/share/fish/vendor_completions.d/kmodkit.fish",
    "usr/lib/kernel/install.d/50-kmodkit-weak-modules.install",
];

const DEB_HOOKS: [&str; 2] = [
    "etc/kernel/postinst.d/zz-kmodkit-weak-modules",
    "etc/kernel/postrm.d/zz-kmodkit-weak-modules",
];

/// A throwaway OpenPGP key in its own GnuPG home; returns the key id.
fn gpg_key(home: &Path) -> String {
    std::fs::create_dir_all(home).unwrap();
    std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    run(Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--passphrase", "", "--quick-gen-key"])
        .args([
            "kmodkit test repository <test@example.invalid>",
            "rsa3072",
            "sign",
            "never",
        ]));
    let colons = stdout(Command::new("gpg").env("GNUPGHOME", home).args([
        "--batch",
        "--with-colons",
        "--list-secret-keys",
    ]));
    colons
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| !f.is_empty()))
        .unwrap_or_else(|| panic!("no fingerprint in gpg's listing:\n{colons}"))
        .to_string()
}

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home).arg("--batch");
    c
}

/// Checks what both packages install, at `root`.
fn assert_installed(root: &Path, what: &str) {
    for f in COMMON_FILES {
        let p = root.join(f);
        let meta = std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{what}: {} not installed: {e}", p.display()));
        assert!(meta.len() > 0, "{what}: {} is empty", p.display());
    }
    let version = stdout(Command::new(root.join("usr/bin/kmodkit")).arg("--version"));
    assert_eq!(version.trim(), format!("kmodkit {VERSION}"), "{what}");
    // One page per visible command, each gzip'd roff with a title line.
    let pages: Vec<PathBuf> = std::fs::read_dir(root.join("usr/share/man/man1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(pages.len() > 5, "{what}: only {pages:?}");
    for page in &pages {
        let roff = stdout(Command::new("gzip").arg("-dc").arg(page));
        assert!(
            roff.lines().any(|l| l.starts_with(".TH ")),
            "{what}: {} has no .TH line",
            page.display()
        );
    }
    let bash = root.join("usr/share/bash-completion/completions/kmodkit");
    run(Command::new("bash").arg("-n").arg(&bash));
    let spec = stdout(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && complete -p kmodkit",
        bash.display()
    )));
    assert!(spec.contains("kmodkit"), "{what}: bash completion: {spec}");
    run(Command::new("sh")
        .arg("-n")
        .arg(root.join("usr/lib/kernel/install.d/50-kmodkit-weak-modules.install")));
}

/// `apt-get update && apt-get install kmodkit` into a private root from a
/// flat repository whose InRelease is signed by a throwaway key. A second
/// source signed by another key than `signed-by` names must be refused.
#[test]
fn apt_installs_the_deb_from_a_signed_repository() {
    for (tool, pkg) in [
        ("apt-get", "apt"),
        ("apt-ftparchive", "apt-utils"),
        ("dpkg", "dpkg"),
        ("gpg", "gnupg"),
    ] {
        require_tool(tool, pkg);
    }
    let packages = packages();
    let tmp = tempfile::tempdir().unwrap();
    let key = gpg_key(&tmp.path().join("gnupg"));
    let home = tmp.path().join("gnupg");

    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::copy(packages.join(deb_name()), repo.join(deb_name())).unwrap();
    let index = stdout(
        Command::new("apt-ftparchive")
            .arg("packages")
            .arg(".")
            .current_dir(&repo),
    );
    std::fs::write(repo.join("Packages"), index).unwrap();
    let release = stdout(
        Command::new("apt-ftparchive")
            .arg("release")
            .arg(".")
            .current_dir(&repo),
    );
    std::fs::write(repo.join("Release"), release).unwrap();
    run(gpg(&home)
        .args(["--local-user", &key, "--clearsign", "--output"])
        .arg(repo.join("InRelease"))
        .arg(repo.join("Release")));
    let keyring = tmp.path().join("kmodkit-test.gpg");
    run(gpg(&home)
        .arg("--output")
        .arg(&keyring)
        .args(["--export", &key]));

    let root = tmp.path().join("root");
    for d in [
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
        "etc/apt/trusted.gpg.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "var/log",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let sources = root.join("etc/apt/sources.list");
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive")
            .arg("-o")
            .arg(format!("Dir={}", root.display()))
            .arg("-o")
            .arg(format!(
                "Dir::State::status={}",
                root.join("var/lib/dpkg/status").display()
            ))
            .args(["-o", "Dir::Bin::dpkg=/usr/bin/dpkg"])
            .args(["-o", "APT::Architecture=amd64"])
            // The repository and the root are the test's; apt's _apt user
            // need not read them.
            .args(["-o", "APT::Sandbox::User=root"])
            .arg("-o")
            .arg(format!("DPkg::Options::=--root={}", root.display()))
            .arg("-o")
            .arg(format!(
                "DPkg::Options::=--log={}",
                root.join("var/log/dpkg.log").display()
            ))
            .args(args);
        c
    };

    // Signed by a key that signed-by does not name: apt must refuse it.
    let other_home = tmp.path().join("gnupg-other");
    let other = gpg_key(&other_home);
    let other_keyring = tmp.path().join("other.gpg");
    run(gpg(&other_home)
        .arg("--output")
        .arg(&other_keyring)
        .args(["--export", &other]));
    std::fs::write(
        &sources,
        format!(
            "deb [signed-by={}] file:{} ./\n",
            other_keyring.display(),
            repo.display()
        ),
    )
    .unwrap();
    let refused = apt(&["update"]).output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr).into_owned()
        + &String::from_utf8_lossy(&refused.stdout);
    assert!(
        said.contains("NO_PUBKEY") || said.contains("not signed"),
        "apt accepted a repository signed by another key:\n{said}"
    );
    eprintln!("apt on the repository signed by another key:\n{said}");

    std::fs::write(
        &sources,
        format!(
            "deb [signed-by={}] file:{} ./\n",
            keyring.display(),
            repo.display()
        ),
    )
    .unwrap();
    let update = apt(&["update"]).output().unwrap();
    let said = String::from_utf8_lossy(&update.stderr).into_owned()
        + &String::from_utf8_lossy(&update.stdout);
    assert!(
        update.status.success() && !said.contains("W:") && !said.contains("E:"),
        "apt-get update:\n{said}"
    );
    run(&mut apt(&[
        "install",
        "-y",
        "--no-install-recommends",
        "kmodkit",
    ]));

    assert_installed(&root, "apt");
    for hook in DEB_HOOKS {
        let p = root.join(hook);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o755, "{}", p.display());
        run(Command::new("sh").arg("-n").arg(&p));
    }
    run(Command::new("test")
        .arg("-f")
        .arg(root.join("usr/share/doc/kmodkit/copyright")));
    // dpkg's database in the root: installed, with both hooks as conffiles.
    let admin = root.join("var/lib/dpkg");
    let status = stdout(
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", admin.display()))
            .args([
                "-W",
                "-f",
                "${Status} ${Version}\n${Conffiles}\n",
                "kmodkit",
            ]),
    );
    assert!(
        status.starts_with(&format!("install ok installed {VERSION}\n")),
        "{status}"
    );
    for hook in DEB_HOOKS {
        assert!(
            status.contains(&format!("/{hook} ")),
            "{hook} not a conffile:\n{status}"
        );
    }
    // The installed postrm.d hook, as the kernel package calls it, finds the
    // installed kmodkit on PATH: it drops the removed kernel's weak-updates
    // links, and succeeds when the kernel's module directory is gone.
    let target = tmp.path().join("target");
    let kver = "6.1.0-99-amd64";
    let weak = target.join("lib/modules").join(kver).join("weak-updates");
    std::fs::create_dir_all(&weak).unwrap();
    std::os::unix::fs::symlink("../../6.1.0-53-amd64/extra/x.ko", weak.join("x.ko")).unwrap();
    let path = format!(
        "{}:{}",
        root.join("usr/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let postrm = root.join(DEB_HOOKS[1]);
    let image = format!("/boot/vmlinuz-{kver}");
    run(Command::new(&postrm)
        .env("PATH", &path)
        .env("KMODKIT_ROOT", &target)
        .args([kver, &image]));
    assert!(
        std::fs::symlink_metadata(weak.join("x.ko")).is_err(),
        "{} left {}",
        postrm.display(),
        weak.join("x.ko").display()
    );
    std::fs::remove_dir_all(target.join("lib")).unwrap();
    run(Command::new(&postrm)
        .env("PATH", &path)
        .env("KMODKIT_ROOT", &target)
        .args([kver, &image]));
    // Every file's md5sum matches what the package recorded.
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--verify", "kmodkit"]));
}

/// `rpmsign --addsign` with the key `key` of GnuPG home `home`.
fn sign_rpm(home: &Path, key: &str, rpm: &Path) {
    // Debian's rpm names /usr/bin/gpg2, which gnupg no longer installs.
    let gpg = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("gpg"))
                .find(|g| g.is_file())
        })
        .expect("gpg not found: apt-get install gnupg");
    run(Command::new("rpmsign")
        .env("GNUPGHOME", home)
        .arg("--define")
        .arg(format!("__gpg {}", gpg.display()))
        .arg("--define")
        .arg(format!("_gpg_name {key}"))
        .arg("--define")
        .arg(format!("_gpg_path {}", home.display()))
        .arg("--addsign")
        .arg(rpm));
}

/// Builds an rpm that provides `/bin/sh` and owns nothing: the stand-in for
/// the distribution's base system (bash on Fedora and RHEL), which an empty
/// install root lacks and the kernel-install plugin's interpreter needs.
fn base_shell_rpm(dir: &Path, out: &Path) {
    let spec = dir.join("base-shell.spec");
    std::fs::write(
        &spec,
        "Name: kmodkit-test-base-shell\nVersion: 1\nRelease: 1\nSummary: /bin/sh of the test root\n\
         License: GPL-2.0-or-later\nBuildArch: noarch\nProvides: /bin/sh\n\
         %description\nStands for the distribution's bash in an empty install root.\n%files\n",
    )
    .unwrap();
    run(Command::new("rpmbuild")
        .args(["-bb", "--quiet"])
        .arg("--define")
        .arg(format!("_topdir {}", dir.join("rpmbuild").display()))
        .arg("--define")
        .arg(format!("_rpmdir {}", out.display()))
        .args([
            "--define",
            "_rpmfilename %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm",
        ])
        .arg(&spec));
}

/// `dnf install kmodkit` into a private install root from a yum repository
/// made by createrepo_c, with gpgcheck and repo_gpgcheck on: the packages
/// signed by `rpmsign --addsign`, `repomd.xml` by a detached signature.
/// An unsigned package in the same setup must be refused.
#[test]
fn dnf_installs_the_rpm_from_a_signed_repository() {
    for (tool, pkg) in [
        ("dnf", "dnf"),
        ("createrepo_c", "createrepo-c"),
        ("rpm", "rpm"),
        ("rpmsign", "rpm"),
        ("rpmbuild", "rpm"),
        ("gpg", "gnupg"),
    ] {
        require_tool(tool, pkg);
    }
    let packages = packages();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("gnupg");
    let key = gpg_key(&home);
    let public = tmp.path().join("RPM-GPG-KEY-kmodkit-test");
    run(gpg(&home)
        .arg("--armor")
        .arg("--output")
        .arg(&public)
        .args(["--export", &key]));

    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::copy(packages.join(rpm_name()), repo.join(rpm_name())).unwrap();
    base_shell_rpm(tmp.path(), &repo);
    let base = repo.join("kmodkit-test-base-shell-1-1.noarch.rpm");
    let sign = |rpm: &Path| sign_rpm(&home, &key, rpm);
    // An unsigned copy first, to see dnf refuse it.
    let unsigned_repo = tmp.path().join("unsigned");
    std::fs::create_dir_all(&unsigned_repo).unwrap();
    std::fs::copy(repo.join(rpm_name()), unsigned_repo.join(rpm_name())).unwrap();
    sign(&repo.join(rpm_name()));
    sign(&base);
    std::fs::copy(&base, unsigned_repo.join(base.file_name().unwrap())).unwrap();

    for r in [&repo, &unsigned_repo] {
        run(Command::new("createrepo_c").arg("--quiet").arg(r));
        run(gpg(&home)
            .args(["--local-user", &key, "--armor", "--detach-sign", "--output"])
            .arg(r.join("repodata/repomd.xml.asc"))
            .arg(r.join("repodata/repomd.xml")));
    }

    let dnf = |root: &Path, repo: &Path| {
        let repos = root.join("etc/yum.repos.d");
        std::fs::create_dir_all(&repos).unwrap();
        std::fs::write(
            repos.join("kmodkit-test.repo"),
            format!(
                "[kmodkit-test]\nname=kmodkit test\nbaseurl=file://{}\nenabled=1\n\
                 gpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file://{}\n",
                repo.display(),
                public.display()
            ),
        )
        .unwrap();
        let conf = root.join("dnf.conf");
        std::fs::write(&conf, "[main]\nreposdir=\ninstall_weak_deps=False\n").unwrap();
        let mut c = Command::new("dnf");
        c.arg("-c")
            .arg(&conf)
            .arg("--installroot")
            .arg(root)
            .arg(format!("--setopt=reposdir={}", repos.display()))
            .arg(format!(
                "--setopt=cachedir={}",
                root.join("var/cache/dnf").display()
            ))
            .args(["--releasever", "1", "--assumeyes", "install", "kmodkit"]);
        c
    };

    let refused_root = tmp.path().join("refused");
    let refused = dnf(&refused_root, &unsigned_repo).output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr).into_owned()
        + &String::from_utf8_lossy(&refused.stdout);
    assert!(
        !refused.status.success()
            && said.contains(&format!("{} is not signed", rpm_name()))
            && !refused_root.join("usr/bin/kmodkit").exists(),
        "dnf installed an unsigned package with gpgcheck=1:\n{said}"
    );
    eprintln!("dnf on the unsigned package:\n{said}");

    let root = tmp.path().join("root");
    run(&mut dnf(&root, &repo));
    assert_installed(&root, "dnf");
    let nvr = stdout(Command::new("rpm").arg("--root").arg(&root).args([
        "-q",
        "--qf",
        "%{NAME}-%{VERSION}-%{RELEASE} %{RSAHEADER:pgpsig}\n",
        "kmodkit",
    ]));
    assert!(nvr.starts_with(&format!("kmodkit-{VERSION}-1 ")), "{nvr}");
    let short = &key[key.len() - 16..].to_lowercase();
    assert!(
        nvr.to_lowercase().contains(short.as_str()),
        "not signed by {key}: {nvr}"
    );
    // Every file as the package recorded it (digest, mode, size).
    run(Command::new("rpm")
        .arg("--root")
        .arg(&root)
        .args(["-V", "kmodkit"]));
}

/// lintian on the .deb and rpmlint on the .rpm (signed, as a repository
/// publishes it) report no error; warnings are printed for the log.
#[test]
fn lintian_and_rpmlint_report_no_error() {
    require_tool("lintian", "lintian");
    require_tool("rpmlint", "rpmlint");
    require_tool("rpmsign", "rpm");
    let packages = packages();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("gnupg");
    let key = gpg_key(&home);
    let signed = tmp.path().join(rpm_name());
    std::fs::copy(packages.join(rpm_name()), &signed).unwrap();
    sign_rpm(&home, &key, &signed);
    // rpmlint checks the signature with `rpm -Kv` against the rpm database:
    // a private one (named by a private HOME's ~/.rpmmacros) that trusts
    // the throwaway key, so a bad signature is still an error.
    let public = tmp.path().join("key.asc");
    run(gpg(&home)
        .arg("--armor")
        .arg("--output")
        .arg(&public)
        .args(["--export", &key]));
    let rpm_home = tmp.path().join("home");
    let dbpath = tmp.path().join("rpmdb");
    std::fs::create_dir_all(&rpm_home).unwrap();
    std::fs::write(
        rpm_home.join(".rpmmacros"),
        format!("%_dbpath {}\n", dbpath.display()),
    )
    .unwrap();
    run(Command::new("rpm")
        .env("HOME", &rpm_home)
        .arg("--import")
        .arg(&public));
    let lintian = Command::new("lintian")
        .args(["--no-cfg", "--display-info"])
        .arg("--suppress-tags-from-file")
        .arg(repo_dir().join("packaging/debian/lintian-overrides"))
        .arg(packages.join(deb_name()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&lintian.stdout).into_owned()
        + &String::from_utf8_lossy(&lintian.stderr);
    eprintln!("lintian:\n{said}");
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert!(
        lintian.status.success(),
        "lintian failed ({}):\n{said}",
        lintian.status
    );

    let rpmlint = Command::new("rpmlint")
        .env("HOME", &rpm_home)
        .arg("--config")
        .arg(repo_dir().join("packaging/rpmlint.toml"))
        .arg(&signed)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&rpmlint.stdout).into_owned()
        + &String::from_utf8_lossy(&rpmlint.stderr);
    eprintln!("rpmlint:\n{said}");
    let errors: Vec<&str> = said.lines().filter(|l| l.contains(": E: ")).collect();
    assert!(errors.is_empty(), "rpmlint errors:\n{}", errors.join("\n"));
    assert!(
        said.contains("0 errors"),
        "rpmlint gave no summary ({}):\n{said}",
        rpmlint.status
    );
}

/// Two runs of the script on the same binary and SOURCE_DATE_EPOCH, a
/// second apart, write identical .deb and .rpm bytes.
#[test]
fn packages_are_reproducible() {
    require_tool("dpkg-deb", "dpkg");
    require_tool("rpmbuild", "rpm");
    let packages = packages();
    let tmp = tempfile::tempdir().unwrap();
    let unpacked = tmp.path().join("unpacked");
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(packages.join(deb_name()))
        .arg(&unpacked));
    let binary = unpacked.join("usr/bin/kmodkit");
    let build = |out: &Path| {
        run(Command::new(script())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("--binary")
            .arg(&binary)
            .arg("--out")
            .arg(out));
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    build(&a);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build(&b);
    for name in [deb_name(), rpm_name()] {
        let (x, y) = (
            std::fs::read(a.join(&name)).unwrap(),
            std::fs::read(b.join(&name)).unwrap(),
        );
        assert!(
            x == y,
            "{name}: two runs differ ({} vs {} bytes)",
            x.len(),
            y.len()
        );
    }
    // The packaged binary is the one given: the script strips, it never
    // rebuilds.
    let again = tmp.path().join("again");
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(a.join(deb_name()))
        .arg(&again));
    assert_eq!(
        std::fs::read(again.join("usr/bin/kmodkit")).unwrap(),
        std::fs::read(&binary).unwrap()
    );
}
