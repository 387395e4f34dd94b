//! Clusters of duplicates: connected components of the pairs scored at or above a threshold,
//! optionally with a minimum-link check.
//!
//! Plain connected components chain: A~B and B~C put A and C together even when A and C were
//! compared and clearly differ. With `min_link`, links are added strongest first and a link is
//! refused when it would put two records into one cluster whose own comparison scored below
//! `min_link` (pairs that were never compared do not object).
//!
//! A cluster also implies pairs that were not linked directly: if A~B and B~C are both right,
//! A and C are the same entity too. [`implied_links`] finds them, scored by the chain that
//! links them best, so that the pairs reported agree with the clusters reported.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// A cluster of more records than this implies no pairs: such clusters are chains of look-alikes
/// (a common name, a shared switchboard) more often than one entity entered a hundred times, and
/// the pairs of a large one would be too many to list.
pub const MAX_IMPLYING_CLUSTER: usize = 100;
/// A pair whose own comparison scored below this is not implied by a chain: the two records
/// were compared and clearly differ, so a link of the chain is more likely wrong than the pair.
pub const IMPLIED_VETO: f64 = 0.01;

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

/// The pairs that the `links` (pairs at or above `threshold`, as given to [`cluster_links`])
/// imply within each cluster of `labels`: two records of one cluster, not linked directly,
/// whose best chain of links has a product of probabilities at or above `threshold` (the
/// chance that every link of the chain is right, were the links independent), unless their own
/// comparison (`score`, `None` when never compared) scored below [`IMPLIED_VETO`]. Each comes
/// as `(a, b, product)` with a < b, ordered by (a, b). Only links within one cluster count
/// (with a minimum link, a link may join two records that stay apart); clusters of more than
/// [`MAX_IMPLYING_CLUSTER`] records imply nothing.
pub(crate) fn implied_links(
    links: &[(u32, u32, f64)],
    labels: &[u32],
    threshold: f64,
    score: impl Fn(u32, u32) -> Option<f64>,
) -> Vec<(u32, u32, f64)> {
    let label = |x: u32| labels.get(x as usize).copied();
    // Each cluster's links, by the cluster's label.
    let mut clusters: HashMap<u32, Vec<(u32, u32, f64)>> = HashMap::new();
    for &(a, b, p) in links {
        if let (Some(la), Some(lb)) = (label(a), label(b))
            && la == lb
        {
            clusters.entry(la).or_default().push((a, b, p));
        }
    }
    let mut implied = Vec::new();
    for cluster_links in clusters.values() {
        let mut members: Vec<u32> = cluster_links.iter().flat_map(|&(a, b, _)| [a, b]).collect();
        members.sort_unstable();
        members.dedup();
        let k = members.len();
        if !(3..=MAX_IMPLYING_CLUSTER).contains(&k) {
            continue;
        }
        let local = |x: u32| members.binary_search(&x).unwrap_or(0);
        let mut neighbours: Vec<Vec<(usize, f64)>> = vec![Vec::new(); k];
        for &(a, b, p) in cluster_links {
            let (x, y) = (local(a), local(b));
            neighbours[x].push((y, p));
            neighbours[y].push((x, p));
        }
        // From each record, the best product to every other reachable at or above the
        // threshold (Dijkstra on products: a link is at most 1, so a product never grows along
        // a chain, and the search stops where products fall below the threshold).
        let mut best = vec![0.0f64; k];
        let mut linked = vec![false; k];
        let mut reached: Vec<usize> = Vec::new();
        let mut heap: BinaryHeap<(Product, usize)> = BinaryHeap::new();
        for source in 0..k {
            for &x in &reached {
                best[x] = 0.0;
            }
            reached.clear();
            for &(y, _) in &neighbours[source] {
                linked[y] = true;
            }
            best[source] = 1.0;
            heap.push((Product(1.0), source));
            while let Some((Product(product), x)) = heap.pop() {
                if product < best[x] {
                    continue;
                }
                reached.push(x);
                for &(y, p) in &neighbours[x] {
                    let through = product * p;
                    if through >= threshold && through > best[y] {
                        best[y] = through;
                        heap.push((Product(through), y));
                    }
                }
            }
            reached.sort_unstable();
            reached.dedup();
            for &target in reached.iter().filter(|&&t| t > source && !linked[t]) {
                let (a, b) = (members[source], members[target]);
                if score(a, b).is_some_and(|own| own < IMPLIED_VETO) {
                    continue;
                }
                implied.push((a, b, best[target]));
            }
            for &(y, _) in &neighbours[source] {
                linked[y] = false;
            }
        }
    }
    implied.sort_by_key(|&(a, b, _)| (a, b));
    implied
}

