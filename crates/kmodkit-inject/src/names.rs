//! What `modules.dep` does not say: module names of old vendor manuals that
//! current kernels no longer have, and load relations that only exist at
//! run time (request_module, auxiliary devices, rdma-core's udev rules).
//!
//! Sources: drivers/infiniband/core/Makefile (ib_core now holds the
//! address, MAD and SA code), the removal of drivers/infiniband/core/ucm.c
//! (Linux 5.3), drivers/net/ethernet/mellanox/mlx4/main.c
//! (`mlx4_request_modules`), drivers/net/ethernet/mellanox/mlx5/core/dev.c
//! (auxiliary devices), rdma-core's `kernel-boot/rdma-*.rules` and
//! `kernel-boot/modules/*.conf`.

/// A module name that no longer exists as a loadable module.
#[derive(Debug, Clone, Copy)]
pub struct LegacyName {
    pub name: &'static str,
    /// What happened to it.
    pub fate: &'static str,
    /// The module that provides its function today, if any.
    pub replacement: Option<&'static str>,
}

const LEGACY: &[LegacyName] = &[
    LegacyName {
        name: "ib_addr",
        fate: "merged into ib_core (drivers/infiniband/core/addr.c is built into ib_core)",
        replacement: Some("ib_core"),
    },
    LegacyName {
        name: "ib_mad",
        fate: "merged into ib_core (the MAD layer, mad.c, is built into ib_core)",
        replacement: Some("ib_core"),
    },
    LegacyName {
        name: "ib_sa",
        fate: "merged into ib_core (the SA client, sa_query.c, is built into ib_core)",
        replacement: Some("ib_core"),
    },
    LegacyName {
        name: "ib_ucm",
        fate: "removed from the kernel in Linux 5.3; user-space connection management goes through rdma_ucm",
        replacement: Some("rdma_ucm"),
    },
    LegacyName {
        name: "ipoib_helper",
        fate: "an old MLNX_OFED-only helper that mainline kernels never had; ib_ipoib needs nothing else",
        replacement: Some("ib_ipoib"),
    },
    LegacyName {
        name: "ib_mthca",
        fate: "the driver of the Mellanox InfiniHost HCAs (before ConnectX); this kernel does not have it",
        replacement: None,
    },
    LegacyName {
        name: "ipv6",
        fate: "not a module in this kernel",
        replacement: None,
    },
];

/// The legacy entry for `name` (after `-` → `_`), if any.
pub fn legacy(name: &str) -> Option<&'static LegacyName> {
    let name = name.replace('-', "_");
    LEGACY.iter().find(|l| l.name == name)
}

/// A run-time load relation that `modules.dep` does not show.
#[derive(Debug, Clone, Copy)]
pub struct Companion {
    /// Pulled in when this module is asked for.
    pub trigger: &'static str,
    pub modules: &'static [&'static str],
    pub why: &'static str,
}

pub const COMPANIONS: &[Companion] = &[
    Companion {
        trigger: "mlx4_core",
        modules: &["mlx4_en", "mlx4_ib"],
        why: "mlx4_core asks for mlx4_en (Ethernet ports) and mlx4_ib (InfiniBand ports) at run time with request_module(); modules.dep cannot show it",
    },
    Companion {
        trigger: "mlx5_core",
        modules: &["mlx5_ib"],
        why: "mlx5_ib binds to the auxiliary RDMA device mlx5_core creates; nothing in modules.dep loads it",
    },
];

/// Upper-layer protocols rdma-core's udev rules load when an RDMA device
/// appears (`rdma-load-modules@infiniband`, `90-rdma-ulp-modules.rules`);
/// an initramfs without rdma-core must load them itself.
pub const RDMA_ULPS: &[&str] = &["ib_ipoib", "ib_umad", "rdma_ucm"];

pub const RDMA_ULP_WHY: &str = "rdma-core's udev rules load it when an RDMA device appears; the initramfs has no rdma-core, so it is loaded explicitly";

/// Whether a module file (path relative to the module directory) is an
/// RDMA device driver (hardware or software provider).
pub fn is_rdma_provider(relpath: &str) -> bool {
    relpath.contains("/drivers/infiniband/hw/") || relpath.contains("/drivers/infiniband/sw/")
}

/// Names within edit distance 2 (or sharing a prefix of 4+) of `name`,
/// closest first, at most 5.
pub fn close_matches<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<String> {
    let name = name.replace('-', "_");
    let mut scored: Vec<(usize, &str)> = candidates
        .filter_map(|c| {
            let d = edit_distance(&name, c);
            let prefix = name.len() >= 4 && (c.starts_with(&name) || name.starts_with(c));
            if d <= 2 || prefix {
                Some((if prefix { d.min(2) } else { d }, c))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored.dedup();
    scored
        .into_iter()
        .take(5)
        .map(|(_, c)| c.to_string())
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a = a.as_bytes();
    let b = b.as_bytes();
    if a.len().abs_diff(b.len()) > 2 {
        return 3;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_matches_rank_by_distance() {
        let names = ["mlx4_en", "mlx4_ib", "mlx5_ib", "ib_core", "e1000e"];
        assert_eq!(
            close_matches("mlx4_eth", names.iter().copied()),
            vec!["mlx4_en"]
        );
        assert!(close_matches("zzzzzz", names.iter().copied()).is_empty());
        assert_eq!(
            close_matches("mlx4-ib", names.iter().copied())[0],
            "mlx4_ib"
        );
    }

    #[test]
    fn legacy_names_normalise_dashes() {
        assert_eq!(legacy("ib-addr").unwrap().replacement, Some("ib_core"));
        assert!(legacy("mlx4_core").is_none());
    }
}
