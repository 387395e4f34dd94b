//! Clusters of duplicates: connected components of the pairs scored at or above a threshold,
//! optionally with a minimum-link check.
//!
//! Plain connected components chain: A~B and B~C put A and C together even when A and C were
//! compared and clearly differ. With `min_link`, links are added strongest first and a link is
//! refused when it would put two records into one cluster whose own comparison scored below
//! `min_link` (pairs that were never compared do not object).

use std::collections::HashMap;

/// Cluster label per record (the smallest record index in its cluster), from scored pairs
/// `(a, b, probability)`.
pub fn cluster(records: usize, pairs: &[(u32, u32, f64)], threshold: f64, min_link: Option<f64>) -> Vec<u32> {
    let links: Vec<(u32, u32, f64)> = pairs
        .iter()
        .filter(|p| p.2 >= threshold && (p.0 as usize) < records && (p.1 as usize) < records)
        .copied()
        .collect();
    let scores: HashMap<(u32, u32), f64> = match min_link {
        Some(_) => pairs.iter().map(|&(a, b, s)| ((a.min(b), a.max(b)), s)).collect(),
        None => HashMap::new(),
    };
    cluster_links(records, links, min_link, |x, y| scores.get(&(x, y)).copied())
}

/// [`cluster`] from the links (pairs at or above the threshold, indexes below `records`) and,
/// for the minimum-link check, the score of any compared pair `(x, y)` with x < y.
pub(crate) fn cluster_links(
    records: usize,
    mut links: Vec<(u32, u32, f64)>,
    min_link: Option<f64>,
    score: impl Fn(u32, u32) -> Option<f64>,
) -> Vec<u32> {
    let mut parent: Vec<u32> = (0..records as u32).collect();
    links.sort_by(|x, y| y.2.total_cmp(&x.2).then((x.0, x.1).cmp(&(y.0, y.1))));

    match min_link {
        None => {
            for &(a, b, _) in &links {
                union(&mut parent, a, b);
            }
        }
        Some(min_link) => {
            let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
            for &(a, b, _) in &links {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                if ra == rb {
                    continue;
                }
                let group_a = members.get(&ra).cloned().unwrap_or_else(|| vec![a]);
                let group_b = members.get(&rb).cloned().unwrap_or_else(|| vec![b]);
                let objection = group_a
                    .iter()
                    .any(|&x| group_b.iter().any(|&y| score(x.min(y), x.max(y)).is_some_and(|s| s < min_link)));
                if objection {
                    continue;
                }
                union(&mut parent, ra, rb);
                let root = find(&mut parent, ra);
                members.remove(&ra);
                members.remove(&rb);
                let mut merged = group_a;
                merged.extend(group_b);
                members.insert(root, merged);
            }
        }
    }
    let mut label = vec![0u32; records];
    let mut smallest: HashMap<u32, u32> = HashMap::new();
    for i in 0..records as u32 {
        let root = find(&mut parent, i);
        let entry = smallest.entry(root).or_insert(i);
        label[i as usize] = *entry;
    }
    label
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let grandparent = parent[parent[x as usize] as usize];
        parent[x as usize] = grandparent;
        x = grandparent;
    }
    x
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (low, high) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[high as usize] = low;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_and_chaining() {
        let pairs = [(0, 1, 0.99), (1, 2, 0.95), (0, 2, 0.01), (3, 4, 0.5)];
        assert_eq!(cluster(6, &pairs, 0.9, None), vec![0, 0, 0, 3, 4, 5]);
        // With a minimum link, 2 cannot join {0, 1}: it was compared with 0 and scored 0.01.
        assert_eq!(cluster(6, &pairs, 0.9, Some(0.5)), vec![0, 0, 2, 3, 4, 5]);
        assert_eq!(cluster(6, &pairs, 0.4, None), vec![0, 0, 0, 3, 3, 5]);
        assert_eq!(cluster(0, &[], 0.5, Some(0.5)), Vec::<u32>::new());
    }
}