/// A product of probabilities ordered as a number (never NaN: products of probabilities).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Product(f64);

impl Eq for Product {}

impl PartialOrd for Product {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Product {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
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

    fn implied(
        links: &[(u32, u32, f64)],
        records: usize,
        threshold: f64,
        compared: &[(u32, u32, f64)],
    ) -> Vec<(u32, u32, f64)> {
        let labels = cluster_links(records, links.to_vec(), None, |_, _| None);
        let own = |a: u32, b: u32| compared.iter().find(|p| (p.0, p.1) == (a, b)).map(|p| p.2);
        implied_links(links, &labels, threshold, own)
    }

    #[test]
    fn chains_imply_pairs_scored_by_their_best_chain() {
        // 0~1~2~3 in a row, and 0~3 directly too weak to link.
        let links = [(0, 1, 0.99), (1, 2, 0.98), (2, 3, 0.97), (4, 5, 0.99)];
        let got = implied(&links, 6, 0.9, &[(0, 3, 0.3)]);
        let pairs: Vec<(u32, u32)> = got.iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(pairs, vec![(0, 2), (0, 3), (1, 3)]);
        assert!((got[0].2 - 0.99 * 0.98).abs() < 1e-12);
        assert!((got[1].2 - 0.99 * 0.98 * 0.97).abs() < 1e-12);
        // A longer chain whose product falls below the threshold implies nothing at its ends.
        let weak = [(0, 1, 0.95), (1, 2, 0.95), (2, 3, 0.95)];
        let pairs: Vec<(u32, u32)> = implied(&weak, 4, 0.9, &[]).iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(pairs, vec![(0, 2), (1, 3)]);
        // The best chain wins: 0-2 through 1 (0.5 * 0.99 < 0.9) or through 3 (0.99 * 0.99).
        let two_ways = [(0, 1, 0.5), (1, 2, 0.99), (0, 3, 0.99), (3, 2, 0.99)];
        let got = implied(&two_ways, 4, 0.4, &[]);
        let zero_two = got.iter().find(|p| (p.0, p.1) == (0, 2)).map(|p| p.2);
        assert!(zero_two.is_some_and(|p| (p - 0.99 * 0.99).abs() < 1e-12), "{got:?}");
    }

    #[test]
    fn a_clear_difference_or_a_large_cluster_implies_nothing() {
        let links = [(0, 1, 0.99), (1, 2, 0.99)];
        assert!(implied(&links, 3, 0.9, &[(0, 2, IMPLIED_VETO / 2.0)]).is_empty());
        assert_eq!(implied(&links, 3, 0.9, &[(0, 2, IMPLIED_VETO)]).len(), 1);
        // A chain of MAX_IMPLYING_CLUSTER + 1 records implies nothing; one record fewer does.
        let chain = |n: u32| -> Vec<(u32, u32, f64)> { (0..n - 1).map(|i| (i, i + 1, 0.9999)).collect() };
        let n = MAX_IMPLYING_CLUSTER as u32;
        assert!(implied(&chain(n + 1), n as usize + 1, 0.5, &[]).is_empty());
        assert!(!implied(&chain(n), n as usize, 0.5, &[]).is_empty());
        // Links across clusters kept apart by a minimum link imply nothing.
        let pairs = [(0, 1, 0.99), (1, 2, 0.95), (0, 2, 0.01)];
        let labels = cluster_links(3, pairs[..2].to_vec(), Some(0.5), |a, b| {
            pairs.iter().find(|p| (p.0, p.1) == (a, b)).map(|p| p.2)
        });
        assert!(implied_links(&pairs[..2], &labels, 0.9, |_, _| None).is_empty());
    }
}
