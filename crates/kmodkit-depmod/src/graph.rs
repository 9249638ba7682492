//! The dependency graph: kmod 30's topological order
//! (`depmod_calculate_dependencies` in `tools/depmod.c`), the cycles it
//! refuses, and the closures and load orders built on the order. Modules
//! are indexes; `deps[i]` holds module `i`'s direct dependencies.

use std::collections::HashMap;

/// kmod's topological index of every module (modules without users first),
/// or, when cycles remain, how many users each module still has (nonzero
/// exactly for the modules in or below a cycle).
pub fn topological_order(deps: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = deps.len();
    let mut users = vec![0usize; n];
    for d in deps.iter().flatten() {
        users[*d] += 1;
    }
    let mut roots: Vec<usize> = (0..n).filter(|&i| users[i] == 0).collect();
    let mut order = vec![usize::MAX; n];
    let mut sorted = 0usize;
    // kmod's roots array is a stack: the last root found is sorted first.
    while let Some(src) = roots.pop() {
        order[src] = sorted;
        sorted += 1;
        for &dst in &deps[src] {
            users[dst] -= 1;
            if users[dst] == 0 {
                roots.push(dst);
            }
        }
    }
    if sorted < n {
        Err(users)
    } else {
        Ok(order)
    }
}

/// One "a -> b -> a" line per cycle among the modules `users` left
/// unsorted (see [`topological_order`]).
pub fn describe_cycles(
    deps: &[Vec<usize>],
    users: &[usize],
    name: impl Fn(usize) -> String,
) -> Vec<String> {
    let in_cycle: Vec<bool> = users.iter().map(|&u| u > 0).collect();
    let mut reported = vec![false; users.len()];
    let mut out = Vec::new();
    for start in 0..users.len() {
        if !in_cycle[start] || reported[start] {
            continue;
        }
        // Follow edges inside the unsorted set until a module repeats.
        let mut path = vec![start];
        let mut seen = HashMap::from([(start, 0usize)]);
        let mut cur = start;
        while let Some(&next) = deps[cur].iter().find(|&&d| in_cycle[d]) {
            if let Some(&pos) = seen.get(&next) {
                if path[pos..].iter().all(|&i| !reported[i]) {
                    let cycle: Vec<String> = path[pos..]
                        .iter()
                        .chain(std::iter::once(&next))
                        .map(|&i| name(i))
                        .collect();
                    out.push(cycle.join(" -> "));
                }
                for &i in &path[pos..] {
                    reported[i] = true;
                }
                break;
            }
            seen.insert(next, path.len());
            path.push(next);
            cur = next;
        }
    }
    out
}

/// All modules `idx` needs, directly or not, sorted by topological index
/// (modules.dep order). `deps(i)` and `order(i)` give module `i`'s direct
/// dependencies and topological index; `n` is the number of modules.
pub fn closure<'a>(
    n: usize,
    deps: impl Fn(usize) -> &'a [usize],
    order: impl Fn(usize) -> usize,
    idx: usize,
) -> Vec<usize> {
    let mut seen = vec![false; n];
    let mut stack: Vec<usize> = deps(idx).to_vec();
    let mut out = Vec::new();
    while let Some(d) = stack.pop() {
        if seen[d] {
            continue;
        }
        seen[d] = true;
        out.push(d);
        stack.extend_from_slice(deps(d));
    }
    out.sort_by_key(|&d| order(d));
    out
}
