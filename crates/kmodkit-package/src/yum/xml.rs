//! primary.xml, filelists.xml, other.xml and repomd.xml, byte for byte as
//! createrepo_c writes them: its element order (`src/xml_dump_primary.c`,
//! `xml_dump_filelists.c`, `xml_dump_other.c`, `xml_dump_repomd.c`), the
//! file headers and footers of `src/xml_file.c`, and libxml2's formatted
//! output (two-space indent, `<a/>` for an element without content,
//! `<a></a>` for an empty text, libxml2's escaping of text and
//! attributes).

use std::fmt::Write;

use super::package::{Dep, FileKind, Package};

const NS_COMMON: &str = "http://linux.duke.edu/metadata/common";
const NS_FILELISTS: &str = "http://linux.duke.edu/metadata/filelists";
const NS_OTHER: &str = "http://linux.duke.edu/metadata/other";
const NS_REPO: &str = "http://linux.duke.edu/metadata/repo";
const NS_RPM: &str = "http://linux.duke.edu/metadata/rpm";
const XML_HEADER: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// libxml2's `xmlEscapeContent` for text nodes.
fn text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// libxml2's `xmlBufAttrSerializeTxtContent` for attribute values.
fn attr_value(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

/// `<name a="v" …` (unclosed).
fn open(out: &mut String, level: usize, name: &str, attrs: &[(&str, &str)]) {
    indent(out, level);
    out.push('<');
    out.push_str(name);
    for (k, v) in attrs {
        out.push(' ');
        out.push_str(k);
        out.push_str("=\"");
        attr_value(out, v);
        out.push('"');
    }
}

/// An element with attributes and no children: `<name …/>`.
fn empty(out: &mut String, level: usize, name: &str, attrs: &[(&str, &str)]) {
    open(out, level, name, attrs);
    out.push_str("/>\n");
}

/// An element holding one text node (possibly empty: `<name></name>`).
fn leaf(out: &mut String, level: usize, name: &str, attrs: &[(&str, &str)], content: &str) {
    open(out, level, name, attrs);
    out.push('>');
    text(out, content);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

fn close(out: &mut String, level: usize, name: &str) {
    indent(out, level);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

fn version(out: &mut String, level: usize, p: &Package) {
    empty(
        out,
        level,
        "version",
        &[
            ("epoch", &p.epoch),
            ("ver", &p.version),
            ("rel", &p.release),
        ],
    );
}

fn deps(out: &mut String, element: &str, list: &[Dep], requires: bool) {
    if list.is_empty() {
        return;
    }
    open(out, 2, element, &[]);
    out.push_str(">\n");
    for d in list.iter().filter(|d| !d.name.is_empty()) {
        let mut attrs: Vec<(&str, &str)> = vec![("name", &d.name)];
        if let Some(flags) = &d.flags {
            attrs.push(("flags", flags));
            for (key, value) in [("epoch", &d.epoch), ("ver", &d.ver), ("rel", &d.rel)] {
                if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                    attrs.push((key, v));
                }
            }
        }
        if requires && d.pre {
            attrs.push(("pre", "1"));
        }
        empty(out, 3, "rpm:entry", &attrs);
    }
    close(out, 2, element);
}

fn files(out: &mut String, level: usize, p: &Package, primary_only: bool) {
    for f in &p.files {
        if primary_only && !super::package::is_primary(&f.path) {
            continue;
        }
        match f.kind {
            FileKind::File => leaf(out, level, "file", &[], &f.path),
            FileKind::Dir => leaf(out, level, "file", &[("type", "dir")], &f.path),
            FileKind::Ghost => leaf(out, level, "file", &[("type", "ghost")], &f.path),
        }
    }
}

fn primary_package(out: &mut String, p: &Package) {
    out.push_str("<package type=\"rpm\">\n");
    leaf(out, 1, "name", &[], &p.name);
    leaf(out, 1, "arch", &[], &p.arch);
    version(out, 1, p);
    leaf(
        out,
        1,
        "checksum",
        &[("type", "sha256"), ("pkgid", "YES")],
        &p.pkgid,
    );
    leaf(out, 1, "summary", &[], &p.summary);
    leaf(out, 1, "description", &[], &p.description);
    leaf(out, 1, "packager", &[], &p.packager);
    leaf(out, 1, "url", &[], &p.url);
    let (tf, tb) = (p.time_file.to_string(), p.time_build.to_string());
    empty(out, 1, "time", &[("file", &tf), ("build", &tb)]);
    let (sp, si, sa) = (
        p.size_package.to_string(),
        p.size_installed.to_string(),
        p.size_archive.to_string(),
    );
    empty(
        out,
        1,
        "size",
        &[("package", &sp), ("installed", &si), ("archive", &sa)],
    );
    empty(out, 1, "location", &[("href", &p.href)]);
    out.push_str("  <format>\n");
    leaf(out, 2, "rpm:license", &[], &p.license);
    leaf(out, 2, "rpm:vendor", &[], &p.vendor);
    leaf(out, 2, "rpm:group", &[], &p.group);
    leaf(out, 2, "rpm:buildhost", &[], &p.buildhost);
    leaf(out, 2, "rpm:sourcerpm", &[], &p.sourcerpm);
    let (hs, he) = (p.header_start.to_string(), p.header_end.to_string());
    empty(out, 2, "rpm:header-range", &[("start", &hs), ("end", &he)]);
    deps(out, "rpm:provides", &p.provides, false);
    deps(out, "rpm:requires", &p.requires, true);
    deps(out, "rpm:conflicts", &p.conflicts, false);
    deps(out, "rpm:obsoletes", &p.obsoletes, false);
    deps(out, "rpm:suggests", &p.suggests, false);
    deps(out, "rpm:enhances", &p.enhances, false);
    deps(out, "rpm:recommends", &p.recommends, false);
    deps(out, "rpm:supplements", &p.supplements, false);
    files(out, 2, p, true);
    out.push_str("  </format>\n</package>\n");
}

/// The three metadata documents, in memory.
pub(crate) struct Documents {
    pub primary: String,
    pub filelists: String,
    pub other: String,
}

pub(crate) fn documents(packages: &[Package]) -> Documents {
    let n = packages.len();
    let mut primary = String::with_capacity(n * 4096 + 256);
    let mut filelists = String::with_capacity(n * 1024 + 256);
    let mut other = String::with_capacity(n * 512 + 256);
    let _ = writeln!(
        primary,
        "{XML_HEADER}<metadata xmlns=\"{NS_COMMON}\" xmlns:rpm=\"{NS_RPM}\" packages=\"{n}\">"
    );
    let _ = writeln!(
        filelists,
        "{XML_HEADER}<filelists xmlns=\"{NS_FILELISTS}\" packages=\"{n}\">"
    );
    let _ = writeln!(
        other,
        "{XML_HEADER}<otherdata xmlns=\"{NS_OTHER}\" packages=\"{n}\">"
    );
    for p in packages {
        primary_package(&mut primary, p);

        let id = [
            ("pkgid", p.pkgid.as_str()),
            ("name", &p.name),
            ("arch", &p.arch),
        ];
        open(&mut filelists, 0, "package", &id);
        filelists.push_str(">\n");
        version(&mut filelists, 1, p);
        files(&mut filelists, 1, p, false);
        filelists.push_str("</package>\n");

        open(&mut other, 0, "package", &id);
        other.push_str(">\n");
        version(&mut other, 1, p);
        for c in &p.changelogs {
            let date = c.date.to_string();
            leaf(
                &mut other,
                1,
                "changelog",
                &[("author", &c.author), ("date", &date)],
                &c.text,
            );
        }
        other.push_str("</package>\n");
    }
    // createrepo_c's footers end without a newline.
    primary.push_str("</metadata>");
    filelists.push_str("</filelists>");
    other.push_str("</otherdata>");
    Documents {
        primary,
        filelists,
        other,
    }
}

/// One `<data>` record of repomd.xml.
pub(crate) struct Record {
    pub kind: &'static str,
    pub checksum: String,
    pub open_checksum: String,
    pub href: String,
    pub size: u64,
    pub open_size: u64,
}

pub(crate) fn repomd(revision: u64, timestamp: u64, records: &[Record]) -> String {
    let mut out = String::with_capacity(2048);
    let _ = writeln!(
        out,
        "{XML_HEADER}<repomd xmlns=\"{NS_REPO}\" xmlns:rpm=\"{NS_RPM}\">"
    );
    leaf(&mut out, 1, "revision", &[], &revision.to_string());
    for r in records {
        open(&mut out, 1, "data", &[("type", r.kind)]);
        out.push_str(">\n");
        leaf(&mut out, 2, "checksum", &[("type", "sha256")], &r.checksum);
        leaf(
            &mut out,
            2,
            "open-checksum",
            &[("type", "sha256")],
            &r.open_checksum,
        );
        empty(&mut out, 2, "location", &[("href", &r.href)]);
        leaf(&mut out, 2, "timestamp", &[], &timestamp.to_string());
        leaf(&mut out, 2, "size", &[], &r.size.to_string());
        leaf(&mut out, 2, "open-size", &[], &r.open_size.to_string());
        close(&mut out, 1, "data");
    }
    out.push_str("</repomd>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_follows_libxml2() {
        let mut t = String::new();
        text(&mut t, "a<b>&\"c\"\r\n\t");
        assert_eq!(t, "a&lt;b&gt;&amp;\"c\"&#13;\n\t");
        let mut a = String::new();
        attr_value(&mut a, "a<b>&\"c\"\r\n\t");
        assert_eq!(a, "a&lt;b&gt;&amp;&quot;c&quot;&#13;&#10;&#9;");
    }
}
