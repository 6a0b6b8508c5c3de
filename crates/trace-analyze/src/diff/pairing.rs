//! Which stages and which requests of two runs are compared with each other: stages by label,
//! requests by `request_id` (when their prompts agree), else by `prompt_hash`, else unpaired.

use std::collections::HashMap;
use std::hash::Hash;

use super::{Pairing, Pairs};
use crate::load::RunData;
use crate::{Error, Result};

pub(super) fn stage_pairs(a: &RunData, b: &RunData) -> Result<(Pairs, Vec<String>)> {
    let mut notes = Vec::new();
    let mut out = Vec::new();
    for (i, sa) in a.stages.iter().enumerate() {
        if let Some(j) = b.stages.iter().position(|sb| sb.label == sa.label) {
            out.push((i, j));
        }
    }
    if out.is_empty() {
        if a.stages.len() == 1 && b.stages.len() == 1 {
            notes.push(format!(
                "stage labels differ ('{}' vs '{}'); comparing the two single stages",
                a.stages[0].label, b.stages[0].label
            ));
            out.push((0, 0));
        } else {
            let labels = |r: &RunData| {
                r.stages
                    .iter()
                    .map(|s| s.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(Error::NotComparable {
                a: a.path.display().to_string(),
                b: b.path.display().to_string(),
                reason: format!(
                    "no common stages (A has [{}], B has [{}]); replay both at the same rates, or \
                     compare single-stage traces",
                    labels(a),
                    labels(b)
                ),
            });
        }
    }
    Ok((out, notes))
}

/// Index pairs (row in A's stage, row in B's stage) matched on `key`.
fn match_on<K: Eq + Hash + Clone>(ka: &[Option<K>], kb: &[Option<K>]) -> Vec<(usize, usize)> {
    let mut first: HashMap<K, usize> = HashMap::with_capacity(ka.len());
    for (i, k) in ka.iter().enumerate() {
        if let Some(k) = k {
            first.entry(k.clone()).or_insert(i);
        }
    }
    let mut used = vec![false; ka.len()];
    let mut out = Vec::new();
    for (j, k) in kb.iter().enumerate() {
        if let Some(&i) = k.as_ref().and_then(|k| first.get(k))
            && !used[i]
        {
            used[i] = true;
            out.push((i, j));
        }
    }
    out
}

pub(super) fn choose_pairing(
    a: &RunData,
    b: &RunData,
    stages: &[(usize, usize)],
) -> (Pairing, Vec<Vec<(usize, usize)>>) {
    let size: usize = stages
        .iter()
        .map(|&(i, j)| a.stages[i].rows.len().min(b.stages[j].rows.len()))
        .sum();
    let enough = |n: usize| size > 0 && n * 2 >= size;
    let by_id: Vec<Vec<(usize, usize)>> = stages
        .iter()
        .map(|&(i, j)| match_on(&a.stages[i].request_ids, &b.stages[j].request_ids))
        .collect();
    let n_id: usize = by_id.iter().map(Vec::len).sum();
    // Ids like "0", "1" collide across unrelated synthetic workloads: trust an id match only
    // when the prompts agree too (where both runs recorded a hash).
    let (mut both, mut agree) = (0usize, 0usize);
    for (k, &(i, j)) in stages.iter().enumerate() {
        for &(x, y) in &by_id[k] {
            if let (Some(ha), Some(hb)) =
                (a.stages[i].prompt_hashes[x], b.stages[j].prompt_hashes[y])
            {
                both += 1;
                agree += usize::from(ha == hb);
            }
        }
    }
    let hashes_agree = both == 0 || agree * 100 >= both * 95;
    if enough(n_id) && hashes_agree {
        return (
            Pairing {
                mode: "request_id",
                pairs: n_id,
                reason: format!(
                    "{n_id} requests share a request_id{}",
                    if both > 0 { " and prompt" } else { "" }
                ),
            },
            by_id,
        );
    }
    let by_hash: Vec<Vec<(usize, usize)>> = stages
        .iter()
        .map(|&(i, j)| match_on(&a.stages[i].prompt_hashes, &b.stages[j].prompt_hashes))
        .collect();
    let n_hash: usize = by_hash.iter().map(Vec::len).sum();
    if enough(n_hash) {
        return (
            Pairing {
                mode: "prompt_hash",
                pairs: n_hash,
                reason: format!(
                    "{n_hash} requests share a prompt_hash (request ids did not match)"
                ),
            },
            by_hash,
        );
    }
    let reason = if enough(n_id) {
        "request ids match but their prompts differ: the runs replayed different workloads"
            .to_string()
    } else {
        format!(
            "fewer than half the requests match by request_id ({n_id}) or prompt_hash ({n_hash}): \
             the runs did not replay the same workload; distributions are compared unpaired"
        )
    };
    (
        Pairing {
            mode: "unpaired",
            pairs: 0,
            reason,
        },
        vec![Vec::new(); stages.len()],
    )
}
